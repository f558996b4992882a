"""RoutingInstance: a router; its fixed ENI and its EIP (every router has one) are protected in prod."""

from __future__ import annotations

import pulumi

from infra.components.instance import InstanceArgs, OverlayInstance


class RoutingInstance(OverlayInstance):
    """A routing instance: peers with every host (dynamic neighbor) and the on-prem routers."""

    def __init__(self, name: str, args: InstanceArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("overlay:instances:RoutingInstance", name, args, opts)
        self.register_outputs(self._outputs())
