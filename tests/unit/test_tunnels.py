"""Tunnel reconciler: parsing, per-tunnel rejection, links/addresses/pins against in-memory fakes (both backends)."""

from __future__ import annotations

import ipaddress

import pytest

from overlay_agent.gre.base import LinkSpec
from overlay_agent.gre.kernel import ALIAS, GreLink, KernelBackend
from overlay_agent.tunnels import (
    IFF_LOWER_UP,
    IFF_UP,
    LinkState,
    Pin,
    Route,
    TunnelReconciler,
    parse_tunnel,
    parse_tunnels,
    underlay_hop,
)
from tests.support.fakes import POOLS, FakeBackend, FakeNetlink, N
from tests.support.fakes import tunnel_doc as doc


@pytest.fixture
def world():
    nl = FakeNetlink()
    be = FakeBackend(nl)
    return nl, be, TunnelReconciler(be, nl, proto=149, pools=POOLS)


def tunnels(**raw):
    return parse_tunnels({f"tunnels/{k}": v for k, v in raw.items()})


# -- parsing ---------------------------------------------------------------------------------


def test_parse_contract_example():
    t = parse_tunnel("tunnels/router-1", doc())
    assert t.link == LinkSpec("gre-1", "10.40.0.10", "10.40.128.10", 1, 64, 1472)
    assert str(t.inner4) == "169.254.64.1/31" and str(t.remote4) == "169.254.64.0"
    assert str(t.inner6) == "fd10:7e::1/127" and t.peer_asn == 65000


def test_ipv6_may_be_null():
    t = parse_tunnel("tunnels/router-1", doc(inner_ipv6=None))
    assert t.inner6 is None and t.addresses() == {ipaddress.ip_interface("169.254.64.1/31")}


@pytest.mark.parametrize(
    "over, words",
    [
        ({"key": "five"}, ["key", "'five'"]),
        ({"remote": "10.40.999.1"}, ["remote", "10.40.999.1", "not an IPv4 address"]),
        ({"name": "a-very-long-tunnel-name"}, ["name", "1-15 printable ASCII characters"]),
        ({"mtu": 10}, ["mtu", "10"]),
        ({"inner_ipv4": {"local": "169.254.64.1", "remote": "169.254.64.0", "prefixlen": 30}}, ["prefixlen", "31"]),
        ({"inner_ipv4": {"local": "169.254.64.1", "remote": "169.254.64.7", "prefixlen": 31}}, ["169.254.64.7"]),
        ({"inner_ipv6": {"local": "10.0.0.1", "remote": "10.0.0.0", "prefixlen": 127}}, ["inner_ipv6", "IPv6"]),
        ({"schema": 2}, ["schema: 2 is not 1"]),
        ({"kind": "vpn"}, ["kind", "'vpn'"]),
    ],
)
def test_malformed_one_line_naming_parameter_value_reason(over, words):
    good, errors = tunnels(**{"router-1": doc(**over), "router-2": doc(name="gre-129", key=129, remote="10.40.144.10")})
    assert list(good) == ["gre-129"]
    msg = errors["tunnels/router-1"]
    assert "\n" not in msg and msg.startswith("tunnels/router-1: ")
    for w in words:
        assert w in msg


def test_not_json():
    good, errors = tunnels(**{"router-1": "{nope"})
    assert not good and "not JSON" in errors["tunnels/router-1"]


def test_duplicate_name_and_triple_rejected_later_parameter():
    good, errors = tunnels(a=doc(), b=doc(key=7), c=doc(name="gre-9"))
    assert list(good) == ["gre-1"]
    assert "already used by tunnels/a" in errors["tunnels/b"]
    assert "could not be told apart" in errors["tunnels/c"]


# -- reconcile ---------------------------------------------------------------------------------


def test_creates_link_addresses_up_and_pin(world):
    nl, be, rec = world
    good, errors = tunnels(**{"router-1": doc()})
    report = rec.apply(good, errors)
    idx = nl.links["gre-1"].index
    assert be.links["gre-1"].key == 1
    assert nl.addrs[idx] == {ipaddress.ip_interface("169.254.64.1/31"), ipaddress.ip_interface("fd10:7e::1/127")}
    assert nl.links["gre-1"].up
    pin = [r for r in nl.routes if r.dst == N("10.40.128.10/32")]
    assert pin == [Route(N("10.40.128.10/32"), 2, "10.40.0.1", 149)]
    assert [t.state for t in report.tunnels] == ["up"]


def test_second_pass_changes_nothing(world):
    nl, be, rec = world
    good, _ = tunnels(**{"router-1": doc()})
    rec.apply(good)
    nl.writes.clear()
    be.calls.clear()
    report = rec.apply(good)
    assert report.changes == 0 and nl.writes == [] and be.calls == []


def test_pin_ignores_routes_through_tunnels_and_bgp(world):
    nl, be, rec = world
    good, _ = tunnels(**{"router-1": doc(), "router-2": doc(name="gre-129", key=129, remote="10.40.144.10")})
    rec.apply(good)
    # BGP now learns a more specific route to router-2's underlay through router-1's tunnel.
    gre1 = nl.links["gre-1"].index
    nl.routes.append(Route(N("10.40.144.0/24"), gre1, "169.254.64.0", 186))
    rec.apply(good)
    pin = [r for r in nl.routes if r.dst == N("10.40.144.10/32")]
    assert pin == [Route(N("10.40.144.10/32"), 2, "10.40.0.1", 149)]


def test_connected_remote_pinned_without_gateway():
    routes = [Route(N("10.40.0.0/20"), 2, None, 2), Route(N("0.0.0.0/0"), 2, "10.40.0.1", 3)]
    assert underlay_hop(ipaddress.ip_address("10.40.0.20"), routes, set(), 149, POOLS) == Pin(2, None)


def test_pin_follows_underlay_change(world):
    nl, be, rec = world
    good, _ = tunnels(**{"router-1": doc()})
    rec.apply(good)
    nl.links["eth1"] = LinkState("eth1", 3, IFF_UP | IFF_LOWER_UP, 1500)
    nl.routes = [r for r in nl.routes if r.dst != N("0.0.0.0/0")] + [Route(N("0.0.0.0/0"), 3, "10.41.0.1", 3)]
    rec.apply(good)
    assert [r for r in nl.routes if r.dst == N("10.40.128.10/32")] == [Route(N("10.40.128.10/32"), 3, "10.41.0.1", 149)]


def test_removed_tunnel_goes_with_its_pin_and_container_routes_untouched(world):
    nl, be, rec = world
    nl.routes.append(Route(N("10.99.0.5/32"), 2, None, 149))  # a container route (in the pools): not ours
    both, _ = tunnels(**{"router-1": doc(), "router-2": doc(name="gre-129", key=129, remote="10.40.144.10")})
    rec.apply(both)
    one, _ = tunnels(**{"router-1": doc()})
    rec.apply(one)
    assert set(be.links) == {"gre-1"} and "gre-129" not in nl.links
    assert not [r for r in nl.routes if r.dst == N("10.40.144.10/32")]
    assert [r for r in nl.routes if r.dst == N("10.99.0.5/32")]


def test_stale_inner_address_replaced(world):
    nl, be, rec = world
    good, _ = tunnels(**{"router-1": doc()})
    rec.apply(good)
    moved = doc(inner_ipv4={"local": "169.254.70.1", "remote": "169.254.70.0", "prefixlen": 31})
    good2, _ = tunnels(**{"router-1": moved})
    rec.apply(good2)
    idx = nl.links["gre-1"].index
    assert ipaddress.ip_interface("169.254.64.1/31") not in nl.addrs[idx]
    assert ipaddress.ip_interface("169.254.70.1/31") in nl.addrs[idx]


def test_backend_failure_is_that_tunnels_error_only(world):
    nl, be, rec = world
    be.fail.add("gre-1")
    good, errors = tunnels(
        **{
            "router-1": doc(),
            "router-2": doc(name="gre-129", key=129, remote="10.40.144.10"),
            "router-3": doc(name="gre-2", key="x"),
        }
    )
    report = rec.apply(good, errors)
    by = {t.name: t for t in report.tunnels}
    assert by["gre-1"].state == "error" and "tunnels/router-1" in by["gre-1"].error
    assert by["gre-129"].state == "up"
    assert "tunnels/router-3" in report.rejected


def test_no_underlay_route_reported(world):
    nl, be, rec = world
    nl.routes = [r for r in nl.routes if r.dst != N("0.0.0.0/0")]
    good, _ = tunnels(**{"router-1": doc()})
    report = rec.apply(good)
    assert report.tunnels[0].state == "error" and "no underlay route to remote 10.40.128.10" in report.tunnels[0].error


# -- the kernel backend through the same reconciler (fake netlink shim) ----------------------


class FakeGreNetlink:
    def __init__(self, kernel: FakeNetlink):
        self.kernel = kernel
        self.gre: dict[str, GreLink] = {}
        self.requests: list[tuple] = []

    def gre_links(self):
        return [g for g in self.gre.values() if g.name in self.kernel.links]

    def link_exists(self, name):
        return name in self.kernel.links

    def gre_add(self, spec, alias):
        self.requests.append(("add", spec.name))
        self.kernel.ensure_link(spec.name, spec.mtu)
        self.gre[spec.name] = GreLink(
            spec.name,
            self.kernel.links[spec.name].index,
            alias,
            spec.local,
            spec.remote,
            spec.key,
            spec.key,
            spec.ttl,
            spec.mtu,
        )

    def gre_change(self, index, spec):
        self.requests.append(("change", spec.name))
        self.gre[spec.name] = GreLink(
            spec.name, index, ALIAS, spec.local, spec.remote, spec.key, spec.key, spec.ttl, spec.mtu
        )

    def link_del(self, name):
        self.requests.append(("del", name))
        self.gre.pop(name, None)
        self.kernel.remove_link(name)


def test_kernel_backend_same_reconcile():
    nl = FakeNetlink()
    gre = FakeGreNetlink(nl)
    # gre0 (ip_gre's fallback device) and someone else's tunnel: never ours.
    nl.ensure_link("gre0", 1476)
    gre.gre["gre0"] = GreLink("gre0", nl.links["gre0"].index, None, None, None, None, None, 0, 1476)
    rec = TunnelReconciler(KernelBackend(gre), nl, proto=149, pools=POOLS)
    good, _ = tunnels(**{"router-1": doc(), "router-2": doc(name="gre-129", key=129, remote="10.40.144.10")})
    report = rec.apply(good)
    assert {t.state for t in report.tunnels} == {"up"}
    assert gre.requests == [("add", "gre-1"), ("add", "gre-129")]
    gre.requests.clear()
    changed, _ = tunnels(**{"router-1": doc(ttl=32)})
    rec.apply(changed)
    assert gre.requests == [("del", "gre-129"), ("change", "gre-1")]
    assert "gre0" in nl.links and gre.gre["gre-1"].ttl == 32


def test_kernel_backend_refuses_foreign_name():
    nl = FakeNetlink()
    gre = FakeGreNetlink(nl)
    nl.ensure_link("gre-1", 1500)  # a veth someone named gre-1
    rec = TunnelReconciler(KernelBackend(gre), nl, proto=149, pools=POOLS)
    good, _ = tunnels(**{"router-1": doc()})
    report = rec.apply(good)
    assert report.tunnels[0].state == "error" and "not ours" in report.tunnels[0].error
    assert gre.requests == []
