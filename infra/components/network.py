"""Network: the dual-stack VPC, its subnets per AZ, gateways, route tables and the S3 endpoint."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.plan import OverlayPlan, nth_subnet


@dataclass
class NetworkArgs:
    plan: OverlayPlan


def _ipv6_subnet(vpc_block: str, netnum: int) -> str:
    # AWS gives the VPC a /56 and every subnet a /64 of it; the plan fixes the index.
    return str(nth_subnet(ipaddress.IPv6Network(vpc_block), 64, netnum))


class Network(pulumi.ComponentResource):
    """VPC, per-AZ public (routers) and private (hosts) subnets and route tables."""

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("overlay:network:Network", name, None, opts)
        plan = args.plan
        child = pulumi.ResourceOptions(parent=self)
        self.vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=str(plan.vpc_cidr),
            assign_generated_ipv6_cidr_block=plan.ipv6,
            enable_dns_support=True,
            enable_dns_hostnames=True,
            tags={"Name": f"{plan.project}-{plan.stack}"},
            opts=child,
        )
        self.igw = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=self.vpc.id, opts=child)
        self.eigw = None
        if plan.ipv6:
            # Private subnets get outbound-only IPv6, the IPv6 counterpart of a NAT gateway.
            self.eigw = aws.ec2.EgressOnlyInternetGateway(f"{name}-eigw", vpc_id=self.vpc.id, opts=child)

        self.subnets: dict[tuple[str, str], aws.ec2.Subnet] = {}
        for s in plan.subnets:
            ipv6_block = None
            if plan.ipv6 and s.ipv6_netnum is not None:
                ipv6_block = self.vpc.ipv6_cidr_block.apply(lambda c, n=s.ipv6_netnum: _ipv6_subnet(c, n))
            self.subnets[(s.az, s.kind)] = aws.ec2.Subnet(
                f"{name}-{s.kind}-{s.az}",
                vpc_id=self.vpc.id,
                cidr_block=str(s.cidr),
                availability_zone=s.az,
                ipv6_cidr_block=ipv6_block,
                assign_ipv6_address_on_creation=plan.ipv6,
                # Every instance has a fixed ENI; public addresses are EIPs, never automatic.
                map_public_ip_on_launch=False,
                tags={"Name": f"{plan.stack}-{s.kind}-{s.az}"},
                opts=child,
            )
        # The fixed-address band of every subnet, reserved `explicit`: AWS assigns none of it
        # to ENIs it creates (NAT gateways, interface endpoints, load balancers), so a planned
        # router or host address is never taken before its ENI exists (review F15).
        self.reservations: dict[tuple[str, str], list[aws.ec2.SubnetCidrReservation]] = {}
        for s in plan.subnets:
            self.reservations[(s.az, s.kind)] = [
                aws.ec2.SubnetCidrReservation(
                    f"{name}-{s.kind}-{s.az}-fixed-{i}",
                    subnet_id=self.subnets[(s.az, s.kind)].id,
                    cidr_block=str(cidr),
                    reservation_type="explicit",
                    description=f"{plan.stack} fixed instance addresses",
                    opts=child,
                )
                for i, cidr in enumerate(s.reserved)
            ]

        self.route_tables: dict[tuple[str, str], aws.ec2.RouteTable] = {}
        # Per subnet, what makes its egress work: the table association and the default
        # routes (and, behind them, the NAT gateway). Instances wait for these (review F6).
        self.egress: dict[tuple[str, str], list[pulumi.Resource]] = {}
        for az in plan.azs:
            # One NAT gateway per AZ: hosts reach SSM and package mirrors without a
            # cross-AZ dependency (AWS's recommendation for zone-independent egress).
            nat_eip = aws.ec2.Eip(f"{name}-nat-{az}", domain="vpc", opts=child)
            # A public NAT gateway needs the VPC's internet gateway attached first.
            # Its own address pinned below the fixed band (plan: subnet base + 5).
            public = next(s for s in plan.subnets if s.az == az and s.kind == "public")
            nat = aws.ec2.NatGateway(
                f"{name}-nat-{az}",
                allocation_id=nat_eip.allocation_id,
                subnet_id=self.subnets[(az, "public")].id,
                private_ip=str(public.nat_ip),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[self.igw, *self.reservations[(az, "public")]]),
            )
            for kind in ("public", "private"):
                table = aws.ec2.RouteTable(
                    f"{name}-{kind}-{az}", vpc_id=self.vpc.id, tags={"Name": f"{plan.stack}-{kind}-{az}"}, opts=child
                )
                self.route_tables[(az, kind)] = table
                egress = self.egress[(az, kind)] = []
                egress.append(
                    aws.ec2.RouteTableAssociation(
                        f"{name}-{kind}-{az}",
                        route_table_id=table.id,
                        subnet_id=self.subnets[(az, kind)].id,
                        opts=child,
                    )
                )
                if kind == "public":
                    egress.append(
                        aws.ec2.Route(
                            f"{name}-{kind}-{az}-default4",
                            route_table_id=table.id,
                            destination_cidr_block="0.0.0.0/0",
                            gateway_id=self.igw.id,
                            opts=child,
                        )
                    )
                    if plan.ipv6:
                        egress.append(
                            aws.ec2.Route(
                                f"{name}-{kind}-{az}-default6",
                                route_table_id=table.id,
                                destination_ipv6_cidr_block="::/0",
                                gateway_id=self.igw.id,
                                opts=child,
                            )
                        )
                else:
                    # The route exists as soon as the NAT gateway does, but the NAT gateway is
                    # created `available` only after its provisioning (minutes): pulumi-aws
                    # waits for that on create, so depending on the route waits for it too.
                    egress.append(
                        aws.ec2.Route(
                            f"{name}-{kind}-{az}-default4",
                            route_table_id=table.id,
                            destination_cidr_block="0.0.0.0/0",
                            nat_gateway_id=nat.id,
                            opts=child,
                        )
                    )
                    if self.eigw is not None:  # plan.ipv6
                        egress.append(
                            aws.ec2.Route(
                                f"{name}-{kind}-{az}-default6",
                                route_table_id=table.id,
                                destination_ipv6_cidr_block="::/0",
                                egress_only_gateway_id=self.eigw.id,
                                opts=child,
                            )
                        )
        # The agent package comes from S3: a gateway endpoint keeps that traffic off the
        # NAT gateways (and costs nothing).
        self.s3_endpoint = aws.ec2.VpcEndpoint(
            f"{name}-s3",
            vpc_id=self.vpc.id,
            service_name=f"com.amazonaws.{plan.region}.s3",
            vpc_endpoint_type="Gateway",
            route_table_ids=[t.id for t in self.route_tables.values()],
            opts=child,
        )
        for egress in self.egress.values():
            egress.append(self.s3_endpoint)
        self.register_outputs(
            {
                "vpc_id": self.vpc.id,
                "ipv6_cidr_block": self.vpc.ipv6_cidr_block,
                "subnet_ids": {f"{k}-{az}": s.id for (az, k), s in self.subnets.items()},
                "route_table_ids": {f"{k}-{az}": t.id for (az, k), t in self.route_tables.items()},
            }
        )
