"""Who may announce what, and which location wins, in real FRR: one router, two hosts with an ASN each.

The router runs its rendered config plus the per-host filters its agent renders from the
tunnels/<host> parameters (overlay_agent.tunnels.host_filters), exactly as on an instance.
Each host runs its rendered config; its "containers" are kernel routes of the agent's
protocol, with the agent's metrics (overlay_agent.wiring.route_metric).
"""

from __future__ import annotations

import json

import pytest

from infra.config import parse
from infra.plan import build_plan
from infra.render import PASSWORD_PLACEHOLDER, render_frr
from overlay_agent.wiring import STEADY_METRIC, route_metric
from lab import netns as nsutil
from tests.support.frrcheck import router_text_as_applied

pytestmark = [pytest.mark.root, pytest.mark.frr]

frr_mod = pytest.importorskip("lab.frr")
FRR = frr_mod.FRR
DAEMONS = ("zebra", "bgpd", "bfdd", "staticd")
PASSWORD = "s3cret-in-test"
T = 1_767_225_600  # 2026-01-01T00:00:00Z


def _plan():
    return build_plan(
        parse(
            {
                "region": "eu-west-1",
                "vpc": {"cidr": "10.40.0.0/16", "azs": ["lab-a"]},
                "routers": {"count": 1, "asn": 65000},
                "hosts": {"count": 2, "asnMode": "per-host", "asn": 4200000001, "blockPrefix": 24},
                "pools": {
                    "ipv4": ["10.99.0.0/16"],
                    "ipv6": ["fd10:99::/48"],
                    "sharedIpv4": ["10.99.255.0/24"],
                    "sharedIpv6": ["fd10:99:0:ffff::/64"],
                },
                "tunnels": {"ipv4": "169.254.64.0/20", "ipv6": "fd10:7e::/64", "mtu": 1472},
                "bgp": {"bfdInterval": 100},
            },
            "frrown",
        )
    )


def _router_text(plan) -> str:
    """The router's config as its agent applies it: the `frr` parameter plus its host filters."""
    return router_text_as_applied(plan, "router-1", PASSWORD)


def _route(ns: str, prefix: str, metric: int) -> None:
    family = "-6" if ":" in prefix else "-4"
    nsutil.run("ip", family, "route", "replace", prefix, "dev", "ctr0", "proto", "149", "metric", str(metric), ns=ns)


@pytest.fixture
def site(netns_factory):
    if not frr_mod.available():
        pytest.skip("FRR (zebra, bgpd, vtysh) not installed")
    plan = _plan()
    ns_r = netns_factory("rtr")
    nsutil.run("sysctl", "-q", "-w", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1", ns=ns_r)
    frrs, hosts = [], {}
    try:
        router = FRR(ns_r, "router", daemons=DAEMONS)
        for h in plan.hosts:
            p = next(p for p in plan.pairings if p.b.name == h.name)
            ns_h = netns_factory(h.name[-1] + "h")
            nsutil.veth(ns_r, p.ifname, ns_h, p.ifname)
            for ns, me in ((ns_r, p.a), (ns_h, p.b)):
                nsutil.run("ip", "addr", "add", f"{me.inner_v4}/31", "dev", p.ifname, ns=ns)
                nsutil.run("ip", "-6", "addr", "add", f"{me.inner_v6}/127", "dev", p.ifname, "nodad", ns=ns)
            nsutil.run("ip", "link", "add", "ctr0", "type", "veth", "peer", "name", "ctr0p", ns=ns_h)
            nsutil.run("ip", "link", "set", "ctr0", "up", ns=ns_h)
            nsutil.run("ip", "link", "set", "ctr0p", "up", ns=ns_h)
            hosts[h.name] = (ns_h, p)
        router.start(_router_text(plan))
        frrs.append(router)
        for name, (ns_h, _) in hosts.items():
            f = FRR(ns_h, name, daemons=DAEMONS)
            f.start(render_frr(plan, name).replace(PASSWORD_PLACEHOLDER, PASSWORD))
            frrs.append(f)
        yield plan, router, hosts
    finally:
        for f in reversed(frrs):
            f.stop()


def _paths(router, prefix: str) -> dict[str, dict]:
    """BGP paths for `prefix` by peer address."""
    family = "ipv6" if ":" in prefix else "ipv4"
    doc = router.vtysh_json(f"show bgp {family} unicast {prefix} json")
    return {p["peer"]["peerId"]: p for p in doc.get("paths", [])}


def _fib(router, prefix: str) -> set[str]:
    """The router's kernel next-hop interfaces for `prefix`."""
    family = "-6" if ":" in prefix else "-4"
    out = nsutil.run("ip", "-j", family, "route", "show", "exact", prefix, ns=router.netns).stdout
    routes = json.loads(out or "[]")
    return {nh.get("dev") for r in routes for nh in (r.get("nexthops") or [r])}


def test_router_takes_each_hosts_block_only_from_it_and_the_shared_range_from_all(site):
    plan, router, hosts = site
    h1, h2 = plan.hosts
    (ns1, p1), (ns2, p2) = hosts[h1.name], hosts[h2.name]
    peer1, peer2 = str(p1.b.inner_v4), str(p2.b.inner_v4)
    own1, own2 = str(h1.block_v4[5]), str(h2.block_v4[5])
    own1_6 = str(h1.block_v6[5])
    shared, shared6 = "10.99.255.7", "fd10:99:0:ffff::7"
    _route(ns1, f"{own1}/32", STEADY_METRIC)
    _route(ns1, f"{own1_6}/128", STEADY_METRIC)
    _route(ns2, f"{own2}/32", STEADY_METRIC)
    # A hijack: host-1 announces an address of host-2's block (its FRR passes any pool /32).
    _route(ns1, f"{own2}/32", 1)
    _route(ns1, f"{h2.block_v6[5]}/128", 1)
    # The shared range from both.
    _route(ns1, f"{shared}/32", STEADY_METRIC)
    _route(ns2, f"{shared}/32", STEADY_METRIC)
    _route(ns1, f"{shared6}/128", STEADY_METRIC)

    router.wait(
        lambda: (
            set(_paths(router, f"{shared}/32")) == {peer1, peer2}
            and _paths(router, f"{own1}/32")
            and _paths(router, f"{own2}/32")
            and _paths(router, f"{shared6}/128")
            and _paths(router, f"{own1_6}/128")
        ),
        timeout=60,
        what="routes learned",
    )
    assert set(_paths(router, f"{own1}/32")) == {peer1}
    # host-2's address only from host-2: host-1's announcement (with the better MED) is refused
    assert set(_paths(router, f"{own2}/32")) == {peer2}
    assert _fib(router, f"{own2}/32") == {p2.ifname}
    assert _paths(router, f"{h2.block_v6[5]}/128") == {}
    # what the router refused, it counts as received but not accepted (filtered by policy)
    adj = router.vtysh_json(f"show bgp neighbors {peer1} json")[peer1]
    assert adj["addressFamilyInfo"]["ipv4Unicast"]["acceptedPrefixCounter"] == 2  # own1, shared
    # anycast in the shared range: equal MED, both hosts, ECMP in the FIB
    assert _fib(router, f"{shared}/32") == {p1.ifname, p2.ifname}
    # the limit per host session is what a host may announce, warning only
    nb = router.vtysh_json(f"show bgp neighbors {peer1} json")[peer1]
    assert nb["addressFamilyInfo"]["ipv4Unicast"]["prefixAllowedMax"] == plan.host_limit(4)
    assert nb["addressFamilyInfo"]["ipv4Unicast"].get("prefixAllowedMaxWarning") is True


def test_newest_location_wins_across_host_asns_and_anycast_stays_ecmp(site):
    plan, router, hosts = site
    h1, h2 = plan.hosts
    (ns1, p1), (ns2, p2) = hosts[h1.name], hosts[h2.name]
    assert h1.asn != h2.asn
    moving, moving6 = "10.99.255.20", "fd10:99:0:ffff::20"
    # host-1's container is older, host-2's one second newer: host-2's MED is lower
    for prefix in (f"{moving}/32", f"{moving6}/128"):
        _route(ns1, prefix, route_metric(T, True))
    router.wait(
        lambda: _fib(router, f"{moving}/32") == {p1.ifname} and _fib(router, f"{moving6}/128") == {p1.ifname},
        timeout=60,
        what="the address at host-1",
    )
    for prefix in (f"{moving}/32", f"{moving6}/128"):
        _route(ns2, prefix, route_metric(T + 1, True))
    # both paths known, the newer one alone forwarded (no multipath across unequal MED)
    router.wait(
        lambda: _fib(router, f"{moving}/32") == {p2.ifname} and _fib(router, f"{moving6}/128") == {p2.ifname},
        timeout=30,
        what="the router on host-2 alone",
    )
    paths = _paths(router, f"{moving}/32")
    assert len(paths) == 2
    best = [p for p in paths.values() if p.get("bestpath", {}).get("overall")]
    assert [p["peer"]["peerId"] for p in best] == [str(p2.b.inner_v4)]
    assert not any(p.get("multipath") for p in paths.values() if p not in best)
    assert {p["metric"] for p in paths.values()} == {route_metric(T, True), route_metric(T + 1, True)}
    # both at the steady metric (anycast): ECMP across the two ASNs
    for prefix in (f"{moving}/32", f"{moving6}/128"):
        _route(ns1, prefix, STEADY_METRIC)
        _route(ns2, prefix, STEADY_METRIC)
        nsutil.run(
            "ip",
            "-6" if ":" in prefix else "-4",
            "route",
            "del",
            prefix,
            "proto",
            "149",
            "metric",
            str(route_metric(T, True)),
            ns=ns1,
        )
        nsutil.run(
            "ip",
            "-6" if ":" in prefix else "-4",
            "route",
            "del",
            prefix,
            "proto",
            "149",
            "metric",
            str(route_metric(T + 1, True)),
            ns=ns2,
        )
    router.wait(
        lambda: (
            _fib(router, f"{moving}/32") == {p1.ifname, p2.ifname}
            and _fib(router, f"{moving6}/128") == {p1.ifname, p2.ifname}
        ),
        timeout=30,
        what="ECMP",
    )


def test_router_text_with_host_filters_round_trips_through_frr_reload(site):
    """The agent compares with frr-reload at every resync: its text must show no difference once applied."""
    from tests.support import frrcheck

    if not frrcheck.have_frr_reload():
        pytest.skip("frr-reload.py (Debian frr-pythontools) not installed")
    plan, router, hosts = site
    delete, add = frrcheck.reload_diff(router.netns, router.vty_dir, router.dir, _router_text(plan))
    delete = [line for line in delete if not line.startswith("no hostname")]
    add = [line for line in add if not line.startswith("hostname ")]
    assert (delete, add) == ([], [])
