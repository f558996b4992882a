"""Host, router and the on-prem side, each from its rendered config, in three namespaces: export and import policy."""

from __future__ import annotations

import pytest

from infra.render import render_onprem_frr
from overlay_agent.frr import fill_password
from tests.support.frrcheck import TEST_ONPREM_PASSWORD, TEST_VPC_V6, host_text_as_applied, router_text_as_applied
from lab import netns as nsutil
from tests.support.render_plans import one_router_one_host

pytestmark = [pytest.mark.root, pytest.mark.frr]

frr_mod = pytest.importorskip("lab.frr")
FRR = frr_mod.FRR
DAEMONS = ("zebra", "bgpd", "bfdd", "staticd")
PASSWORD = "s3cret-in-test"
DC_NET = "192.168.0.0/16"
# What a careless datacenter might also announce; the routers must drop all of it.
DC_BAD = (
    "0.0.0.0/0",
    "10.40.1.0/24",
    "10.99.7.0/24",  # default, inside the VPC, inside a pool
    # review F13: IMDS and the link-local range, "this network", loopback, multicast, class E
    "169.254.169.254/32",
    "169.254.0.0/16",
    "0.0.0.0/8",
    "127.0.0.0/8",
    "127.0.0.1/32",
    "224.0.0.0/4",
    "239.1.2.0/24",
    "240.0.0.0/4",
    "255.255.255.255/32",
)
DC_NET6 = "fd10:250::/48"
# fe80::/10 is denied too, but bgpd neither originates a link-local prefix ("Malformed
# prefix (link-local address)") nor accepts one in an UPDATE, so no FRR datacenter can
# send it; the deny is for the datacenter routers that can (tests/unit check the entry).
DC_BAD6 = (
    "::/0",
    "::1/128",
    "fd00:ec2::/32",
    "fd00:ec2::254/128",
    "ff00::/8",
    "ff02::/16",
    TEST_VPC_V6,
    "2600:1f18:4a3:6c01::/64",
)  # ... the VPC's own block and a /64 of it


def _plan(announce: str):
    return one_router_one_host(
        {"announce": announce}, onprem=[{"name": "dc1", "address": "198.51.100.1", "asn": 64600}]
    )


def _link(ns_a, ns_b, p):
    nsutil.veth(ns_a, p.ifname, ns_b, p.ifname)
    for ns, me in ((ns_a, p.a), (ns_b, p.b)):
        nsutil.run("ip", "addr", "add", f"{me.inner_v4}/31", "dev", p.ifname, ns=ns)
        nsutil.run("ip", "-6", "addr", "add", f"{me.inner_v6}/127", "dev", p.ifname, "nodad", ns=ns)


@pytest.mark.parametrize("announce", ["aggregates", "specifics"])
def test_onprem_export_and_import(netns_factory, announce):
    if not frr_mod.available():
        pytest.skip("FRR (zebra, bgpd, vtysh) not installed")
    plan = _plan(announce)
    to_host = next(p for p in plan.pairings if p.kind == "host")
    to_dc = next(p for p in plan.pairings if p.kind == "onprem")
    ns_r, ns_h, ns_d = netns_factory("rtr"), netns_factory("hst"), netns_factory("dc")
    _link(ns_r, ns_h, to_host)
    _link(ns_r, ns_d, to_dc)
    nsutil.run("ip", "link", "add", "ctr0", "type", "veth", "peer", "name", "ctr0p", ns=ns_h)
    nsutil.run("ip", "link", "set", "ctr0", "up", ns=ns_h)
    nsutil.run("ip", "route", "add", "10.99.0.5/32", "dev", "ctr0", "proto", "149", ns=ns_h)

    # The datacenter side as rendered (announcing DC_NET), plus the prefixes it should not send.
    dc_text = render_onprem_frr(plan, "dc1", {"router-1": "192.0.2.1"}, networks_v4=(DC_NET,), networks_v6=(DC_NET6,))
    careless = "".join(f"ip route {n} blackhole\n" for n in (DC_NET,) + DC_BAD)
    careless += "".join(f"ipv6 route {n} blackhole\n" for n in (DC_NET6,) + DC_BAD6)
    careless += "route-map OVERLAY-OUT permit 20\nexit\nroute-map OVERLAY6-OUT permit 20\nexit\n"
    careless += "router bgp 64600\n address-family ipv4 unicast\n"
    careless += "".join(f"  network {n}\n" for n in DC_BAD) + " exit-address-family\n"
    careless += " address-family ipv6 unicast\n"
    careless += "".join(f"  network {n}\n" for n in DC_BAD6) + " exit-address-family\nexit\n"

    frrs = []
    try:
        for ns, name, text in (
            (ns_r, "router", router_text_as_applied(plan, "router-1", PASSWORD)),
            (ns_h, "host", host_text_as_applied(plan, "host-1", PASSWORD)),
            # The datacenter knows only its own sessions' password (review
            # F10), never the one the docker hosts hold.
            (ns_d, "dc", fill_password(dc_text + careless, None, onprem_password=TEST_ONPREM_PASSWORD)),
        ):
            f = FRR(ns, name, daemons=DAEMONS)
            frrs.append(f)
            f.start(text)
        router, host, dc = frrs

        # The datacenter hears about the container per the stack's export mode.
        want = "10.99.0.0/16" if announce == "aggregates" else "10.99.0.5/32"
        other = "10.99.0.5/32" if announce == "aggregates" else "10.99.0.0/16"
        dc.wait(lambda: want in dc.bgp_routes(4), timeout=60, what=f"{want} at the datacenter")
        assert other not in dc.bgp_routes(4)

        # The router takes the datacenter's network and nothing else it sent.
        def sent() -> set:
            doc = dc.vtysh_json(f"show bgp ipv4 unicast neighbors {to_dc.a.inner_v4} advertised-routes json")
            return set((doc.get("advertisedRoutes") or {}).keys())

        def sent6() -> set:
            doc = dc.vtysh_json(f"show bgp ipv6 unicast neighbors {to_dc.a.inner_v6} advertised-routes json")
            return set((doc.get("advertisedRoutes") or {}).keys())

        # Every bad prefix is really offered to the router (else the drops below prove nothing).
        dc.wait(lambda: {DC_NET, *DC_BAD} <= sent(), timeout=30, what=f"datacenter advertising (has {sent()})")
        dc.wait(lambda: {DC_NET6, *DC_BAD6} <= sent6(), timeout=30, what=f"datacenter advertising IPv6 (has {sent6()})")
        router.wait(lambda: DC_NET in router.bgp_routes(4), timeout=30, what=f"{DC_NET} at the router")
        router.wait(lambda: DC_NET6 in router.bgp_routes(6), timeout=30, what=f"{DC_NET6} at the router")
        learned = router.bgp_routes(4)
        for bad in DC_BAD:
            # The pool aggregate the router makes itself is fine; nothing of the datacenter's.
            paths = learned.get(bad) or []
            assert not any(str(to_dc.b.inner_v4) in str(path) for path in paths), (bad, paths)
        assert "0.0.0.0/0" not in learned
        learned6 = router.bgp_routes(6)
        for bad in DC_BAD6:
            paths = learned6.get(bad) or []
            assert not any(str(to_dc.b.inner_v6) in str(path) for path in paths), (bad, paths)

        # The host learns the datacenter's network (and the pool), never a default route.
        host.wait(lambda: DC_NET in host.bgp_routes(4), timeout=30, what=f"{DC_NET} at the host")
        assert host.has_route(DC_NET, "bgp")
        assert "0.0.0.0/0" not in host.bgp_routes(4)
        assert "10.40.1.0/24" not in host.bgp_routes(4)
        host.wait(lambda: DC_NET6 in host.bgp_routes(6), timeout=30, what=f"{DC_NET6} at the host")
        assert not set(DC_BAD) & set(host.bgp_routes(4))
        assert not set(DC_BAD6) & set(host.bgp_routes(6))
    finally:
        for f in reversed(frrs):
            f.stop()
