"""SecurityGroups: GRE only between stack members and from declared on-prem peers; PMTU ICMP; no SSH."""
from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.plan import OverlayPlan

GRE = "47"  # IP protocol number; security groups take it as a string protocol
# ICMP type 3 code 4 (fragmentation needed) and ICMPv6 type 2 (packet too big): path MTU
# discovery breaks without them, and GRE lowers the MTU. For ICMP rules AWS reads
# from_port as the type and to_port as the code.
ICMP_FRAG_NEEDED = {"protocol": "icmp", "from_port": 3, "to_port": 4}
ICMPV6_TOO_BIG = {"protocol": "icmpv6", "from_port": 2, "to_port": 0}


@dataclass
class SecurityGroupsArgs:
    plan: OverlayPlan
    vpc_id: pulumi.Input[str]
    vpc_ipv6_cidr: pulumi.Input[str] | None


class SecurityGroups(pulumi.ComponentResource):
    """`members` on every router and host; `onprem` on routers when on-prem peers exist."""

    def __init__(self, name: str, args: SecurityGroupsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("overlay:security:SecurityGroups", name, None, opts)
        plan = args.plan
        child = pulumi.ResourceOptions(parent=self)
        vpc4 = [str(plan.vpc_cidr)]
        vpc6 = [args.vpc_ipv6_cidr] if plan.ipv6 else []
        ingress = [
            {"description": "GRE between stack members", "protocol": GRE, "from_port": 0,
             "to_port": 0, "self": True},
            {"description": "fragmentation needed (PMTUD)", **ICMP_FRAG_NEEDED, "cidr_blocks": vpc4},
        ]
        if plan.ipv6:
            ingress.append({"description": "packet too big (PMTUD)", **ICMPV6_TOO_BIG,
                            "ipv6_cidr_blocks": vpc6})
        # Container traffic from the VPC reaches a router's ENI (the pools route there) or,
        # in static mode, a host's; security groups filter forwarded packets too. TCP, UDP
        # and ICMP only, so GRE stays limited to members.
        for proto, lo, hi in (("tcp", 0, 65535), ("udp", 0, 65535), ("icmp", -1, -1)):
            ingress.append({"description": f"container traffic from the VPC ({proto})",
                            "protocol": proto, "from_port": lo, "to_port": hi, "cidr_blocks": vpc4,
                            **({"ipv6_cidr_blocks": vpc6} if plan.ipv6 and proto != "icmp" else {})})
        if plan.ipv6:
            ingress.append({"description": "container traffic from the VPC (icmpv6)", "protocol": "icmpv6",
                            "from_port": -1, "to_port": -1, "ipv6_cidr_blocks": vpc6})
        egress = [{"description": "all outbound (SSM, S3, package mirrors, tunnels)", "protocol": "-1",
                   "from_port": 0, "to_port": 0, "cidr_blocks": ["0.0.0.0/0"],
                   **({"ipv6_cidr_blocks": ["::/0"]} if plan.ipv6 else {})}]
        self.members = aws.ec2.SecurityGroup(
            f"{name}-members", vpc_id=args.vpc_id,
            description=f"{plan.project} {plan.stack}: routers and docker hosts",
            ingress=ingress, egress=egress, tags={"Name": f"{plan.stack}-members"}, opts=child)

        self.onprem = None
        if plan.onprem:
            peers = [{"description": f"GRE from on-prem peer {o.name}", "protocol": GRE, "from_port": 0,
                      "to_port": 0, "cidr_blocks": [f"{o.address}/32"]} for o in plan.onprem]
            # Routers' on-prem tunnels cross the internet: a too-big signal may come from
            # any hop on the path, so this one ICMP type is open to the world.
            peers.append({"description": "fragmentation needed from the internet path (PMTUD)",
                          **ICMP_FRAG_NEEDED, "cidr_blocks": ["0.0.0.0/0"]})
            self.onprem = aws.ec2.SecurityGroup(
                f"{name}-onprem", vpc_id=args.vpc_id,
                description=f"{plan.project} {plan.stack}: routers' on-prem GRE peers",
                ingress=peers, egress=egress, tags={"Name": f"{plan.stack}-onprem"}, opts=child)
        self.register_outputs({"members_id": self.members.id,
                               "onprem_id": self.onprem.id if self.onprem else None})
