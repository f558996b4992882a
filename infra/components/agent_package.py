"""AgentPackage: a private, encrypted S3 bucket holding the agent bundle (wheel + hashed wheelhouse) that user data installs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_aws as aws


@dataclass
class AgentPackageArgs:
    stack: str
    archive: Path  # infra.agent_archive.build_bundle's output
    key: str
    force_destroy: bool  # test stacks: `pulumi destroy` empties the bucket too


class AgentPackage(pulumi.ComponentResource):
    """Bucket (public access blocked, SSE, owner-enforced) and the package object."""

    def __init__(self, name: str, args: AgentPackageArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("overlay:agent:AgentPackage", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.bucket = aws.s3.Bucket(
            f"{name}-bucket", force_destroy=args.force_destroy, tags={"Name": f"{args.stack}-agent"}, opts=child
        )
        block = aws.s3.BucketPublicAccessBlock(
            f"{name}-public-access",
            bucket=self.bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=child,
        )
        # ACLs disabled: only IAM policies grant access (the instance roles' GetObject).
        aws.s3.BucketOwnershipControls(
            f"{name}-ownership", bucket=self.bucket.id, rule={"object_ownership": "BucketOwnerEnforced"}, opts=child
        )
        sse = aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-sse",
            bucket=self.bucket.id,
            rules=[
                {"apply_server_side_encryption_by_default": {"sse_algorithm": "aws:kms"}, "bucket_key_enabled": True}
            ],
            opts=child,
        )
        # Instances fetch over TLS only (the S3 gateway endpoint keeps it inside the VPC).
        tls_only = aws.s3.BucketPolicy(
            f"{name}-tls-only",
            bucket=self.bucket.id,
            policy=self.bucket.arn.apply(
                lambda arn: json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Sid": "DenyInsecureTransport",
                                "Effect": "Deny",
                                "Principal": "*",
                                "Action": "s3:*",
                                "Resource": [arn, f"{arn}/*"],
                                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                            }
                        ],
                    }
                )
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[block]),
        )
        self.object = aws.s3.BucketObjectv2(
            f"{name}-object",
            bucket=self.bucket.id,
            key=args.key,
            source=pulumi.FileAsset(str(args.archive)),
            content_type="application/x-tar",
            server_side_encryption="aws:kms",
            opts=pulumi.ResourceOptions(parent=self, depends_on=[block, sse, tls_only]),
        )
        self.object_arn = pulumi.Output.concat(self.bucket.arn, "/", args.key)
        self.register_outputs({"bucket": self.bucket.bucket, "key": args.key, "object_arn": self.object_arn})
