"""The lab underlay alone: subnets, VPC route tables, IGW with 1:1 NAT, internet, on-prem LAN."""

from __future__ import annotations

import dataclasses
import os
import subprocess

import pytest

from infra.plan import build_plan
from infra.stackfile import load_stack
from lab.topology import build
from lab.underlay import build_underlay, lab_namespaces, nat_ruleset, remove_namespaces, sh
from lab.netns import have_root_netns

pytestmark = [pytest.mark.root]


def ping(ns: str, dst: str) -> bool:
    return subprocess.run(["ip", "netns", "exec", ns, "ping", "-c1", "-W1", dst], capture_output=True).returncode == 0


@pytest.fixture
def underlay():
    if not have_root_netns():
        pytest.skip("needs root and network namespaces")
    # A stack name of our own, so a running `lab` is never touched.
    cfg = dataclasses.replace(load_stack("lab"), stack=f"u{os.getpid() % 10000}")
    plan = build_plan(cfg)
    topo = build(plan)
    try:
        build_underlay(plan, topo, 1500)
        yield plan, topo
    finally:
        remove_namespaces(cfg.stack)
        assert lab_namespaces(cfg.stack) == []


def test_underlay_paths(underlay):
    plan, topo = underlay
    native = topo.instance("native")
    r1, r2 = topo.instance("router-1"), topo.instance("router-2")
    h1 = topo.instance("host-1")
    site = topo.sites[0]
    # inside the VPC, across AZs and subnets
    assert ping(native.ns, str(r1.address)) and ping(h1.ns, str(r2.address))
    # on-prem reaches a router only by its EIP (1:1 NAT at the IGW), and the router
    # reaches on-prem with its EIP as the source
    assert ping(site.ns, str(r1.eip)) and ping(r2.ns, str(site.public))
    # a private subnet leaves through its AZ's NAT gateway (the IGW stand-in SNATs it to
    # the AZ's NAT EIP), as the program's NAT gateways do; the VPC-native instance too
    assert ping(h1.ns, str(site.public))
    assert ping(site.client_ns, str(site.router_lan_v4))
    # the VPC route tables send the pools to the AZ's router ENI
    for table, router_name in topo.az_tables:
        router = topo.instance(router_name)
        out = sh(topo.vpc_ns, "ip", "route", "show", "table", str(table))
        assert f"{plan.pools_v4[0]} via {router.address}" in out
        out6 = sh(topo.vpc_ns, "ip", "-6", "route", "show", "table", str(table))
        assert f"{plan.pools_v6[0]} via {router.address_v6}" in out6
    # the VPC is dual-stack: each subnet has its /64, instances an address in it
    assert native.address_v6 in native.segment.cidr_v6
    assert ping(native.ns, str(r2.address_v6)) and ping(h1.ns, str(r1.address_v6))


def test_nat_ruleset_names_every_eip():
    plan = build_plan(load_stack("lab"))
    text = nat_ruleset(build(plan))
    for inst in build(plan).instances:
        if inst.eip:
            assert f"ip daddr {inst.eip} dnat to {inst.address}" in text
            assert f"ip saddr {inst.address} snat to {inst.eip}" in text
    for seg in build(plan).segments:
        if seg.kind == "private":
            assert f"ip saddr {seg.cidr} snat to 203.0.113.{200 + seg.az_index}" in text
