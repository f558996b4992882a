"""OverlayInstance: the parts routers and docker hosts share (fixed ENI, instance, SSM parameters)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import pulumi
import pulumi_aws as aws

from infra.parameters import Parameter, revision


@dataclass
class InstanceArgs:
    plan_stack: str
    region: str
    role: str  # "router" or "host"
    subnet_id: pulumi.Input[str]
    private_ip: str
    security_group_ids: Sequence[pulumi.Input[str]]
    ami_id: pulumi.Input[str]
    instance_type: str
    user_data: pulumi.Input[str]
    parameters: Sequence[Parameter]  # this instance's set (infra.parameters)
    parameter_path: str  # /overlay/<stack>/instances/<name>
    instance_profile: pulumi.Input[str]  # infra.components.instance_role
    ipv6: bool
    ipv6_prefix: bool = False  # a delegated /80 on the ENI (hosts, when configured)
    eip: bool = False
    protect: bool = False  # prod: the ENI and EIP outlive mistakes
    root_volume_gb: int = 20
    # An EIP associates only once the VPC has its internet gateway (AWS: "Gateway.NotAttached").
    eip_after: Sequence[pulumi.Resource] = ()
    # What the instance's first boot needs to exist already: its subnet's route table
    # association and default routes (NAT/EIGW/IGW), the S3 endpoint, the role's policy and
    # the agent package. cloud-init installs packages within a minute of launch; a NAT
    # gateway takes minutes to become available (review F6).
    boot_after: Sequence[pulumi.Resource] = ()
    volume_tags: dict[str, str] = field(default_factory=dict)  # the stack's tags (project, stack, ...)
    # Parameters whose value AWS decides at creation (a router's `route-server`: the
    # endpoint addresses), name -> value; the revision then covers them too.
    late_parameters: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)


def _parameter_suffix(p: Parameter, path: str) -> str:
    return p.name[len(path) + 1 :].replace("/", "-")


class OverlayInstance(pulumi.ComponentResource):
    """An instance with a fixed ENI (source/dest check off) and its own parameter set."""

    def __init__(self, type_: str, name: str, args: InstanceArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(type_, name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = {"Name": f"{args.plan_stack}-{name}", "overlay-role": args.role}

        # The parameters first: the agent reads them at boot. `revision` is written last so
        # a new revision always describes parameters that already exist.
        # String parameters go in `insecure_value`: they hold no secret (the password is its
        # own SecureString), and `pulumi preview` then shows reviewers what changes in them.
        self.parameters: dict[str, aws.ssm.Parameter] = {}
        content = []
        for p in args.parameters:
            if p.name.endswith("/revision"):
                continue
            self.parameters[p.name] = aws.ssm.Parameter(
                f"{name}-{_parameter_suffix(p, args.parameter_path)}",
                name=p.name,
                type=p.type,
                insecure_value=p.value,
                tier=p.tier,
                opts=child,
            )
            content.append(self.parameters[p.name])
        for pname, late_value in sorted(args.late_parameters.items()):
            # Small JSON documents: always the standard tier.
            self.parameters[pname] = aws.ssm.Parameter(
                f"{name}-{pname[len(args.parameter_path) + 1 :].replace('/', '-')}",
                name=pname,
                type="String",
                insecure_value=late_value,
                tier="Standard",
                opts=child,
            )
            content.append(self.parameters[pname])
        boot = [self.parameters[p.name] for p in args.parameters if p.name.endswith(("/agent", "/frr"))]
        for p in args.parameters:
            if p.name.endswith("/revision"):
                value: pulumi.Input[str | None] = p.value
                if args.late_parameters:
                    known = [q for q in args.parameters if not q.name.endswith("/revision")]
                    names = sorted(args.late_parameters)

                    def late_revision(vals: list[str], known: list[Parameter] = known, names: list[str] = names) -> str:
                        return revision(known + [Parameter(n, "String", v, None) for n, v in zip(names, vals)])

                    value = pulumi.Output.all(*[args.late_parameters[n] for n in names]).apply(late_revision)
                self.parameters[p.name] = aws.ssm.Parameter(
                    f"{name}-revision",
                    name=p.name,
                    type=p.type,
                    insecure_value=value,
                    tier=p.tier,
                    opts=pulumi.ResourceOptions(parent=self, depends_on=content),
                )

        # A fixed ENI carries the plan's private address and survives instance replacement;
        # source/dest check off because it forwards container and tunnel traffic.
        self.eni = aws.ec2.NetworkInterface(
            f"{name}-eni",
            subnet_id=args.subnet_id,
            private_ips=[args.private_ip],
            security_groups=list(args.security_group_ids),
            source_dest_check=False,
            ipv6_address_count=1 if args.ipv6 else None,
            # IPv6 prefix delegation gives the ENI a /80 (AWS's fixed delegated size).
            ipv6_prefix_count=1 if args.ipv6_prefix else None,
            description=f"{args.plan_stack} {args.role} {name}",
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self, protect=args.protect),
        )
        self.eip = None
        if args.eip:
            self.eip = aws.ec2.Eip(
                f"{name}-eip",
                domain="vpc",
                network_interface=self.eni.id,
                associate_with_private_ip=args.private_ip,
                tags=tags,
                opts=pulumi.ResourceOptions(parent=self, protect=args.protect, depends_on=list(args.eip_after)),
            )

        # The router's EIP is its only IPv4 egress (public subnet): it must be associated
        # before cloud-init reaches for the package mirrors.
        after = [*boot, *args.boot_after, *([self.eip] if self.eip else [])]
        self.instance = aws.ec2.Instance(
            f"{name}-instance",
            ami=args.ami_id,
            instance_type=args.instance_type,
            iam_instance_profile=args.instance_profile,
            primary_network_interface={"network_interface_id": self.eni.id, "delete_on_termination": False},
            # IMDSv2 only; hop limit 1 keeps containers (one hop further) away from the
            # instance's credentials.
            metadata_options={"http_endpoint": "enabled", "http_tokens": "required", "http_put_response_hop_limit": 1},
            root_block_device={
                "encrypted": True,
                "volume_type": "gp3",
                "volume_size": args.root_volume_gb,
                "delete_on_termination": True,
            },
            # The provider's default_tags do not reach volumes; the stack's tags go on the
            # root volume here so cost reports and `infra.verify` find it.
            volume_tags={**args.volume_tags, **tags},
            user_data=args.user_data,
            user_data_replace_on_change=False,
            tags=tags,
            opts=pulumi.ResourceOptions(
                parent=self,
                # Changes reach running instances through the parameters; a new AMI or user
                # data applies to instances replaced deliberately, never as a side effect.
                # sourceDestCheck: the provider reads the instance's value from the primary
                # ENI but diffs it against its schema default (true), so every later `up`
                # would plan `false -> true` and write it through to the ENI, turning
                # forwarding off on every router and host (terraform-provider-aws#44768;
                # the argument itself conflicts with primary_network_interface). The ENI
                # owns the setting; the instance must never touch it (review F5).
                ignore_changes=["ami", "userData", "sourceDestCheck"],
                # The new instance takes the same fixed ENI as its primary interface, which
                # EC2 attaches to one instance only: replacing create-before-delete fails
                # with the ENI in use, so the old instance goes first (review F7). The ENI,
                # its address and EIP stay (delete_on_termination false, not replaced).
                delete_before_replace=True,
                # It boots after its agent and frr parameters exist and its egress works, but
                # does not depend on its tunnels: a new host's tunnel must not touch a router.
                depends_on=after,
            ),
        )
        self.private_ip = args.private_ip
        self.public_ip = self.eip.public_ip if self.eip else None

    def _outputs(self) -> dict[str, Any]:
        return {
            "instance_id": self.instance.id,
            "eni_id": self.eni.id,
            "private_ip": self.private_ip,
            "public_ip": self.public_ip,
        }
