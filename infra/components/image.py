"""OverlayImage: the stack's machine image, built by EC2 Image Builder from the repository's one recipe.

image/provision.sh with image/packages.txt (infra.image_recipe) runs as an Image Builder
component on a build instance started from Debian's own AMI, in the stack's private subnet
(egress through the NAT gateway to Debian's mirrors). The resulting AMI is what every router
and docker host of the stack boots; the lab's VMs boot the same recipe (lab/vm/image.py).

Image Builder never changes a component or recipe in place (each version is immutable), so
their names carry the recipe's digest and the parent AMI: a changed script, package list or
Debian AMI makes new ones and a new image on the next `pulumi up`. Running instances ignore
AMI changes (docs/deploy.md: replace them one at a time to roll the new image).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any, Sequence

import pulumi
import pulumi_aws as aws

from infra import iam, image_recipe
from infra.components.instance_role import ASSUME_EC2

# Debian's AMI root volume is 8 GiB; the packages add about 600 MB.
VOLUME_GB = 8
# An image build (launch, apt, snapshot, AMI) takes 20-40 minutes.
BUILD_TIMEOUT = "90m"


@dataclass
class OverlayImageArgs:
    project: str
    stack: str
    region: str
    account: pulumi.Input[str]
    arch: str  # "x86_64" or "arm64"
    parent_ami: pulumi.Input[str]  # Debian 12's own AMI for the architecture
    instance_type: str  # the build instance: one the stack runs on this architecture
    subnet_id: pulumi.Input[str]  # a private subnet (NAT egress to Debian's mirrors)
    security_group_id: pulumi.Input[str]
    # The subnet's route table association and default routes: apt needs them (review F6).
    build_after: Sequence[pulumi.Resource] = ()


def _digest(ami: str) -> str:
    return hashlib.sha256(f"{image_recipe.digest()}\0{ami}".encode()).hexdigest()[:12]


class OverlayImage(pulumi.ComponentResource):
    """Component, recipe, infrastructure configuration and image for one architecture; `ami_id`."""

    def __init__(self, name: str, args: OverlayImageArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("overlay:image:OverlayImage", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        prefix = f"{args.project}-{args.stack}-{args.arch}"
        named = pulumi.Output.from_input(args.parent_ami).apply(lambda ami: f"{prefix}-{_digest(ami)}")
        self.component = aws.imagebuilder.Component(
            f"{name}-provision",
            name=named,
            version="1.0.0",
            platform="Linux",
            description="image/provision.sh with image/packages.txt",
            data=image_recipe.component_document(),
            opts=child,
        )
        # The build instance's role: inline policy only (infra.iam.build_role_policy), under the
        # stack's IAM path and tagged, so `infra.verify` holds it to the instance roles' rules.
        path = f"/{args.project}/{args.stack}/"
        self.role = aws.iam.Role(
            f"{name}-build-role",
            assume_role_policy=ASSUME_EC2,
            path=path,
            tags={"overlay-role": "image-build"},
            opts=child,
        )
        policy = aws.iam.RolePolicy(
            f"{name}-build",
            role=self.role.name,
            policy=pulumi.Output.all(args.account, self.component.arn).apply(
                lambda v: iam.build_role_policy(region=args.region, account=v[0], component_arn=v[1])
            ),
            opts=child,
        )
        profile = aws.iam.InstanceProfile(f"{name}-build-profile", role=self.role.name, path=path, opts=child)
        infra_config = aws.imagebuilder.InfrastructureConfiguration(
            f"{name}-build",
            name=named,
            description=f"{args.stack}: builds the overlay image in the stack's private subnet",
            instance_profile_name=profile.name,
            instance_types=[args.instance_type],
            subnet_id=args.subnet_id,
            security_group_ids=[args.security_group_id],
            terminate_instance_on_failure=True,
            instance_metadata_options={"http_tokens": "required", "http_put_response_hop_limit": 1},
            opts=child,
        )
        self.recipe = aws.imagebuilder.ImageRecipe(
            f"{name}-recipe",
            name=named,
            version="1.0.0",
            parent_image=args.parent_ami,
            components=[{"component_arn": self.component.arn}],
            block_device_mappings=[
                {
                    "device_name": "/dev/xvda",
                    "ebs": {
                        "volume_size": VOLUME_GB,
                        "volume_type": "gp3",
                        "encrypted": True,
                        "delete_on_termination": True,
                    },
                }
            ],
            # Debian's AMI has no SSM Agent: the user data installs it, and the image keeps it.
            user_data_base64=base64.b64encode(image_recipe.build_user_data(args.region, args.arch).encode()).decode(),
            systems_manager_agent={"uninstall_after_build": False},
            opts=child,
        )
        self.image = aws.imagebuilder.Image(
            f"{name}-image",
            image_recipe_arn=self.recipe.arn,
            infrastructure_configuration_arn=infra_config.arn,
            enhanced_image_metadata_enabled=True,
            tags={"Name": f"{args.stack}-overlay-{args.arch}"},
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[policy, *args.build_after],
                custom_timeouts=pulumi.CustomTimeouts(create=BUILD_TIMEOUT),
            ),
        )
        self.ami_id: pulumi.Output[str] = self.image.output_resources.apply(_ami_of)
        self.register_outputs({"ami_id": self.ami_id})


def _ami_of(resources: Any) -> str:
    """The AMI id in the image's output resources (one AMI: the build's own region)."""
    # pulumi_aws's ImageOutputResource (Any: mypy does not follow pulumi_aws), or its dict.
    ami = resources[0].amis[0]
    image: str = ami.image if hasattr(ami, "image") else ami["image"]
    return image
