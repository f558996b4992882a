"""InstanceRole: one role and instance profile per instance kind (routers, docker hosts) of a stack.

The policies are infra.iam's (pure). A role is created first and its policy once the
password key exists: the key's policy names the role, and the role's policy names the key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Sequence

import pulumi
import pulumi_aws as aws

from infra import iam

ASSUME_EC2 = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}],
    }
)


@dataclass
class InstanceRoleArgs:
    region: str
    account: pulumi.Input[str]
    project: str
    stack: str
    parameter_root: str  # /overlay/<stack>
    secrets: Sequence[str]  # the SecureString names this kind of instance reads
    agent_object_arn: pulumi.Input[str]
    kind: str = "host"  # "router" or "host"


class InstanceRole(pulumi.ComponentResource):
    """One role for every instance of a kind, so adding a host adds no IAM resources."""

    def __init__(self, name: str, args: InstanceRoleArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("overlay:iam:InstanceRole", name, None, opts)
        self.args = args
        self.child = pulumi.ResourceOptions(parent=self)
        # The path groups a stack's roles: `infra.verify` lists them by it.
        self.path = f"/{args.project}/{args.stack}/"
        # The kind as a tag: `infra.verify` checks that only the routers' role reads the
        # on-prem password.
        self.role = aws.iam.Role(
            f"{name}-role",
            assume_role_policy=ASSUME_EC2,
            path=self.path,
            tags={"overlay-role": args.kind},
            opts=self.child,
        )
        self.profile = aws.iam.InstanceProfile(f"{name}-profile", role=self.role.name, path=self.path, opts=self.child)
        self.policy: aws.iam.RolePolicy | None = None

    def grant(self, key_arn: pulumi.Input[str]) -> aws.iam.RolePolicy:
        """The role's one inline policy (infra.iam.role_policy), naming the password key."""
        a = self.args
        self.policy = aws.iam.RolePolicy(
            f"{self._name}-read",
            role=self.role.id,
            policy=pulumi.Output.all(a.account, key_arn, a.agent_object_arn).apply(
                lambda v: iam.role_policy(
                    region=a.region,
                    account=v[0],
                    parameter_root=a.parameter_root,
                    secrets=a.secrets,
                    key_arn=v[1],
                    object_arn=v[2],
                )
            ),
            opts=self.child,
        )
        self.register_outputs({"role_arn": self.role.arn, "profile_name": self.profile.name})
        return self.policy
