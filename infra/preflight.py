"""`python -m infra.preflight STACK`: every resource the program asks AWS for, checked against AWS's own rules.

No credentials, no Pulumi CLI, no AWS. The program runs for the stack the way the CLI
runs it (stack file config as strings, infra/ as __main__), under Pulumi mocks
(infra/mockrun.py), and every resource's inputs are captured. Each input is then checked
against:

- AWS's CloudFormation resource schemas (the registry schemas AWS publishes per region),
  as the `cfn-lint` package ships them: `cfnlint/data/schemas/providers/<region>.json`
  maps each CloudFormation type to a file under `cfnlint/data/schemas/resources/`. The
  checks used are `pattern`, `minLength`/`maxLength`, `enum`, `minimum`/`maximum` and
  `maxItems` of the matching property. `CFN` below is the one table from pulumi-aws types
  and properties to CloudFormation types and properties; a type missing from it is
  listed as unchecked (never silently passed, never a failure).
- The rules AWS documents that no schema carries (`DOCUMENTED` rules below, each citing
  where AWS states it), and the default quotas a stack can reach (routes per route table,
  rules per security group; Elastic IPs per Region, a warning).

Exit status: 0 clean (warnings and unchecked types are listed), 1 with one line per
violation (resource, property, value, rule), 2 for bad usage or a stack config the
program refuses.
"""

from __future__ import annotations

import argparse
import gzip
import ipaddress
import json
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

import regex  # cfn-lint's own dependency: CloudFormation patterns use \p{L} classes

from infra import placeholders
from infra.cli import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, common_parser
from infra.mockrun import mock_id
from infra.parameters import ADVANCED_MAX, SSM_NESTED, STANDARD_MAX
from infra.render import USER_DATA_LIMIT
from infra.rules import EC2_RULE_DESCRIPTION

# Pulumi marks a secret value with this key (pulumi.runtime.rpc); the preflight checks
# what is inside.
_SECRET_SIG = "4dabf18193072939515e22adb298388d"

# -- the one table: pulumi-aws type -> CloudFormation type, property -> property ------------
#
# Property paths: `a.b` walks into an object, `a[]` into every item of a list. A pulumi
# property may map to a property of another CloudFormation type (`Type#Path`), where
# pulumi-aws splits one CloudFormation resource into several (the S3 bucket's settings)
# or CloudFormation has the setting on the parent (a role's managed policies).
CFN: dict[str, tuple[str, dict[str, str]]] = {
    "aws:ec2/vpc:Vpc": (
        "AWS::EC2::VPC",
        {"cidrBlock": "CidrBlock", "instanceTenancy": "InstanceTenancy", "tags": "Tags"},
    ),
    "aws:ec2/subnet:Subnet": (
        "AWS::EC2::Subnet",
        {
            "cidrBlock": "CidrBlock",
            "ipv6CidrBlock": "Ipv6CidrBlock",
            "availabilityZone": "AvailabilityZone",
            "tags": "Tags",
        },
    ),
    "aws:ec2/internetGateway:InternetGateway": ("AWS::EC2::InternetGateway", {"tags": "Tags"}),
    "aws:ec2/egressOnlyInternetGateway:EgressOnlyInternetGateway": (
        "AWS::EC2::EgressOnlyInternetGateway",
        {"tags": "Tags"},
    ),
    "aws:ec2/natGateway:NatGateway": (
        "AWS::EC2::NatGateway",
        {
            "connectivityType": "ConnectivityType",
            "privateIp": "PrivateIpAddress",
            "secondaryPrivateIpAddressCount": "SecondaryPrivateIpAddressCount",
            "tags": "Tags",
        },
    ),
    "aws:ec2/eip:Eip": ("AWS::EC2::EIP", {"domain": "Domain", "tags": "Tags"}),
    "aws:ec2/routeTable:RouteTable": ("AWS::EC2::RouteTable", {"tags": "Tags"}),
    "aws:ec2/route:Route": (
        "AWS::EC2::Route",
        {"destinationCidrBlock": "DestinationCidrBlock", "destinationIpv6CidrBlock": "DestinationIpv6CidrBlock"},
    ),
    "aws:ec2/routeTableAssociation:RouteTableAssociation": ("AWS::EC2::SubnetRouteTableAssociation", {}),
    "aws:ec2/securityGroup:SecurityGroup": (
        "AWS::EC2::SecurityGroup",
        {
            "description": "GroupDescription",
            "name": "GroupName",
            "tags": "Tags",
            "ingress[].fromPort": "SecurityGroupIngress[].FromPort",
            "ingress[].toPort": "SecurityGroupIngress[].ToPort",
            "ingress[].protocol": "SecurityGroupIngress[].IpProtocol",
            "ingress[].cidrBlocks[]": "SecurityGroupIngress[].CidrIp",
            "ingress[].ipv6CidrBlocks[]": "SecurityGroupIngress[].CidrIpv6",
            "egress[].fromPort": "SecurityGroupEgress[].FromPort",
            "egress[].toPort": "SecurityGroupEgress[].ToPort",
            "egress[].protocol": "SecurityGroupEgress[].IpProtocol",
            "egress[].cidrBlocks[]": "SecurityGroupEgress[].CidrIp",
            "egress[].ipv6CidrBlocks[]": "SecurityGroupEgress[].CidrIpv6",
        },
    ),
    "aws:ec2/securityGroupRule:SecurityGroupRule": (
        "AWS::EC2::SecurityGroupIngress",
        {
            "fromPort": "FromPort",
            "toPort": "ToPort",
            "protocol": "IpProtocol",
            "description": "Description",
            "cidrBlocks[]": "CidrIp",
            "ipv6CidrBlocks[]": "CidrIpv6",
        },
    ),
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": (
        "AWS::EC2::SecurityGroupIngress",
        {
            "fromPort": "FromPort",
            "toPort": "ToPort",
            "ipProtocol": "IpProtocol",
            "description": "Description",
            "cidrIpv4": "CidrIp",
            "cidrIpv6": "CidrIpv6",
        },
    ),
    "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule": (
        "AWS::EC2::SecurityGroupEgress",
        {
            "fromPort": "FromPort",
            "toPort": "ToPort",
            "ipProtocol": "IpProtocol",
            "description": "Description",
            "cidrIpv4": "CidrIp",
            "cidrIpv6": "CidrIpv6",
        },
    ),
    "aws:ec2/networkInterface:NetworkInterface": (
        "AWS::EC2::NetworkInterface",
        {
            "description": "Description",
            "privateIps[]": "PrivateIpAddresses[].PrivateIpAddress",
            "ipv6AddressCount": "Ipv6AddressCount",
            "ipv6PrefixCount": "Ipv6PrefixCount",
            "interfaceType": "InterfaceType",
            "tags": "Tags",
        },
    ),
    "aws:ec2/instance:Instance": (
        "AWS::EC2::Instance",
        {
            "instanceType": "InstanceType",
            "tenancy": "Tenancy",
            "instanceInitiatedShutdownBehavior": "InstanceInitiatedShutdownBehavior",
            "metadataOptions.httpEndpoint": "MetadataOptions.HttpEndpoint",
            "metadataOptions.httpTokens": "MetadataOptions.HttpTokens",
            "metadataOptions.httpPutResponseHopLimit": "MetadataOptions.HttpPutResponseHopLimit",
            "metadataOptions.httpProtocolIpv6": "MetadataOptions.HttpProtocolIpv6",
            "metadataOptions.instanceMetadataTags": "MetadataOptions.InstanceMetadataTags",
            "rootBlockDevice.volumeType": "BlockDeviceMappings[].Ebs.VolumeType",
            "rootBlockDevice.volumeSize": "BlockDeviceMappings[].Ebs.VolumeSize",
            "rootBlockDevice.iops": "BlockDeviceMappings[].Ebs.Iops",
            "tags": "Tags",
        },
    ),
    "aws:ec2/vpcEndpoint:VpcEndpoint": (
        "AWS::EC2::VPCEndpoint",
        {
            "vpcEndpointType": "VpcEndpointType",
            "ipAddressType": "IpAddressType",
            "serviceName": "ServiceName",
            "policy": "PolicyDocument",
        },
    ),
    "aws:iam/role:Role": (
        "AWS::IAM::Role",
        {
            "assumeRolePolicy": "AssumeRolePolicyDocument",
            "name": "RoleName",
            "description": "Description",
            "path": "Path",
            "maxSessionDuration": "MaxSessionDuration",
            "managedPolicyArns[]": "ManagedPolicyArns[]",
            "permissionsBoundary": "PermissionsBoundary",
            "tags": "Tags",
        },
    ),
    "aws:iam/rolePolicy:RolePolicy": (
        "AWS::IAM::RolePolicy",
        {"policy": "PolicyDocument", "name": "PolicyName", "role": "RoleName"},
    ),
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment": (
        "AWS::IAM::Role",
        {"policyArn": "ManagedPolicyArns[]", "role": "RoleName"},
    ),
    "aws:iam/policy:Policy": (
        "AWS::IAM::ManagedPolicy",
        {"policy": "PolicyDocument", "name": "ManagedPolicyName", "description": "Description", "path": "Path"},
    ),
    "aws:iam/instanceProfile:InstanceProfile": (
        "AWS::IAM::InstanceProfile",
        {"name": "InstanceProfileName", "path": "Path", "role": "Roles[]"},
    ),
    "aws:s3/bucket:Bucket": ("AWS::S3::Bucket", {"bucket": "BucketName", "acl": "AccessControl", "tags": "Tags"}),
    "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock": ("AWS::S3::Bucket", {}),
    "aws:s3/bucketOwnershipControls:BucketOwnershipControls": (
        "AWS::S3::Bucket",
        {"rule.objectOwnership": "OwnershipControls.Rules[].ObjectOwnership"},
    ),
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration": (
        "AWS::S3::Bucket",
        {
            "rules[].applyServerSideEncryptionByDefault.sseAlgorithm": "BucketEncryption.ServerSideEncryptionConfiguration[].ServerSideEncryptionByDefault.SSEAlgorithm",
            "rules[].applyServerSideEncryptionByDefault.kmsMasterKeyId": "BucketEncryption.ServerSideEncryptionConfiguration[].ServerSideEncryptionByDefault.KMSMasterKeyID",
        },
    ),
    "aws:s3/bucketVersioning:BucketVersioning": (
        "AWS::S3::Bucket",
        {"versioningConfiguration.status": "VersioningConfiguration.Status"},
    ),
    "aws:s3/bucketPolicy:BucketPolicy": ("AWS::S3::BucketPolicy", {}),
    "aws:ssm/parameter:Parameter": (
        "AWS::SSM::Parameter",
        {
            "name": "Name",
            "type": "Type",
            "tier": "Tier",
            "description": "Description",
            "dataType": "DataType",
            "allowedPattern": "AllowedPattern",
            "tags": "Tags",
        },
    ),
    # VPC Route Server (its endpoints peer with the routers).
    "aws:vpc/routeServer:RouteServer": (
        "AWS::EC2::RouteServer",
        {
            "amazonSideAsn": "AmazonSideAsn",
            "persistRoutes": "PersistRoutes",
            "persistRoutesDuration": "PersistRoutesDuration",
            "tags": "Tags",
        },
    ),
    "aws:vpc/routeServerEndpoint:RouteServerEndpoint": ("AWS::EC2::RouteServerEndpoint", {"tags": "Tags"}),
    "aws:vpc/routeServerPeer:RouteServerPeer": (
        "AWS::EC2::RouteServerPeer",
        {
            "bgpOptions.peerAsn": "BgpOptions.PeerAsn",
            "bgpOptions.peerLivenessDetection": "BgpOptions.PeerLivenessDetection",
            "peerAddress": "PeerAddress",
            "tags": "Tags",
        },
    ),
    "aws:vpc/routeServerPropagation:RouteServerPropagation": ("AWS::EC2::RouteServerPropagation", {}),
    "aws:vpc/routeServerVpcAssociation:RouteServerVpcAssociation": ("AWS::EC2::RouteServerAssociation", {}),
    "aws:imagebuilder/component:Component": (
        "AWS::ImageBuilder::Component",
        {
            "name": "Name",
            "platform": "Platform",
            "description": "Description",
            "data": "Data",
            "changeDescription": "ChangeDescription",
            "tags": "Tags",
        },
    ),
    "aws:imagebuilder/imageRecipe:ImageRecipe": (
        "AWS::ImageBuilder::ImageRecipe",
        {
            "name": "Name",
            "description": "Description",
            "parentImage": "ParentImage",
            "workingDirectory": "WorkingDirectory",
            "userDataBase64": "AdditionalInstanceConfiguration.UserDataOverride",
            "blockDeviceMappings[].ebs.volumeType": "BlockDeviceMappings[].Ebs.VolumeType",
            "blockDeviceMappings[].ebs.volumeSize": "BlockDeviceMappings[].Ebs.VolumeSize",
            "tags": "Tags",
        },
    ),
    "aws:imagebuilder/infrastructureConfiguration:InfrastructureConfiguration": (
        "AWS::ImageBuilder::InfrastructureConfiguration",
        {
            "name": "Name",
            "description": "Description",
            "instanceProfileName": "InstanceProfileName",
            "subnetId": "SubnetId",
            "instanceMetadataOptions.httpTokens": "InstanceMetadataOptions.HttpTokens",
            "instanceMetadataOptions.httpPutResponseHopLimit": "InstanceMetadataOptions.HttpPutResponseHopLimit",
            "tags": "Tags",
        },
    ),
    "aws:imagebuilder/image:Image": (
        "AWS::ImageBuilder::Image",
        {
            "imageRecipeArn": "ImageRecipeArn",
            "infrastructureConfigurationArn": "InfrastructureConfigurationArn",
            "tags": "Tags",
        },
    ),
    "aws:kms/key:Key": (
        "AWS::KMS::Key",
        {
            "description": "Description",
            "keyUsage": "KeyUsage",
            "customerMasterKeySpec": "KeySpec",
            "deletionWindowInDays": "PendingWindowInDays",
            "rotationPeriodInDays": "RotationPeriodInDays",
            "policy": "KeyPolicy",
            "tags": "Tags",
        },
    ),
    "aws:kms/alias:Alias": ("AWS::KMS::Alias", {"name": "AliasName", "targetKeyId": "TargetKeyId"}),
}

# Types CloudFormation has no counterpart for: listed as unchecked, with the reason.
NO_COUNTERPART = {
    "aws:s3/bucketObjectv2:BucketObjectv2": "CloudFormation has no S3 object resource",
    "aws:ec2/subnetCidrReservation:SubnetCidrReservation": "CloudFormation has no subnet CIDR reservation resource",
}


# Where CloudFormation is narrower than the API the provider calls. AWS::SSM::Parameter's
# Type lists String and StringList only: CloudFormation cannot create SecureStrings, the
# PutParameter API can (botocore's ssm service-2.json, shape ParameterType).
def _ssm_parameter_types() -> list[str]:
    import botocore

    path = Path(botocore.__file__).parent / "data/ssm/2014-11-06/service-2.json.gz"
    types: list[str] = json.loads(gzip.decompress(path.read_bytes()))["shapes"]["ParameterType"]["enum"]
    return types


OVERRIDES: dict[tuple[str, str], dict[str, Any]] = {
    ("AWS::SSM::Parameter", "Type"): {"enum": "botocore:ssm:ParameterType"},
}

# -- documented rules no schema carries ---------------------------------------------------

# Tags (EC2 User Guide, "Tag restrictions"; the same text in every service's Tag shape in
# botocore): at most 50 tags per resource, key at most 128 Unicode characters, value at
# most 256, and the aws: prefix (any case) is reserved for AWS.
MAX_TAGS = 50
MAX_TAG_KEY = 128
MAX_TAG_VALUE = 256

# Default quotas (Amazon VPC User Guide, "Amazon VPC quotas"):
# - "Routes per route table (non-propagated routes)": 50, enforced separately for IPv4 and
#   IPv6 routes; adjustable (Service Quotas, Amazon VPC "Routes per route table").
# - "Inbound or outbound rules per security group": 60, enforced separately for inbound and
#   outbound and for IPv4 and IPv6; a rule naming a security group counts as one in each
#   family (Amazon VPC "Inbound or outbound rules per security group").
# - "Elastic IP addresses per Region": 5 (Amazon EC2 "EC2-VPC Elastic IPs").
# The account may have raised them: `--quota NAME=VALUE` states the account's figure.
QUOTAS = {"routes-per-route-table": 50, "rules-per-security-group": 60, "eips-per-region": 5}
QUOTA_NAMES = {
    "routes-per-route-table": "Amazon VPC quota 'Routes per route table'",
    "rules-per-security-group": "Amazon VPC quota 'Inbound or outbound rules per security group'",
    "eips-per-region": "Amazon EC2 quota 'EC2-VPC Elastic IPs' (Elastic IP addresses per Region)",
}


@dataclass(frozen=True)
class Finding:
    level: str  # "violation" or "warning"
    resource: str  # the logical name (pulumi name)
    type: str  # the pulumi-aws type
    prop: str  # the property path, list items by index
    value: Any
    rule: str  # what AWS says, and where

    def line(self) -> str:
        shown = _show(self.value)
        tag = "VIOLATION" if self.level == "violation" else "WARNING"
        return f"{tag} {self.resource} ({self.type}) {self.prop} = {shown}: {self.rule}"


@dataclass
class Report:
    stack: str
    region: str
    resources: int
    findings: list[Finding] = field(default_factory=list)
    unchecked: dict[str, tuple[int, str]] = field(default_factory=dict)  # type -> (count, reason)
    checked_values: int = 0

    @property
    def violations(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "violation"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "warning"]

    def lines(self) -> list[str]:
        out = [
            f"preflight {self.stack} ({self.region}): {self.resources} resources, {self.checked_values} values "
            f"checked against CloudFormation schemas (cfn-lint {_cfnlint_version()}) and AWS's documented rules"
        ]
        out += [f"UNCHECKED {t} ({n}): {reason}" for t, (n, reason) in sorted(self.unchecked.items())]
        out += [f.line() for f in self.warnings]
        out += [f.line() for f in self.violations]
        out.append(
            f"preflight {self.stack}: {len(self.violations)} violation(s), {len(self.warnings)} warning(s), "
            f"{len(self.unchecked)} type(s) unchecked"
        )
        return out


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=str)
    if len(text) > 120:
        size = f" ({len(value)} characters)" if isinstance(value, str) else ""
        text = text[:100] + "..." + size
    return text.replace("\n", "\\n")


# -- CloudFormation schemas ----------------------------------------------------------------


def _cfnlint_dir() -> Path:
    import cfnlint

    return Path(cfnlint.__file__).parent / "data" / "schemas"


def _cfnlint_version() -> str:
    try:
        return metadata.version("cfn-lint")
    except metadata.PackageNotFoundError:
        return "?"


@lru_cache(maxsize=None)
def _region_index(region: str) -> dict[str, str]:
    path = _cfnlint_dir() / "providers" / f"{region}.json"
    if not path.exists():
        raise PreflightError(f"region {region!r}: cfn-lint {_cfnlint_version()} ships no schemas for it")
    index: dict[str, str] = json.loads(path.read_text())
    return index


@lru_cache(maxsize=None)
def cfn_schema(region: str, cfn_type: str) -> dict[str, Any] | None:
    """The registry schema of `cfn_type` in `region`, or None when the region lacks the type."""
    digest = _region_index(region).get(cfn_type)
    if digest is None:
        return None
    schema: dict[str, Any] = json.loads((_cfnlint_dir() / "resources" / f"{digest}.json").read_text())
    return schema


def _deref(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    seen = set()
    while "$ref" in node and node["$ref"] not in seen:
        seen.add(node["$ref"])
        node = schema["definitions"][node["$ref"].split("/")[-1]]
    return node


def cfn_property(schema: dict[str, Any], path: str) -> dict[str, Any]:
    """The subschema at `path` ("A.B[].C"); KeyError when the schema has no such property."""
    node: dict[str, Any] = {"properties": schema["properties"]}
    for part in path.split("."):
        items = part.endswith("[]")
        name = part[:-2] if items else part
        node = _deref(schema, node)
        node = _deref(schema, node["properties"][name])
        if items:
            node = _deref(schema, node["items"])
    return node


class PreflightError(Exception):
    """Bad usage or configuration (exit 2): one line."""


# -- values ---------------------------------------------------------------------------------


def unsecret(value: Any) -> Any:
    if isinstance(value, dict):
        if value.get(_SECRET_SIG) is not None and "value" in value:
            return unsecret(value["value"])
        return {k: unsecret(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unsecret(v) for v in value]
    return value


def values_at(inputs: dict[str, Any], path: str) -> Iterator[tuple[str, Any]]:
    """(concrete path, value) for every value at `path` ("a[].b") in `inputs`."""

    def walk(node: Any, parts: list[str], where: str) -> Iterator[tuple[str, Any]]:
        if not parts:
            if node is not None:
                yield where, node
            return
        part, rest = parts[0], parts[1:]
        items = part.endswith("[]")
        name = part[:-2] if items else part
        if isinstance(node, str) and node.lstrip()[:1] in "{[":
            try:
                node = json.loads(node)
            except json.JSONDecodeError:
                return
        if not isinstance(node, dict) or node.get(name) is None:
            return
        child = node[name]
        here = f"{where}.{name}" if where else name
        if items:
            for i, item in enumerate(child if isinstance(child, list) else [child]):
                yield from walk(item, rest, f"{here}[{i}]")
        else:
            yield from walk(child, rest, here)

    return walk(inputs, path.split("."), "")


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    return None


def check_value(value: Any, node: dict[str, Any], where: str) -> list[str]:
    """The schema constraints `value` breaks, each as one phrase naming the constraint."""
    problems = []
    enum = node.get("enum")
    if isinstance(enum, str) and enum == "botocore:ssm:ParameterType":
        enum = _ssm_parameter_types()
        where = "PutParameter API (botocore ssm ParameterType)"
    if isinstance(value, str):
        if "pattern" in node and not regex.search(node["pattern"], value):
            problems.append(f"does not match {where} pattern {node['pattern']}")
        if "minLength" in node and len(value) < node["minLength"]:
            problems.append(f"is shorter than {where} minLength {node['minLength']}")
        if "maxLength" in node and len(value) > node["maxLength"]:
            problems.append(f"is {len(value)} characters; {where} maxLength is {node['maxLength']}")
        if enum is not None and value not in enum:
            problems.append(f"is not one of {where} enum {enum}")
        fmt = node.get("format")
        if fmt in ("ipv4-network", "ipv6-network"):
            try:
                net = ipaddress.ip_network(value, strict=False)
                if net.version != (4 if fmt == "ipv4-network" else 6):
                    raise ValueError
            except ValueError:
                problems.append(f"is not an {fmt.split('-')[0].upper()} CIDR ({where} format {fmt})")
    elif (n := _number(value)) is not None:
        if "minimum" in node and n < node["minimum"]:
            problems.append(f"is below {where} minimum {node['minimum']}")
        if "maximum" in node and n > node["maximum"]:
            problems.append(f"is above {where} maximum {node['maximum']}")
        if enum is not None and value not in enum:
            problems.append(f"is not one of {where} enum {enum}")
    elif isinstance(value, list):
        if "maxItems" in node and len(value) > node["maxItems"]:
            problems.append(f"has {len(value)} items; {where} maxItems is {node['maxItems']}")
    return problems


# -- the checks ------------------------------------------------------------------------------


@dataclass
class Resource:
    """What the preflight needs of a captured resource (infra.mockrun.Recorded has more)."""

    name: str
    type: str
    inputs: dict[str, Any]


def _effective_tags(res: Resource, default_tags: dict[str, str], taggable: bool) -> dict[str, str]:
    own = unsecret(res.inputs.get("tags")) or {}
    if not taggable:
        return own
    # The provider's default_tags go on every taggable resource; a resource's own tag of
    # the same key wins (pulumi-aws docs, Provider default_tags).
    return {**default_tags, **own}


# Names Pulumi generates when the program sets none: the logical name, a dash and 7 random
# hex characters (Pulumi's auto-naming). The longest such name is what AWS will see.
AUTONAMED = {
    "aws:iam/role:Role": "name",
    "aws:iam/instanceProfile:InstanceProfile": "name",
    "aws:iam/rolePolicy:RolePolicy": "name",
    "aws:iam/policy:Policy": "name",
    "aws:ec2/securityGroup:SecurityGroup": "name",
    "aws:s3/bucket:Bucket": "bucket",
}


def schema_findings(res: Resource, region: str, report: Report) -> list[Finding]:
    cfn_type, props = CFN[res.type]
    out = []
    inputs = unsecret(res.inputs)
    auto = AUTONAMED.get(res.type)
    if auto and inputs.get(auto) is None and inputs.get(f"{auto}Prefix") is None:
        inputs = {**inputs, auto: f"{res.name}-0123abc"}
    for pulumi_path, cfn_path in props.items():
        if pulumi_path == "tags":
            continue  # tags: one rule set for all types (tag_findings), not per schema
        target_type, _, target_path = cfn_path.rpartition("#") if "#" in cfn_path else ("", "", cfn_path)
        target_type = target_type or cfn_type
        schema = cfn_schema(region, target_type)
        if schema is None:
            out.append(
                Finding(
                    "warning",
                    res.name,
                    res.type,
                    "(type)",
                    target_type,
                    f"CloudFormation has no {target_type} in {region}: not checked (is the "
                    "service offered in this Region?)",
                )
            )
            continue
        node = dict(cfn_property(schema, target_path))
        node.update(OVERRIDES.get((target_type, target_path), {}))
        for where, value in values_at(inputs, pulumi_path):
            report.checked_values += 1
            label = f"{where} (auto-named)" if pulumi_path == auto and res.inputs.get(auto) is None else where
            for problem in check_value(value, node, f"{target_type} {target_path}"):
                out.append(Finding("violation", res.name, res.type, label, value, problem))
    return out


def tag_findings(res: Resource, tags: dict[str, str]) -> list[Finding]:
    out = []
    if len(tags) > MAX_TAGS:
        out.append(
            Finding(
                "violation",
                res.name,
                res.type,
                "tags",
                f"{len(tags)} tags",
                f"AWS allows at most {MAX_TAGS} tags per resource (tag restrictions)",
            )
        )
    for key, value in sorted(tags.items()):
        if len(key) > MAX_TAG_KEY:
            out.append(
                Finding(
                    "violation",
                    res.name,
                    res.type,
                    f"tags[{key[:20]}...]",
                    key,
                    f"tag keys hold at most {MAX_TAG_KEY} characters (tag restrictions)",
                )
            )
        if key.lower().startswith("aws:"):
            out.append(
                Finding(
                    "violation",
                    res.name,
                    res.type,
                    f"tags[{key}]",
                    key,
                    "the aws: prefix is reserved for AWS's own tags (tag restrictions)",
                )
            )
        if value is not None and len(str(value)) > MAX_TAG_VALUE:
            out.append(
                Finding(
                    "violation",
                    res.name,
                    res.type,
                    f"tags[{key}]",
                    value,
                    f"tag values hold at most {MAX_TAG_VALUE} characters (tag restrictions)",
                )
            )
    return out


def documented_findings(res: Resource) -> list[Finding]:
    """The rules AWS documents for single resources that no CloudFormation schema carries."""
    out = []
    inputs = unsecret(res.inputs)
    if res.type == "aws:ec2/securityGroup:SecurityGroup":
        # Rule descriptions: EC2 API reference (IpRange, Ipv6Range, UserIdGroupPair,
        # PrefixListId Description): up to 255 characters of a-z, A-Z, 0-9, spaces and
        # ._-:/()#,@[]+=;{}!$* ("&" too for CIDR rules only). The group's own description
        # is the schema's GroupDescription pattern.
        for direction in ("ingress", "egress"):
            for where, value in values_at(inputs, f"{direction}[].description"):
                if isinstance(value, str) and not EC2_RULE_DESCRIPTION.fullmatch(value):
                    out.append(
                        Finding(
                            "violation",
                            res.name,
                            res.type,
                            where,
                            value,
                            "EC2 refuses it: security group rule descriptions are up to 255 characters "
                            "of a-zA-Z0-9 space ._-:/()#,@[]+=;{}!$* (EC2 API reference, "
                            "AuthorizeSecurityGroupIngress IpRange.Description)",
                        )
                    )
    if res.type in (
        "aws:ec2/securityGroupRule:SecurityGroupRule",
        "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
        "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule",
    ):
        value = inputs.get("description")
        if isinstance(value, str) and not EC2_RULE_DESCRIPTION.fullmatch(value):
            out.append(
                Finding(
                    "violation",
                    res.name,
                    res.type,
                    "description",
                    value,
                    "EC2 refuses it: security group rule descriptions are up to 255 characters "
                    "of a-zA-Z0-9 space ._-:/()#,@[]+=;{}!$* (EC2 API reference)",
                )
            )
    if res.type == "aws:ssm/parameter:Parameter":
        for key in ("value", "insecureValue"):
            value = inputs.get(key)
            if not isinstance(value, str):
                continue
            nested = SSM_NESTED.search(value)
            if nested:
                # SSM PutParameter API reference (botocore ssm service-2.json,
                # PutParameterRequest.Value): "You can't include values wrapped in double
                # brackets {{}} or {{ssm:parameter-name}} in a parameter value."
                out.append(
                    Finding(
                        "violation",
                        res.name,
                        res.type,
                        key,
                        nested.group(0),
                        "SSM refuses values wrapped in double brackets {{...}} (PutParameter API reference, Value)",
                    )
                )
            size = len(value.encode())
            tier = inputs.get("tier") or "Standard"
            # PutParameter API reference, Value: "Standard parameters have a value limit
            # of 4 KB. Advanced parameters have a value limit of 8 KB."
            limit = STANDARD_MAX if tier == "Standard" else ADVANCED_MAX
            if size > limit:
                out.append(
                    Finding(
                        "violation",
                        res.name,
                        res.type,
                        key,
                        f"{size} bytes",
                        f"SSM holds at most {limit} bytes in the {tier} tier (PutParameter API reference, Value)",
                    )
                )
            if key == "insecureValue":
                for n, line in _clear_passwords(value):
                    out.append(
                        Finding(
                            "violation",
                            res.name,
                            res.type,
                            f"{key} line {n}",
                            line,
                            "a String parameter holds a password in clear: only a placeholder "
                            "(infra/placeholders.py) may stand there; the secret is a SecureString",
                        )
                    )
    if res.type == "aws:ec2/instance:Instance":
        value = inputs.get("userData")
        if isinstance(value, str) and len(value.encode()) > USER_DATA_LIMIT:
            # EC2 User Guide, "Work with instance user data": "User data is limited to
            # 16 KB, in raw form, before it is base64-encoded."
            out.append(
                Finding(
                    "violation",
                    res.name,
                    res.type,
                    "userData",
                    f"{len(value.encode())} bytes",
                    f"EC2 user data is limited to {USER_DATA_LIMIT} bytes raw, before base64 "
                    "(EC2 User Guide, instance user data)",
                )
            )
    return out


def _clear_passwords(text: str) -> list[tuple[int, str]]:
    """FRR `neighbor X password Y` lines whose Y is not a placeholder: (line number, line)."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if (
            len(words) >= 4
            and words[0] == "neighbor"
            and words[2] == "password"
            and not placeholders.PATTERN.fullmatch(" ".join(words[3:]))
        ):
            out.append((n, " ".join(words[:3]) + " (hidden)"))
    return out


def _sg_rule_counts(inputs: dict[str, Any]) -> dict[tuple[str, str], int]:
    """(direction, family) -> rules as EC2 counts them: one per CIDR, one per referenced group
    in each family."""
    counts: Counter[tuple[str, str]] = Counter()
    for direction in ("ingress", "egress"):
        for rule in inputs.get(direction) or []:
            groups = (
                len(rule.get("securityGroups") or [])
                + (1 if rule.get("self") else 0)
                + len(rule.get("prefixListIds") or [])
            )
            counts[(direction, "IPv4")] += len(rule.get("cidrBlocks") or []) + groups
            counts[(direction, "IPv6")] += len(rule.get("ipv6CidrBlocks") or []) + groups
    return counts


def quota_findings(resources: list[Resource], quotas: dict[str, int]) -> list[Finding]:
    out = []
    # Routes per route table, per family. A gateway endpoint adds one prefix-list route to
    # each table it names (IPv4).
    routes: dict[tuple[str, str], list[str]] = defaultdict(list)
    for res in resources:
        if res.type == "aws:ec2/route:Route":
            family = "IPv6" if res.inputs.get("destinationIpv6CidrBlock") else "IPv4"
            routes[(str(res.inputs.get("routeTableId")), family)].append(res.name)
        elif res.type == "aws:ec2/vpcEndpoint:VpcEndpoint" and res.inputs.get("vpcEndpointType") == "Gateway":
            for table in unsecret(res.inputs.get("routeTableIds")) or []:
                routes[(str(table), "IPv4")].append(res.name)
    limit = quotas["routes-per-route-table"]
    table_names = {mock_id(r.name): r.name for r in resources if r.type == "aws:ec2/routeTable:RouteTable"}
    for (table, family), names in sorted(routes.items()):
        if len(names) > limit:
            out.append(
                Finding(
                    "violation",
                    table_names.get(table, table),
                    "aws:ec2/routeTable:RouteTable",
                    f"routes ({family})",
                    f"{len(names)} routes",
                    f"more than {limit} {family} routes in one table; raise the "
                    f"{QUOTA_NAMES['routes-per-route-table']} first (Amazon VPC quotas), then run "
                    f"with --quota routes-per-route-table=N",
                )
            )
    limit = quotas["rules-per-security-group"]
    for res in resources:
        if res.type != "aws:ec2/securityGroup:SecurityGroup":
            continue
        for (direction, family), n in sorted(_sg_rule_counts(unsecret(res.inputs)).items()):
            if n > limit:
                out.append(
                    Finding(
                        "violation",
                        res.name,
                        res.type,
                        f"{direction} ({family})",
                        f"{n} rules",
                        f"more than {limit} {direction} {family} rules in one group; raise the "
                        f"{QUOTA_NAMES['rules-per-security-group']} first (Amazon VPC quotas), then "
                        f"run with --quota rules-per-security-group=N",
                    )
                )
    eips = [r for r in resources if r.type == "aws:ec2/eip:Eip"]
    limit = quotas["eips-per-region"]
    if len(eips) >= limit:
        over = len(eips) > limit
        out.append(
            Finding(
                "warning",
                "stack",
                "aws:ec2/eip:Eip",
                "count",
                f"{len(eips)} EIPs",
                (
                    f"more than the {limit} the account may hold in the Region"
                    if over
                    else f"all {limit} the account may hold in the Region: any other EIP there makes the up "
                    f"fail part-way"
                )
                + f"; raise the {QUOTA_NAMES['eips-per-region']} before the up "
                "(Amazon VPC quotas, Elastic IP addresses per Region: 5)",
            )
        )
    return out


def check(resources: list[Resource], region: str, stack: str, quotas: dict[str, int] | None = None) -> Report:
    """Every finding for the captured resources of one stack."""
    quotas = {**QUOTAS, **(quotas or {})}
    providers = [r for r in resources if r.type == "pulumi:providers:aws"]
    default_tags: dict[str, str] = {}
    for p in providers:
        raw = unsecret(p.inputs.get("defaultTags"))
        if isinstance(raw, str):
            raw = json.loads(raw)
        default_tags.update((raw or {}).get("tags") or {})
    aws = [r for r in resources if r.type.startswith("aws:")]
    report = Report(stack=stack, region=region, resources=len(aws))
    unchecked: Counter[str] = Counter()
    for res in aws:
        if res.type not in CFN:
            unchecked[res.type] += 1
            report.findings += documented_findings(res)
            report.findings += tag_findings(res, _effective_tags(res, default_tags, "tags" in res.inputs))
            continue
        report.findings += schema_findings(res, region, report)
        report.findings += documented_findings(res)
        taggable = "tags" in CFN[res.type][1]
        report.findings += tag_findings(res, _effective_tags(res, default_tags, taggable))
    report.findings += quota_findings(aws, quotas)
    report.unchecked = {
        t: (n, NO_COUNTERPART.get(t, "no CloudFormation counterpart in the preflight's table"))
        for t, n in unchecked.items()
    }
    return report


# -- running the program ---------------------------------------------------------------------

# The program refuses to run without its secret BGP passwords. The preflight never sees the
# real ones: stand-ins that pass the program's and the agent's rules go in.
STAND_IN_PASSWORD = "preflight-stand-in-not-a-secret"
STAND_IN_ONPREM_PASSWORD = "preflight-onprem-stand-in-not-a-secret"


def capture(
    stack: str, raw: dict[str, Any] | None = None, stacks_dir: Path | None = None
) -> tuple[list[Resource], str]:
    """Run the program for `stack` under mocks; (resources, region).

    The config is the stack file's (in `stacks_dir`, default stacks/) or, when given,
    `raw` (the `overlay:*` values, namespace stripped).
    """
    import pulumi
    import yaml

    from infra.config import ConfigError, parse
    from infra.mockrun import run_program
    from infra.stackfile import STACKS_DIR, load_stack, overlay_values, stack_path

    try:
        if raw is None:
            directory = stacks_dir or STACKS_DIR
            cfg = load_stack(stack, directory)
            raw = overlay_values(yaml.safe_load(stack_path(stack, directory).read_text()), stack)
        else:
            cfg = parse(raw, stack)
    except ConfigError as exc:
        raise PreflightError(str(exc)) from None
    try:
        run = run_program(stack, password=STAND_IN_PASSWORD, raw=raw, onprem_password=STAND_IN_ONPREM_PASSWORD)
    except pulumi.RunError as exc:
        raise PreflightError(str(exc)) from None
    resources = [Resource(r.name, r.type, r.inputs) for r in run.resources if r.custom]
    return resources, cfg.region


def preflight(
    stack: str, raw: dict[str, Any] | None = None, quotas: dict[str, int] | None = None, stacks_dir: Path | None = None
) -> Report:
    resources, region = capture(stack, raw, stacks_dir)
    return check(resources, region, stack, quotas)


def _quota(text: str) -> tuple[str, int]:
    name, _, value = text.partition("=")
    if name not in QUOTAS or not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=N with NAME one of {', '.join(QUOTAS)}")
    return name, int(value)


def parser() -> argparse.ArgumentParser:
    parser = common_parser(
        "python -m infra.preflight",
        "Check every resource the program would create for STACK against AWS's CloudFormation "
        "schemas and documented rules (no credentials, no Pulumi CLI).",
    )
    parser.add_argument("stack", help="stack name (stacks/Pulumi.<stack>.yaml)")
    parser.add_argument(
        "--quota",
        action="append",
        type=_quota,
        default=[],
        metavar="NAME=N",
        help="the account's raised quota: " + ", ".join(f"{k} (default {v})" for k, v in QUOTAS.items()),
    )
    parser.add_argument("--stacks-dir", type=Path, default=None, help="where the stack files are (default stacks/)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        report = preflight(args.stack, quotas=dict(args.quota), stacks_dir=args.stacks_dir)
    except PreflightError as exc:
        print(f"preflight {args.stack}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for line in report.lines():
        print(line)
    return EXIT_FAILED if report.violations else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
