"""PoolRoutes: every route table sends the container pools to a router's ENI, the one in its own AZ."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.plan import OverlayPlan
from infra.rules import router_for_az


def _slug(cidr: str) -> str:
    return cidr.replace(".", "-").replace(":", "-").replace("/", "-")


@dataclass
class PoolRoutesArgs:
    plan: OverlayPlan
    route_table_ids: dict[tuple[str, str], pulumi.Input[str]]  # (az, kind) -> id
    router_eni_ids: dict[str, pulumi.Input[str]]  # router name -> ENI id


class PoolRoutes(pulumi.ComponentResource):
    """One target per prefix per table (VPC route tables allow one route per destination)."""

    def __init__(self, name: str, args: PoolRoutesArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("overlay:network:PoolRoutes", name, None, opts)
        plan = args.plan
        child = pulumi.ResourceOptions(parent=self)
        targets = {}
        for (az, kind), table_id in args.route_table_ids.items():
            router = router_for_az(plan, az)
            targets[f"{kind}-{az}"] = router
            for pool in plan.pools_v4:
                aws.ec2.Route(
                    f"{name}-{kind}-{az}-{_slug(str(pool))}",
                    route_table_id=table_id,
                    destination_cidr_block=str(pool),
                    network_interface_id=args.router_eni_ids[router],
                    opts=child,
                )
            for pool6 in plan.pools_v6:
                aws.ec2.Route(
                    f"{name}-{kind}-{az}-{_slug(str(pool6))}",
                    route_table_id=table_id,
                    destination_ipv6_cidr_block=str(pool6),
                    network_interface_id=args.router_eni_ids[router],
                    opts=child,
                )
        self.register_outputs({"targets": targets})
