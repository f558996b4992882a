"""Rendered router and host configs in real FRR, two namespaces joined by a veth standing for the GRE tunnel."""

from __future__ import annotations

import contextlib
import ipaddress

import pytest

from infra.render import render_frr
from overlay_agent.frr import fill_password
from tests.support.frrcheck import TEST_ONPREM_PASSWORD, router_text_as_applied
from tests.support import frrcheck
from lab import netns as nsutil
from tests.support.render_plans import one_router_one_host

pytestmark = [pytest.mark.root, pytest.mark.frr]

frr_mod = pytest.importorskip("lab.frr")
FRR = frr_mod.FRR
DAEMONS = ("zebra", "bgpd", "bfdd", "staticd")
PASSWORD = "s3cret-in-test"
MAX_PREFIX = 5
PROTO = "149"  # the agent's route protocol (docs/contracts.md)


def _plan():
    # One router, one host, IPv6 on, a small max-prefix so the test can trip it.
    return one_router_one_host({"maxPrefix": MAX_PREFIX, "bfdInterval": 100})


@contextlib.contextmanager
def _pair(netns_factory, host_password: str = PASSWORD):
    """Router and host namespaces, tunnel addresses on a veth, FRR running the rendered configs."""
    if not frr_mod.available():
        pytest.skip("FRR (zebra, bgpd, vtysh) not installed")
    plan = _plan()
    p = plan.pairings[0]
    ns_r, ns_h = netns_factory("rtr"), netns_factory("hst")
    nsutil.veth(ns_r, p.ifname, ns_h, p.ifname)
    for ns, me in ((ns_r, p.a), (ns_h, p.b)):
        # As the cloud-config's sysctls do on an instance.
        nsutil.run("sysctl", "-q", "-w", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1", ns=ns)
        nsutil.run("ip", "addr", "add", f"{me.inner_v4}/31", "dev", p.ifname, ns=ns)
        nsutil.run("ip", "-6", "addr", "add", f"{me.inner_v6}/127", "dev", p.ifname, "nodad", ns=ns)
    # Containers live behind a veth on the host, as the agent wires them.
    nsutil.run("ip", "link", "add", "ctr0", "type", "veth", "peer", "name", "ctr0p", ns=ns_h)
    nsutil.run("ip", "link", "set", "ctr0", "up", ns=ns_h)
    nsutil.run("ip", "link", "set", "ctr0p", "up", ns=ns_h)
    router = FRR(ns_r, "router", daemons=DAEMONS)
    host = FRR(ns_h, "host", daemons=DAEMONS)
    try:
        router.start(router_text_as_applied(plan, p.a.name, PASSWORD))
        host.start(fill_password(render_frr(plan, p.b.name), host_password))
        yield plan, p, ns_h, router, host
    finally:
        host.stop()
        router.stop()


def _container_route(ns: str, prefix: str, metric: int | None = None) -> None:
    family = "-6" if ":" in prefix else "-4"
    nsutil.run(
        "ip",
        family,
        "route",
        "add",
        prefix,
        "dev",
        "ctr0",
        "proto",
        PROTO,
        *(("metric", str(metric)) if metric is not None else ()),
        ns=ns,
    )


def _established(frr, family: str) -> dict:
    peers = (frr.bgp_summary().get(family) or {}).get("peers") or {}
    return {addr: info for addr, info in peers.items() if info.get("state") == "Established"}


@pytest.fixture
def pair(netns_factory):
    with _pair(netns_factory) as made:
        yield made


def test_dynamic_neighbor_policy_and_max_prefix(pair):
    plan, p, ns_h, router, host = pair
    host_v4, host_v6 = str(p.b.inner_v4), str(p.b.inner_v6)

    # Both sessions come up, the router knowing the host only by its listen ranges.
    router.wait(
        lambda: host_v4 in _established(router, "ipv4Unicast") and host_v6 in _established(router, "ipv6Unicast"),
        timeout=60,
        what="both sessions up",
    )
    summary = router.bgp_summary()
    assert summary["ipv4Unicast"].get("dynamicPeers") == 1
    assert summary["ipv6Unicast"].get("dynamicPeers") == 1
    neighbor = router.vtysh_json(f"show bgp neighbors {host_v4} json")[host_v4]
    assert neighbor.get("peerGroup") == "HOSTS"
    assert ipaddress.ip_address(host_v4) in plan.routers[0].listen_v4

    # BFD runs on the sessions with the stack's profile.
    router.wait(
        lambda: any(
            peer.get("status") == "up" and peer.get("peer") in (host_v4, host_v6)
            for peer in router.vtysh_json("show bfd peers json")
        ),
        timeout=30,
        what="BFD peer up",
    )

    # A container /32 and /128 inside the pools are learned, each with its kernel route's
    # metric as MED (the agent's move preference, docs/agent.md "Moves").
    # zebra keeps the low 24 bits of a kernel route's priority as its metric (the top 8
    # are a distance), so the agent's metrics stay below 2^24.
    _container_route(ns_h, "10.99.0.5/32", 16_000_123)
    _container_route(ns_h, "fd10:99::5/128", 16_777_215)
    router.wait(
        lambda: "10.99.0.5/32" in router.bgp_routes(4) and "fd10:99::5/128" in router.bgp_routes(6),
        timeout=30,
        what="container routes learned",
    )
    assert router.has_route("10.99.0.5/32", "bgp")
    assert router.bgp_routes(4)["10.99.0.5/32"][0].get("metric") == 16_000_123
    path6 = router.bgp_routes(6)["fd10:99::5/128"][0]
    assert path6.get("metric") == 16_777_215, path6

    # The router holds the pool aggregate as a blackhole (unannounced addresses die here)
    # and answers hosts with it; the host accepts it (and no default route).
    router.wait(lambda: router.has_route("10.99.0.0/16", "bgp"), timeout=30, what="aggregate in zebra")
    agg = next(e for e in router.routes(4)["10.99.0.0/16"] if e.get("selected"))
    assert any(nh.get("unreachable") or nh.get("blackhole") or nh.get("reject") for nh in agg.get("nexthops", [])), agg
    host.wait(lambda: "10.99.0.0/16" in host.bgp_routes(4), timeout=30, what="aggregate at the host")
    assert "0.0.0.0/0" not in host.bgp_routes(4)

    # A misbehaving host: announce everything the kernel holds. The router's import policy
    # must still accept only the /32 inside the pool.
    _container_route(ns_h, "192.0.2.5/32")  # a /32 outside the pools
    _container_route(ns_h, "10.99.1.0/24")  # inside the pool, but not a single address
    _container_route(ns_h, "0.0.0.0/0")  # a default route
    host.apply("route-map CONTAINERS-V4 permit 20\n!\nroute-map ROUTERS-OUT permit 20\n!\n")
    bad = {"192.0.2.5/32", "10.99.1.0/24", "0.0.0.0/0"}

    def advertised() -> set:
        doc = host.vtysh_json(f"show bgp ipv4 unicast neighbors {p.a.inner_v4} advertised-routes json")
        return set((doc.get("advertisedRoutes") or {}).keys())

    host.wait(lambda: bad <= advertised(), timeout=30, what="host advertising the bad prefixes")
    # The host did send them; give the router a moment to process the update, then check.
    router.wait(lambda: _accepted(router, host_v4) >= 1, timeout=10, what="accepted count")
    learned = set(router.bgp_routes(4))
    assert "10.99.0.5/32" in learned
    assert not (bad & learned), bad & learned
    assert _accepted(router, host_v4) == 1

    # Max-prefix per host session is warning-only and sized from what the host may announce
    # (block + shared ranges): tests/frr/test_frr_ownership.py checks it.
    # The IPv6 session was not touched.
    assert host_v6 in _established(router, "ipv6Unicast")


@pytest.mark.skipif(not frrcheck.have_frr_reload(), reason="frr-reload.py (Debian frr-pythontools) not installed")
def test_rendered_configs_round_trip_through_frr_reload(pair):
    # The agent applies the `frr` parameter with frr-reload.py. Once applied, reloading the
    # same text must change nothing: no line FRR would undo (e.g. `neighbor X bfd`, which
    # FRR keeps apart from `bfd profile`), no default FRR hides from its running config.
    plan, p, ns_h, router, host = pair
    texts = {
        p.a.name: router_text_as_applied(plan, p.a.name, PASSWORD),
        p.b.name: fill_password(render_frr(plan, p.b.name), PASSWORD),
    }
    for frr, ns, name in ((router, router.netns, p.a.name), (host, ns_h, p.b.name)):
        text = texts[name]
        delete, add = frrcheck.reload_diff(ns, frr.vty_dir, frr.dir, text)
        # `hostname` pushed through `vtysh -f` (how the test runner loads config) does not
        # reach vtysh's own running config; on an instance `vtysh -b` sets it at boot.
        delete = [line for line in delete if not line.startswith("no hostname")]
        add = [line for line in add if not line.startswith("hostname ")]
        assert (delete, add) == ([], []), f"{name}: frr-reload would change: delete {delete}, add {add}"


def test_wrong_password_never_establishes(netns_factory):
    # TCP MD5 is in force: the router's listen socket refuses a host with another password.
    with _pair(netns_factory, host_password="not-the-stack-password") as (plan, p, ns_h, router, host):
        with pytest.raises(frr_mod.FRRError):
            router.wait(lambda: bool(_established(router, "ipv4Unicast")), timeout=12, what="session")
        state = host.vtysh_json("show bgp ipv4 unicast summary json")["peers"][str(p.a.inner_v4)]["state"]
        assert state != "Established"


def _accepted(router, peer: str) -> int:
    peers = (router.bgp_summary().get("ipv4Unicast") or {}).get("peers") or {}
    return int((peers.get(peer) or {}).get("pfxRcd", 0))


@pytest.mark.skipif(not frrcheck.have_frr_reload(), reason="frr-reload.py (Debian frr-pythontools) not installed")
@pytest.mark.parametrize(
    "stack, instance",
    [
        ("gen-large", "router-1"),
        ("gen-large", "host-500"),
        ("gen-v4only", "router-1"),
        ("gen-v4only", "host-1"),
        ("prod-euw1", "router-2"),
    ],
)
def test_more_configs_round_trip_through_frr_reload(netns, stack, instance):
    # Graceful restart on, on-prem peers, specifics, per-host ASNs, IPv4 only: each shape
    # applied to a lone FRR, then diffed against itself.
    from tests.support.render_plans import all_plans

    if not frr_mod.available():
        pytest.skip("FRR (zebra, bgpd, vtysh) not installed")
    plan = all_plans()[stack]
    nsutil.run("sysctl", "-q", "-w", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1", ns=netns)
    # Both passwords, as the router's agent fills them (the on-prem one: review F10).
    text = fill_password(render_frr(plan, instance), PASSWORD, onprem_password=TEST_ONPREM_PASSWORD)
    frr = FRR(netns, instance, daemons=DAEMONS)
    try:
        frr.start(text)
        delete, add = frrcheck.reload_diff(netns, frr.vty_dir, frr.dir, text)
    finally:
        frr.stop()
    delete = [line for line in delete if not line.startswith("no hostname")]
    add = [line for line in add if not line.startswith("hostname ")]
    assert (delete, add) == ([], []), f"{stack} {instance}: delete {delete}, add {add}"
