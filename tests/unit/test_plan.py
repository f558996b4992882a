"""Plan properties: no overlaps, inside pools, unique inner addresses, stable under growth, scale."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infra.config import AWS_RESERVED_LINK_LOCAL, parse
from infra.plan import build_plan
from infra.plan.report import plan_data
from infra.stackfile import list_stacks, load_stack
from tests.support.configs import plan_for, raw_config


def check_invariants(plan) -> None:
    cfg_pools4, cfg_pools6 = plan.pools_v4, plan.pools_v6
    # instance addresses: unique, inside their subnet, subnet inside the VPC, clear of
    # the addresses AWS reserves in every subnet (first four, last one)
    ips = [i.private_ip for i in plan.instances]
    assert len(set(ips)) == len(ips)
    for inst in plan.instances:
        assert inst.private_ip in inst.subnet and inst.subnet.subnet_of(plan.vpc_cidr)
        offset = int(inst.private_ip) - int(inst.subnet.network_address)
        assert 4 <= offset < inst.subnet.num_addresses - 1
    # container blocks: disjoint, inside a pool
    blocks4 = [h.block_v4 for h in plan.hosts]
    assert len(set(blocks4)) == len(blocks4)
    assert all(any(b.subnet_of(p) for p in cfg_pools4) for b in blocks4)
    _disjoint(blocks4)
    if plan.ipv6:
        blocks6 = [h.block_v6 for h in plan.hosts]
        assert all(any(b.subnet_of(p) for p in cfg_pools6) for b in blocks6)
        _disjoint(blocks6)
    # pairings: unique inner nets, keys and per-instance link names; inside the tunnel
    # pool; never in AWS-reserved link-local space; router side inside its listen range
    nets4 = [p.inner_net_v4 for p in plan.pairings]
    assert len(set(nets4)) == len(nets4)
    keys = [p.key for p in plan.pairings]
    assert len(set(keys)) == len(keys) and min(keys, default=1) >= 1 and max(keys, default=1) < 2**32
    for p in plan.pairings:
        assert p.inner_net_v4.subnet_of(plan.tunnel_v4) and p.inner_net_v4.prefixlen == 31
        assert {p.a.inner_v4, p.b.inner_v4} == set(p.inner_net_v4)
        assert not any(p.inner_net_v4.overlaps(r) for r in AWS_RESERVED_LINK_LOCAL)
        assert len(p.ifname) <= 15
        if p.kind == "host":
            router = plan.router(p.a.name)
            assert p.b.inner_v4 in router.listen_v4
            if plan.ipv6:
                assert p.b.inner_v6 in router.listen_v6
        if plan.ipv6:
            assert p.inner_net_v6.subnet_of(plan.tunnel_v6) and p.inner_net_v6.prefixlen == 127
    if plan.ipv6:
        nets6 = [p.inner_net_v6 for p in plan.pairings]
        assert len(set(nets6)) == len(nets6)
    # every host pairs with every router; every router with every on-prem peer
    assert len(plan.pairings) == len(plan.routers) * (len(plan.hosts) + len(plan.onprem))
    # the tunnel pool and the container pools stay outside the VPC
    assert not plan.tunnel_v4.overlaps(plan.vpc_cidr)
    assert not any(p.overlaps(plan.vpc_cidr) for p in cfg_pools4)


def _disjoint(nets) -> None:
    ordered = sorted(nets, key=lambda n: (int(n.network_address), n.prefixlen))
    for a, b in zip(ordered, ordered[1:]):
        assert int(a.broadcast_address) < int(b.network_address), (a, b)


def subset(small, big) -> None:
    """Everything `small` allocates, `big` allocates identically."""
    ds, db = plan_data(small), plan_data(big)
    for section in ("routers", "hosts", "onprem", "subnets"):
        bigs = {(i.get("name") or i["cidr"]): i for i in db[section]}
        for item in ds[section]:
            assert bigs[item.get("name") or item["cidr"]] == item
    bigp = {p["id"]: p for p in db["pairings"]}
    for p in ds["pairings"]:
        assert bigp[p["id"]] == p


sizes = st.tuples(
    st.integers(1, 8), st.integers(1, 60), st.integers(1, 4), st.integers(0, 3), st.booleans(), st.booleans()
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes)
def test_invariants(size):
    routers, hosts, n_az, onprem, ipv6, per_host = size
    check_invariants(plan_for(routers=routers, hosts=hosts, n_az=n_az, onprem=onprem, ipv6=ipv6, per_host_asn=per_host))


@settings(max_examples=40, deadline=None)
@given(sizes, st.integers(1, 5), st.integers(0, 2))
def test_stable_under_growth(size, more_hosts, more_routers):
    routers, hosts, n_az, onprem, ipv6, per_host = size
    more_routers = min(more_routers, 8 - routers)
    small = plan_for(routers=routers, hosts=hosts, n_az=n_az, onprem=onprem, ipv6=ipv6, per_host_asn=per_host)
    grown = plan_for(
        routers=routers + more_routers,
        hosts=hosts + more_hosts,
        n_az=n_az,
        onprem=onprem,
        ipv6=ipv6,
        per_host_asn=per_host,
    )
    subset(small, grown)


def test_removing_last_host_frees_only_its_own():
    big = plan_for(routers=2, hosts=7, n_az=3, onprem=2)
    small = plan_for(routers=2, hosts=6, n_az=3, onprem=2)
    subset(small, big)
    gone = {p.id for p in big.pairings} - {p.id for p in small.pairings}
    assert gone == {"router-1~host-7", "router-2~host-7"}
    assert [h.name for h in big.hosts if h not in small.hosts] == ["host-7"]


def test_deterministic():
    a = plan_data(plan_for(routers=3, hosts=20, n_az=3, onprem=2))
    b = plan_data(plan_for(routers=3, hosts=20, n_az=3, onprem=2))
    assert a == b


def test_scale_990_hosts_4_routers():
    # About the most SSM's defaults allow with 4 routers: 9,917 Standard parameters of
    # 10,000, and 994 instances polling every 30 s (33 requests/s of 40).
    raw = raw_config(routers=4, hosts=990, n_az=3, onprem=2, max_routers=4)
    raw["hosts"]["blockPrefix"] = 24
    raw["pools"]["ipv4"] = ["10.96.0.0/14"]
    raw["agent"] = {"pollInterval": 30}
    plan = build_plan(parse(raw, "big"))
    assert len(plan.hosts) == 990 and len(plan.pairings) == 4 * 992
    check_invariants(plan)


def test_stack_files_satisfy_invariants():
    for stack in list_stacks():
        check_invariants(build_plan(load_stack(stack)))


def test_known_allocation_is_pinned():
    """The lab's allocation is a contract with running instances: pin a few values."""
    plan = build_plan(load_stack("lab"))
    h1 = plan.host("host-1")
    assert (str(h1.private_ip), str(h1.block_v4), str(h1.block_v6)) == ("10.40.0.10", "10.99.0.0/24", "fd10:99::/112")
    p = next(p for p in plan.pairings if p.id == "router-2~host-1")
    assert (p.key, str(p.inner_net_v4), str(p.a.inner_v4), str(p.b.inner_v4)) == (
        129,
        "169.254.65.0/31",
        "169.254.65.0",
        "169.254.65.1",
    )
    assert plan.router("router-1").private_ip == ipaddress.IPv4Address("10.40.128.10")


def test_growth_of_stack_file_is_stable():
    cfg = load_stack("prod-euw1")
    grown = build_plan(dataclasses.replace(cfg, host_count=cfg.host_count + 1))
    subset(build_plan(cfg), grown)


@pytest.mark.parametrize("stack", list_stacks())
def test_fixed_band_is_what_config_allows_and_holds_every_instance(stack):
    # Review F15: the reserved band, the config's per-subnet limit and the instances agree.
    from infra.config import fixed_band_capacity

    plan = build_plan(load_stack(stack))
    for s in plan.subnets:
        size = sum(c.num_addresses for c in s.reserved)
        assert size == fixed_band_capacity(s.cidr.prefixlen)
        assert min(c.network_address for c in s.reserved) == s.cidr.network_address + 10
        assert max(c.broadcast_address for c in s.reserved) < s.cidr.broadcast_address
        if s.cidr.num_addresses >= 64:  # the upper half stays AWS's
            assert max(c.broadcast_address for c in s.reserved) < s.cidr.network_address + s.cidr.num_addresses // 2
        if s.kind == "public":
            assert s.nat_ip == s.cidr.network_address + 5
    for inst in plan.instances:
        subnet = next(s for s in plan.subnets if s.cidr == inst.subnet)
        assert any(inst.private_ip in c for c in subnet.reserved)
