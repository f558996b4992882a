"""Host, router and the on-prem side, each from its rendered config, in three namespaces: export and import policy."""
from __future__ import annotations

import pytest

from infra.render import render_frr, render_onprem_frr
from overlay_agent.frr import fill_password
from tests.support.frrcheck import router_text_as_applied
from tests.support import netns as nsutil
from tests.support.render_plans import one_router_one_host

pytestmark = [pytest.mark.root, pytest.mark.frr]

frr_mod = pytest.importorskip("lab.frr")
FRR = frr_mod.FRR
DAEMONS = ("zebra", "bgpd", "bfdd", "staticd")
PASSWORD = "s3cret-in-test"
DC_NET = "192.168.0.0/16"
# What a careless datacenter might also announce; the routers must drop all of it.
DC_BAD = ("0.0.0.0/0", "10.40.1.0/24", "10.99.7.0/24")  # default, inside the VPC, inside a pool


def _plan(announce: str):
    return one_router_one_host({"announce": announce},
                               onprem=[{"name": "dc1", "address": "198.51.100.1", "asn": 64600}])


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
    dc_text = render_onprem_frr(plan, "dc1", {"router-1": "192.0.2.1"}, networks_v4=(DC_NET,))
    careless = "".join(f"ip route {n} blackhole\n" for n in (DC_NET,) + DC_BAD)
    careless += "route-map OVERLAY-OUT permit 20\nexit\n"
    careless += "router bgp 64600\n address-family ipv4 unicast\n"
    careless += "".join(f"  network {n}\n" for n in DC_BAD) + " exit-address-family\nexit\n"

    frrs = []
    try:
        for ns, name, text in ((ns_r, "router", router_text_as_applied(plan, "router-1", PASSWORD)),
                               (ns_h, "host", fill_password(render_frr(plan, "host-1"), PASSWORD)),
                               (ns_d, "dc", fill_password(dc_text + careless, PASSWORD))):
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

        dc.wait(lambda: {DC_NET, *DC_BAD} <= sent(), timeout=30, what="datacenter advertising")
        router.wait(lambda: DC_NET in router.bgp_routes(4), timeout=30, what=f"{DC_NET} at the router")
        learned = router.bgp_routes(4)
        for bad in DC_BAD:
            # The pool aggregate the router makes itself is fine; nothing of the datacenter's.
            paths = learned.get(bad) or []
            assert not any(str(to_dc.b.inner_v4) in str(path) for path in paths), (bad, paths)
        assert "0.0.0.0/0" not in learned

        # The host learns the datacenter's network (and the pool), never a default route.
        host.wait(lambda: DC_NET in host.bgp_routes(4), timeout=30, what=f"{DC_NET} at the host")
        assert host.has_route(DC_NET, "bgp")
        assert "0.0.0.0/0" not in host.bgp_routes(4)
        assert "10.40.1.0/24" not in host.bgp_routes(4)
    finally:
        for f in reversed(frrs):
            f.stop()
