"""The route-server gate (overlay_agent.rsgate) and how the pairing sync applies it (docs/vpc-failover.md, "Coming back").

Decision logic against fakes; the mechanism (FRR swapping the route-map, the lab's route
server following) is shown with real FRR by tests/lab/test_vpc_failover.py.
"""

from __future__ import annotations

import json

import pytest

from overlay_agent.frr import ROUTE_SERVER_MARKER, Session
from overlay_agent.pairing_status import table
from overlay_agent.rsgate import RouteServerGate, planned_peers
from overlay_agent.tunnels import parse_tunnels
from tests.support.fakes import TUNNEL_BASE, pairing_world

HOSTS = ("169.254.64.1", "fd10:7e::1", "169.254.64.3", "fd10:7e::3")


def up(peer, *, pfx=1, uptime_s=10.0, state="Established"):
    afi = "ipv6Unicast" if ":" in peer else "ipv4Unicast"
    return Session(peer, afi, state, 65100, int(uptime_s * 1000), pfx, 1)


def test_held_until_every_planned_host_session_is_up_with_its_routes():
    g = RouteServerGate()
    assert not g.evaluate(0.0, HOSTS, [])
    assert not g.evaluate(1.0, HOSTS, [up(p) for p in HOSTS[:3]])
    assert "waiting for 1 host session(s): fd10:7e::3" in g.reason
    # Established but nothing received yet, up for less than SETTLE: not back.
    assert not g.evaluate(2.0, HOSTS, [*map(up, HOSTS[:3]), up(HOSTS[3], pfx=0, uptime_s=0.5)])
    # ... a host without containers counts once it has been up SETTLE seconds.
    assert g.evaluate(3.0, HOSTS, [*map(up, HOSTS[:3]), up(HOSTS[3], pfx=0, uptime_s=g.settle)])
    assert g.reason == "all 4 host session(s) up" and g.changes == 1
    # Other peers (the route server, on-prem) do not count; a session not Established does.
    assert not g.evaluate(4.0, HOSTS, [*map(up, HOSTS[:3]), up(HOSTS[3], state="Active"), up("10.40.128.5")])
    assert g.changes == 2


def test_one_dead_host_holds_a_router_only_for_the_timeout():
    g = RouteServerGate(hold_timeout=60.0)
    alive = [up(p) for p in HOSTS[:2]]
    assert not g.evaluate(0.0, HOSTS, alive)
    assert not g.evaluate(59.0, HOSTS, alive)
    assert g.evaluate(60.0, HOSTS, alive)
    assert g.reason == "2 host session(s) down > 60 s, not waited for"
    # The excused host comes back and goes again: a new wait, bounded the same way.
    assert g.evaluate(70.0, HOSTS, [up(p) for p in HOSTS])
    assert not g.evaluate(71.0, HOSTS, alive)
    assert g.evaluate(131.0, HOSTS, alive)


def test_a_stall_closes_the_gate_until_bfd_has_judged_the_sessions():
    g = RouteServerGate(settle=3.0)
    assert g.evaluate(0.0, HOSTS, [up(p) for p in HOSTS])
    # Resumed after a stall: bgpd still lists every session as it was.
    g.stalled(100.0, 2.5)
    assert not g.preferred and g.reason.startswith("stalled 2.5 s")
    assert not g.evaluate(101.0, HOSTS, [up(p) for p in HOSTS])
    # After SETTLE, what FRR says counts again (here: BFD took host-1's sessions down).
    assert not g.evaluate(103.0, HOSTS, [up(HOSTS[2]), up(HOSTS[3])])
    assert g.evaluate(104.0, HOSTS, [up(p) for p in HOSTS])


def test_unreadable_sessions_hold_and_no_hosts_planned_is_open():
    g = RouteServerGate()
    assert not g.evaluate(0.0, HOSTS, None) and g.reason == "FRR's sessions unreadable"
    assert RouteServerGate().evaluate(0.0, [], [])


def test_planned_peers_are_the_host_tunnels_inner_addresses():
    host = json.dumps(
        dict(
            TUNNEL_BASE,
            peer="host-2",
            inner_ipv4={"local": "169.254.64.2", "remote": "169.254.64.3", "prefixlen": 31},
            inner_ipv6={"local": "fd10:7e::2", "remote": "fd10:7e::3", "prefixlen": 127},
        )
    )
    onprem = json.dumps(dict(TUNNEL_BASE, name="gre-1025", key=1025, peer="dc1", kind="onprem", remote="198.51.100.1"))
    good, rejected = parse_tunnels({"tunnels/host-2": host, "tunnels/dc1": onprem})
    assert not rejected
    assert planned_peers(good.values()) == {"169.254.64.3", "fd10:7e::3"}


# -- the pairing sync applies it ----------------------------------------------------------

RS_FRR = f"""router bgp 65000
 neighbor ROUTE-SERVER peer-group
 {ROUTE_SERVER_MARKER}
 address-family ipv4 unicast
  neighbor ROUTE-SERVER route-map RS-HOLD-OUT out
 exit-address-family
 address-family ipv6 unicast
  neighbor ROUTE-SERVER route-map RS6-HOLD-OUT out
 exit-address-family
"""
PEERS = ("169.254.64.0", "fd10:7e::")  # the fake tunnel's remote inner addresses


@pytest.fixture
def router(tmp_path):
    sync, src, be, frr, tmp = pairing_world(tmp_path)
    src.frr = RS_FRR
    src.route_server = json.dumps({"schema": 1, "asn": 64512, "endpoints": ["10.40.128.5"]})
    return sync, src, be, frr


def test_router_holds_then_announces_its_plan_then_holds_again(router):
    sync, src, be, frr = router
    sync.start()
    frr.bgp_sessions = []
    assert sync.step(now=0.0)
    assert "  neighbor ROUTE-SERVER route-map RS-HOLD-OUT out" in frr.running
    assert " neighbor 10.40.128.5 peer-group ROUTE-SERVER" in frr.running
    assert sync.pairing.status()["route_server"]["preferred"] is False
    assert sync.pairing.metrics.route_server_preferred._value.get() == 0
    diffs = frr.diffs
    # The hosts' sessions come up with their routes: one reload, no diff around it.
    frr.bgp_sessions = [up(p) for p in PEERS]
    assert sync.step(now=1.0)
    assert {"  neighbor ROUTE-SERVER route-map RS-OUT out", "  neighbor ROUTE-SERVER route-map RS6-OUT out"} <= (
        frr.running
    )
    assert not any("HOLD-OUT out" in ln for ln in frr.running)
    assert frr.diffs == diffs and sync.pairing.status()["route_server"]["preferred"] is True
    assert "route server: planned announcement (all 2 host session(s) up)" in table(sync.pairing.status())
    assert sync.pairing.metrics.route_server_preferred._value.get() == 1
    assert not sync.step(now=2.0)  # nothing changed: nothing applied
    # A host's session drops: held again.
    frr.bgp_sessions = [up(PEERS[1])]
    assert sync.step(now=3.0)
    assert "  neighbor ROUTE-SERVER route-map RS-HOLD-OUT out" in frr.running
    assert frr.reloads == 3


def test_holding_goes_to_frr_before_the_tunnels(router):
    # After a reboot bgpd runs the last written config (planned announcement): the held
    # text must be in place before a tunnel lets the first host session come up.
    sync, src, be, frr = router
    order = []
    reload, put = frr.reload, be.put
    frr.reload = lambda text, previous=None: (order.append("frr"), reload(text, previous))[1]
    be.put = lambda spec: (order.append("tunnel"), put(spec))[1]
    sync.start()
    sync.step(now=0.0)
    assert order == ["frr", "tunnel"]


def test_bgpd_down_holds_and_a_stalled_loop_holds_at_once(router):
    sync, src, be, frr = router
    sync.start()
    frr.bgp_sessions = [up(p) for p in PEERS]
    sync.step(now=0.0)
    assert sync.pairing.gate.preferred
    sync.pairing.gate.stalled(5.0, 2.0)
    sync.pairing.dirty = True
    assert sync.step(now=5.1)
    assert "  neighbor ROUTE-SERVER route-map RS-HOLD-OUT out" in frr.running
    frr.bgp_sessions = None
    sync.step(now=20.0)
    assert not sync.pairing.gate.preferred and sync.pairing.gate.reason == "FRR's sessions unreadable"


def test_hosts_and_static_routers_have_no_gate(tmp_path):
    sync, src, be, frr, tmp = pairing_world(tmp_path)
    sync.start()
    frr.bgp_sessions = None  # never asked
    sync.step(now=0.0)
    assert sync.pairing.gate is None and "route_server" not in sync.pairing.status()
