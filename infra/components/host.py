"""DockerHost: a docker host; in static routing mode also its block's routes straight to its ENI."""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from infra.components.instance import InstanceArgs, OverlayInstance


@dataclass
class StaticRoutes:
    route_table_ids: dict[str, pulumi.Input[str]] = field(default_factory=dict)  # table key -> id
    block_v4: str | None = None
    block_v6: str | None = None


class DockerHost(OverlayInstance):
    """A docker host: its containers' addresses come from its block, announced over BGP."""

    def __init__(
        self,
        name: str,
        args: InstanceArgs,
        static: StaticRoutes | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("overlay:instances:DockerHost", name, args, opts)
        # Static mode: the VPC sends the host's own block straight to its ENI (more specific
        # than the pool routes to the routers), one route per table and family.
        child = pulumi.ResourceOptions(parent=self)
        if static is not None:
            for key, table_id in static.route_table_ids.items():
                aws.ec2.Route(
                    f"{name}-static4-{key}",
                    route_table_id=table_id,
                    destination_cidr_block=static.block_v4,
                    network_interface_id=self.eni.id,
                    opts=child,
                )
                if static.block_v6:
                    aws.ec2.Route(
                        f"{name}-static6-{key}",
                        route_table_id=table_id,
                        destination_ipv6_cidr_block=static.block_v6,
                        network_interface_id=self.eni.id,
                        opts=child,
                    )
        self.register_outputs(self._outputs())
