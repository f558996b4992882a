"""InstanceRole: the one instance profile of a stack: SSM core, its own stack's parameters, the agent package."""
from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

SSM_CORE = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
ASSUME_EC2 = json.dumps({"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]})


@dataclass
class InstanceRoleArgs:
    region: str
    parameter_root: str  # /overlay/<stack>
    agent_object_arn: pulumi.Input[str]


def read_policy(region: str, parameter_root: str, object_arn: str) -> str:
    """Read-only: this stack's parameters (not another stack's) and the agent package."""
    arn = f"arn:aws:ssm:{region}:*:parameter{parameter_root}"
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "StackParameters", "Effect": "Allow",
         "Action": ["ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath"],
         "Resource": [arn, f"{arn}/*"]},
        # SecureString and the bucket use the AWS managed keys (aws/ssm, aws/s3), whose key
        # policies let account principals decrypt through those services: no kms grant here.
        {"Sid": "AgentPackage", "Effect": "Allow", "Action": "s3:GetObject", "Resource": object_arn},
    ]}, sort_keys=True)


class InstanceRole(pulumi.ComponentResource):
    """One role for every instance of the stack, so adding a host adds no IAM resources."""

    def __init__(self, name: str, args: InstanceRoleArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("overlay:iam:InstanceRole", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.role = aws.iam.Role(f"{name}-role", assume_role_policy=ASSUME_EC2, opts=child)
        aws.iam.RolePolicyAttachment(f"{name}-ssm-core", role=self.role.name, policy_arn=SSM_CORE, opts=child)
        self.policy = aws.iam.RolePolicy(f"{name}-read", role=self.role.id, policy=pulumi.Output.from_input(
            args.agent_object_arn).apply(lambda a: read_policy(args.region, args.parameter_root, a)),
            opts=child)
        self.profile = aws.iam.InstanceProfile(f"{name}-profile", role=self.role.name, opts=child)
        self.register_outputs({"role_arn": self.role.arn, "profile_name": self.profile.name})
