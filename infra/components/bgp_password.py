"""BgpPassword: the stack's BGP (TCP MD5) password(s) as SSM SecureStrings under the stack's own KMS key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import pulumi
import pulumi_aws as aws

from infra import iam


@dataclass
class BgpPasswordArgs:
    region: str
    account: pulumi.Input[str]
    stack: str
    values: Mapping[str, pulumi.Input[str]]  # parameter name -> a Pulumi secret (never in user data)
    # role ARN -> the parameter names that role may decrypt
    readers: Sequence[tuple[pulumi.Input[str], Sequence[str]]]
    prod: bool = False


class BgpPassword(pulumi.ComponentResource):
    def __init__(self, name: str, args: BgpPasswordArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("overlay:parameters:BgpPassword", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        role_arns = [arn for arn, _ in args.readers]

        def policy(resolved: list[str]) -> str:
            account, *arns = resolved
            readers = {
                arn: [iam.parameter_arn(args.region, account, n) for n in names]
                for arn, (_, names) in zip(arns, args.readers)
            }
            return iam.key_policy(region=args.region, account=account, stack=args.stack, readers=readers)

        # A customer-managed key, so that only this stack's roles (and the account's
        # administrators) can decrypt its passwords: see infra.iam.key_policy.
        self.key = aws.kms.Key(
            f"{name}-key",
            description=f"overlay {args.stack}: BGP password SecureStrings",
            enable_key_rotation=True,
            deletion_window_in_days=30 if args.prod else 7,
            policy=pulumi.Output.all(args.account, *role_arns).apply(policy),
            opts=child,
        )
        aws.kms.Alias(
            f"{name}-alias", name=f"alias/overlay/{args.stack}/bgp-passwords", target_key_id=self.key.key_id, opts=child
        )
        self.parameters = {}
        for i, (pname, value) in enumerate(sorted(args.values.items())):
            suffix = "parameter" if i == 0 else f"parameter-{pname.rsplit('/', 1)[-1]}"
            self.parameters[pname] = aws.ssm.Parameter(
                f"{name}-{suffix}",
                name=pname,
                type="SecureString",
                key_id=self.key.arn,
                value=pulumi.Output.secret(value),
                opts=child,
            )
        self.register_outputs({"names": sorted(args.values), "key_arn": self.key.arn})
