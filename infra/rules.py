"""Security group rules and VPC route targets as plain data: the program creates them, verify checks them; pure."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from infra.plan import OverlayPlan

GRE = "47"  # IP protocol number; security groups take it as a string protocol
# ICMP type 3 code 4 (fragmentation needed) and ICMPv6 type 2 (packet too big): path MTU
# discovery breaks without them, and GRE lowers the MTU. For ICMP rules AWS reads
# from_port as the type and to_port as the code.
FRAG_NEEDED = ("icmp", 3, 4)
TOO_BIG = ("icmpv6", 2, 0)
WORLD4 = "0.0.0.0/0"
# EC2's API reference (CreateSecurityGroup, GroupDescription; botocore's ec2 service-2.json
# carries the same text): "Constraints: Up to 255 characters in length. Valid characters:
# a-z, A-Z, 0-9, spaces, and ._-:/()#,@[]+=&;{}!$*". Anything else (an apostrophe, say) is
# refused with InvalidParameterValue at `pulumi up`; the provider checks only the length.
EC2_DESCRIPTION = re.compile(r"[a-zA-Z0-9. _\-:/()#,@\[\]+=&;{}!$*]{0,255}")
# Rule descriptions: the same for CIDR sources (IpRange, Ipv6Range), but without "&" for a
# rule naming a security group or prefix list (UserIdGroupPair, PrefixListId in the same
# reference). An inline rule may hold both kinds, so rules get the narrower set.
EC2_RULE_DESCRIPTION = re.compile(r"[a-zA-Z0-9. _\-:/()#,@\[\]+=;{}!$*]{0,255}")


@dataclass(frozen=True)
class Rule:
    description: str
    protocol: str
    from_port: int
    to_port: int
    cidrs_v4: tuple[str, ...] = ()
    cidrs_v6: tuple[str, ...] = ()
    self_: bool = False


def members_ingress(plan: OverlayPlan, vpc_ipv6: str | None) -> list[Rule]:
    """On every router and host."""
    vpc4 = (str(plan.vpc_cidr),)
    vpc6 = (vpc_ipv6,) if plan.ipv6 and vpc_ipv6 else ()
    rules = [
        Rule("GRE between stack members", GRE, 0, 0, self_=True),
        Rule("fragmentation needed (PMTUD)", *FRAG_NEEDED, cidrs_v4=vpc4),
    ]
    if vpc6:
        rules.append(Rule("packet too big (PMTUD)", *TOO_BIG, cidrs_v6=vpc6))
    # Container traffic from the VPC reaches a router's ENI (the pools route there) or, in
    # static mode, a host's; security groups filter forwarded packets too. TCP, UDP and
    # ICMP only, so GRE stays limited to members.
    if plan.vpc_failover == "routeServer":
        # BGP and BFD reach the routers' ENIs un-tunnelled from the route server endpoints
        # only (the route-server group): the VPC-wide container rules leave those ports out,
        # since security groups are a union of allows. A container port 179, 3784 or 4784
        # is then not reachable from the VPC (on-prem and other containers still reach it).
        rules += [
            Rule(f"container traffic from the VPC (tcp {lo}-{hi})", "tcp", lo, hi, vpc4, vpc6)
            for lo, hi in _except(BGP_PORT)
        ]
        rules += [
            Rule(f"container traffic from the VPC (udp {lo}-{hi})", "udp", lo, hi, vpc4, vpc6)
            for lo, hi in _except(*BFD_PORTS)
        ]
    else:
        rules += [
            Rule("container traffic from the VPC (tcp)", "tcp", 0, 65535, vpc4, vpc6),
            Rule("container traffic from the VPC (udp)", "udp", 0, 65535, vpc4, vpc6),
        ]
    rules.append(Rule("container traffic from the VPC (icmp)", "icmp", -1, -1, vpc4))
    if vpc6:
        rules.append(Rule("container traffic from the VPC (icmpv6)", "icmpv6", -1, -1, cidrs_v6=vpc6))
    return rules


def _except(*ports: int) -> list[tuple[int, int]]:
    """0-65535 as ranges that leave out `ports`."""
    out, lo = [], 0
    for p in sorted(ports):
        if p > lo:
            out.append((lo, p - 1))
        lo = p + 1
    return out + [(lo, 65535)]


def onprem_ingress(plan: OverlayPlan) -> list[Rule]:
    """On routers, when the stack has on-prem peers: their GRE, and PMTU signals from the path."""
    if not plan.onprem:
        return []
    rules = [Rule(f"GRE from on-prem peer {o.name}", GRE, 0, 0, cidrs_v4=(f"{o.address}/32",)) for o in plan.onprem]
    # The on-prem tunnels cross the internet: a too-big signal may come from any hop on the
    # path, so this one ICMP type is open to the world.
    rules.append(Rule("fragmentation needed from the internet path (PMTUD)", *FRAG_NEEDED, cidrs_v4=(WORLD4,)))
    return rules


def normalize(rules: list[Rule]) -> set[tuple[Any, ...]]:
    """Comparable form, the way EC2 reports rules: one entry per (protocol, ports), sources
    merged; ports dropped for protocols that have none (EC2 ignores them for GRE)."""
    merged: dict[tuple[Any, ...], tuple[set[str], set[str], bool]] = {}
    for r in rules:
        ports = (r.from_port, r.to_port) if r.protocol in ("tcp", "udp", "icmp", "icmpv6") else (None, None)
        v4, v6, self_ = merged.setdefault((r.protocol, *ports), (set(), set(), False))
        merged[(r.protocol, *ports)] = (v4 | set(r.cidrs_v4), v6 | set(r.cidrs_v6), self_ or r.self_)
    return {(k[0], k[1], k[2], tuple(sorted(v4)), tuple(sorted(v6)), s) for k, (v4, v6, s) in merged.items()}


def router_for_az(plan: OverlayPlan, az: str) -> str:
    """The router an AZ's route tables send the pools to: the first router in that AZ, so
    traffic stays in the zone; an AZ without one uses router (AZ index mod routers)."""
    local = [r for r in plan.routers if r.az == az]
    if local:
        return local[0].name
    return plan.routers[plan.azs.index(az) % len(plan.routers)].name


# -- VPC failover (docs/vpc-failover.md) ------------------------------------------------
BGP_PORT = 179
# BFD control packets: UDP 3784 single-hop (RFC 5881), 4784 multi-hop (RFC 5883). The
# route server endpoint sits in the router's own subnet, so single-hop is what runs;
# 4784 is admitted too because AWS does not document which one its endpoints use.
BFD_PORTS = (3784, 4784)
# MED step between routers' announcements to the route server: router j announces the
# pools with MED 100 * j and its ASN prepended j times, so router-1 is preferred, then
# router-2, and so on. Both attributes point the same way; AWS's example selects by MED.
MED_STEP = 100


@dataclass(frozen=True)
class Announcement:
    """What one router tells the route server about the pools.

    `med`/`prepend` once its hosts are back (its agent says so); `hold_med`/`hold_prepend`
    until then (the rendered default): worse than every router's planned announcement on
    both MED and AS-path length, in the same order among held routers (docs/vpc-failover.md,
    "Coming back").
    """

    router: str
    az: str
    med: int
    prepend: int
    hold_med: int = 0
    hold_prepend: int = 0


def route_server_announcements(plan: OverlayPlan) -> list[Announcement]:
    """Preference order of the routers for the route server, most preferred first.

    A route server has ONE FIB and writes the same best route into every table it
    propagates to, so a per-AZ preference cannot be expressed: every table prefers the
    same router, and the next takes over when it goes.
    """
    n = len(plan.routers)
    return [
        Announcement(r.name, r.az, MED_STEP * r.index, r.index, MED_STEP * (r.index + n), r.index + n)
        for r in plan.routers
    ]


def failover_targets(plan: OverlayPlan) -> list[tuple[str, str, list[str]]]:
    """(AZ, preferred router, routers that take over in order) for each AZ's tables."""
    if plan.vpc_failover == "routeServer":
        order = [a.router for a in route_server_announcements(plan)]
        return [(az, order[0], order[1:]) for az in plan.azs]
    return [(az, router_for_az(plan, az), []) for az in plan.azs]


def route_server_ingress(endpoint_ips: list[str]) -> list[Rule]:
    """On routers, routeServer mode: BGP and BFD from the route server endpoints only."""
    cidrs = tuple(sorted(f"{ip}/32" for ip in endpoint_ips))
    rules = [Rule("BGP from the VPC route server endpoints", "tcp", BGP_PORT, BGP_PORT, cidrs)]
    rules += [Rule(f"BFD from the VPC route server endpoints (udp {p})", "udp", p, p, cidrs) for p in BFD_PORTS]
    return rules
