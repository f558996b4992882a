"""Security group rules and VPC route targets as plain data: the program creates them, verify checks them; pure."""
from __future__ import annotations

import re
from dataclasses import dataclass

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
    rules += [
        Rule("container traffic from the VPC (tcp)", "tcp", 0, 65535, vpc4, vpc6),
        Rule("container traffic from the VPC (udp)", "udp", 0, 65535, vpc4, vpc6),
        Rule("container traffic from the VPC (icmp)", "icmp", -1, -1, vpc4),
    ]
    if vpc6:
        rules.append(Rule("container traffic from the VPC (icmpv6)", "icmpv6", -1, -1, cidrs_v6=vpc6))
    return rules


def onprem_ingress(plan: OverlayPlan) -> list[Rule]:
    """On routers, when the stack has on-prem peers: their GRE, and PMTU signals from the path."""
    if not plan.onprem:
        return []
    rules = [Rule(f"GRE from on-prem peer {o.name}", GRE, 0, 0, cidrs_v4=(f"{o.address}/32",))
             for o in plan.onprem]
    # The on-prem tunnels cross the internet: a too-big signal may come from any hop on the
    # path, so this one ICMP type is open to the world.
    rules.append(Rule("fragmentation needed from the internet path (PMTUD)", *FRAG_NEEDED,
                      cidrs_v4=(WORLD4,)))
    return rules


def normalize(rules: list[Rule]) -> set[tuple]:
    """Comparable form, the way EC2 reports rules: one entry per (protocol, ports), sources
    merged; ports dropped for protocols that have none (EC2 ignores them for GRE)."""
    merged: dict[tuple, tuple[set, set, bool]] = {}
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
