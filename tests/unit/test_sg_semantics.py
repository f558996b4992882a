"""Security-group semantics that matter for failover and egress, evaluated on infra/rules.py's rules.

EC2 security groups are per ENI, a union of allow rules, and stateful: a packet is admitted
when a rule allows it or when it belongs to a flow the same ENI already saw (its outbound
half, or the inbound half a rule admitted). A reply arriving at an ENI that never saw the
flow is a new inbound packet and needs a rule (review F8). This model is small on purpose:
protocol, ports and source CIDRs, as the rules are written.
"""

from __future__ import annotations

import dataclasses
import ipaddress

from infra.plan import build_plan
from infra.rules import members_ingress, onprem_ingress, route_server_ingress
from infra.stackfile import load_stack

VPC6 = "2600:1f18:4a3:6c00::/56"


def admits(rules, proto: str, src: str, port: int | None = None) -> bool:
    """Would a new inbound packet (no state on this ENI) be admitted by any rule?"""
    addr = ipaddress.ip_address(src)
    for r in rules:
        if r.protocol not in (proto, "-1"):
            continue
        if proto in ("tcp", "udp") and not (r.from_port <= (port or 0) <= r.to_port):
            continue
        if any(addr in ipaddress.ip_network(c) for c in r.cidrs_v4 + r.cidrs_v6 if ":" not in c or addr.version == 6):
            return True
    return False


class Eni:
    """One ENI's security groups plus its connection tracking."""

    def __init__(self, rules):
        self.rules, self.flows = rules, set()

    def send(self, proto, src, dst, sport, dport):
        self.flows.add((proto, src, dst, sport, dport))

    def receive(self, proto, src, dst, sport, dport) -> bool:
        if (proto, dst, src, dport, sport) in self.flows:  # the reply half of a flow it saw
            return True
        return admits(self.rules, proto, src, dport)


def plans():
    prod = build_plan(load_stack("prod-euw1"))
    return prod, build_plan(dataclasses.replace(load_stack("prod-euw1"), vpc_failover="static"))


def router_rules(plan, endpoints=("10.20.128.37",)):
    rules = members_ingress(plan, VPC6) + onprem_ingress(plan)
    if plan.vpc_failover == "routeServer":
        rules += route_server_ingress(list(endpoints))
    return rules


def test_reply_at_an_eni_that_never_saw_the_flow_is_dropped_F8():
    """Container -> internet leaving with its own address: the NAT gateway's reply comes back
    by the pool route to the router ENI, which saw nothing; no rule admits an internet source."""
    prod, _ = plans()
    router = Eni(router_rules(prod))
    assert not router.receive("tcp", "93.184.215.14", "10.96.0.20", 443, 40000)


def test_host_snat_makes_the_reply_arrive_where_the_flow_left():
    """Egress SNATed on the host (docs/egress): the flow leaves and returns through the host's ENI."""
    prod, _ = plans()
    host = Eni(members_ingress(prod, VPC6))
    host_ip = str(prod.hosts[0].private_ip)
    host.send("tcp", host_ip, "93.184.215.14", 40000, 443)
    assert host.receive("tcp", "93.184.215.14", host_ip, 443, 40000)
    # ... and nothing else from the internet gets in on the strength of that flow.
    assert not host.receive("tcp", "93.184.215.14", host_ip, 443, 40001)
    assert not host.receive("tcp", "198.18.0.1", host_ip, 443, 40000)


def test_bgp_and_bfd_reach_a_router_only_from_the_route_server_endpoints():
    prod, static = plans()
    rules = router_rules(prod, endpoints=("10.20.128.37",))
    assert admits(rules, "tcp", "10.20.128.37", 179)
    assert admits(rules, "udp", "10.20.128.37", 3784) and admits(rules, "udp", "10.20.128.37", 4784)
    for src in ("10.20.0.10", "10.20.129.5"):  # a host, another VPC address
        assert not admits(rules, "tcp", src, 179)
        assert not admits(rules, "udp", src, 3784) and not admits(rules, "udp", src, 4784)
    # Container traffic from the VPC still passes on every other port.
    assert admits(rules, "tcp", "10.20.0.200", 178) and admits(rules, "tcp", "10.20.0.200", 180)
    assert admits(rules, "udp", "10.20.0.200", 53)
    # Static failover: BGP never arrives un-tunnelled, the VPC-wide rule stays whole.
    assert admits(router_rules(static), "tcp", "10.20.0.200", 179)


def test_no_rule_opens_a_router_to_the_internet_but_the_pmtu_signal():
    prod, _ = plans()
    rules = router_rules(prod)
    for proto, port in (("tcp", 22), ("tcp", 443), ("udp", 53), ("tcp", 179), ("udp", 3784)):
        assert not admits(rules, proto, "93.184.215.14", port)
    assert [r.description for r in rules if "0.0.0.0/0" in r.cidrs_v4] == [
        "fragmentation needed from the internet path (PMTUD)"
    ]
