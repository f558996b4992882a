"""SecurityGroups: GRE only between stack members and from declared on-prem peers; PMTU ICMP; no SSH."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import pulumi
import pulumi_aws as aws

from infra.plan import OverlayPlan
from infra.rules import Rule, members_ingress, onprem_ingress, route_server_ingress


@dataclass
class SecurityGroupsArgs:
    plan: OverlayPlan
    vpc_id: pulumi.Input[str]
    vpc_ipv6_cidr: pulumi.Input[str] | None


def _ingress(r: Rule) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "description": r.description,
        "protocol": r.protocol,
        "from_port": r.from_port,
        "to_port": r.to_port,
    }
    if r.cidrs_v4:
        rule["cidr_blocks"] = list(r.cidrs_v4)
    if r.cidrs_v6:
        rule["ipv6_cidr_blocks"] = list(r.cidrs_v6)
    if r.self_:
        rule["self"] = True
    return rule


class SecurityGroups(pulumi.ComponentResource):
    """`members` on every router and host; `onprem` on routers when on-prem peers exist;
    `route-server` on routers in routeServer mode."""

    def __init__(self, name: str, args: SecurityGroupsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("overlay:security:SecurityGroups", name, None, opts)
        self.sg_name, self.args = name, args
        plan = args.plan
        child = pulumi.ResourceOptions(parent=self)
        ingress: pulumi.Input[list[dict[str, Any]]] = [_ingress(r) for r in members_ingress(plan, None)]
        if plan.ipv6:
            # The VPC's IPv6 block is known only once AWS assigns it.
            ingress = pulumi.Output.from_input(args.vpc_ipv6_cidr).apply(
                lambda v6: [_ingress(r) for r in members_ingress(plan, v6)]
            )
        egress = [
            {
                "description": "all outbound (SSM, S3, package mirrors, tunnels)",
                "protocol": "-1",
                "from_port": 0,
                "to_port": 0,
                "cidr_blocks": ["0.0.0.0/0"],
                **({"ipv6_cidr_blocks": ["::/0"]} if plan.ipv6 else {}),
            }
        ]
        self.members = aws.ec2.SecurityGroup(
            f"{name}-members",
            vpc_id=args.vpc_id,
            description=f"{plan.project} {plan.stack}: routers and docker hosts",
            ingress=ingress,
            egress=egress,
            tags={"Name": f"{plan.stack}-members"},
            opts=child,
        )

        self.onprem = None
        if plan.onprem:
            peers = [_ingress(r) for r in onprem_ingress(plan)]
            self.onprem = aws.ec2.SecurityGroup(
                f"{name}-onprem",
                vpc_id=args.vpc_id,
                description=f"{plan.project} {plan.stack}: on-prem GRE peers of the routers",
                ingress=peers,
                egress=egress,
                tags={"Name": f"{plan.stack}-onprem"},
                opts=child,
            )
        self.register_outputs({"members_id": self.members.id, "onprem_id": self.onprem.id if self.onprem else None})

    def route_server_group(self, endpoint_ips: Sequence[pulumi.Input[str]]) -> aws.ec2.SecurityGroup:
        """BGP and BFD from the route server endpoints only (their addresses come from AWS)."""
        plan = self.args.plan
        ingress = pulumi.Output.all(*endpoint_ips).apply(
            lambda ips: [_ingress(r) for r in route_server_ingress(list(ips))]
        )
        egress = [
            {
                "description": "BGP and BFD replies to the route server endpoints",
                "protocol": "-1",
                "from_port": 0,
                "to_port": 0,
                "cidr_blocks": [str(plan.vpc_cidr)],
            }
        ]
        self.route_server = aws.ec2.SecurityGroup(
            f"{self.sg_name}-route-server",
            vpc_id=self.args.vpc_id,
            description=f"{plan.project} {plan.stack}: BGP and BFD from the VPC route server endpoints",
            ingress=ingress,
            egress=egress,
            tags={"Name": f"{plan.stack}-route-server"},
            opts=pulumi.ResourceOptions(parent=self),
        )
        return self.route_server
