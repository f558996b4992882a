"""BgpPassword: the stack's BGP (TCP MD5) password as an SSM SecureString, from a Pulumi secret."""
from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws


@dataclass
class BgpPasswordArgs:
    name: str  # /overlay/<stack>/bgp-password
    value: pulumi.Input[str]  # a Pulumi secret: encrypted in state, never in user data


class BgpPassword(pulumi.ComponentResource):
    def __init__(self, name: str, args: BgpPasswordArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("overlay:parameters:BgpPassword", name, None, opts)
        self.parameter = aws.ssm.Parameter(f"{name}-parameter", name=args.name, type="SecureString",
                                           value=pulumi.Output.secret(args.value),
                                           opts=pulumi.ResourceOptions(parent=self))
        self.register_outputs({"name": self.parameter.name})
