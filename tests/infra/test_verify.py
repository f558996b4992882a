"""`python -m infra.verify` against a local moto server (real HTTP), seeded as built, then seeded wrong."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request

import boto3
import pytest

from infra.components.instance_role import ASSUME_EC2
from infra.iam import SSM_CORE, role_policy
from infra.parameters import build_parameters, onprem_password_name, password_name
from infra.plan import build_plan
from infra.publish import put_parameters
from infra.render import render_frr
from infra.rules import members_ingress, onprem_ingress, router_for_az
from infra.stackfile import REPO_ROOT, load_stack

pytestmark = pytest.mark.aws
STACK = "test-use2"
ACCOUNT = "123456789012"  # moto's default account
CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing"}


@pytest.fixture(scope="module")
def endpoint(moto_endpoint):
    # AWS's managed policies (AmazonSSMManagedInstanceCore) exist in moto only when asked
    # for; the server runs in this process and reads this at each reset.
    saved = os.environ.get("MOTO_IAM_LOAD_MANAGED_POLICIES")
    os.environ["MOTO_IAM_LOAD_MANAGED_POLICIES"] = "true"
    yield moto_endpoint
    if saved is None:
        os.environ.pop("MOTO_IAM_LOAD_MANAGED_POLICIES", None)
    else:
        os.environ["MOTO_IAM_LOAD_MANAGED_POLICIES"] = saved


def _tags(plan, kind, name):
    tags = {
        "project": "overlay",
        "stack": plan.stack,
        "environment": plan.environment,
        "managed-by": "pulumi",
        "Name": f"{plan.stack}-{name}",
    }
    return [{"ResourceType": kind, "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]


def _permissions(rules, group_id):
    out = []
    for r in rules:
        perm = {
            "IpProtocol": r.protocol,
            "FromPort": r.from_port,
            "ToPort": r.to_port,
            "IpRanges": [{"CidrIp": c} for c in r.cidrs_v4],
            "Ipv6Ranges": [{"CidrIpv6": c} for c in r.cidrs_v6],
        }
        if r.self_:
            perm["UserIdGroupPairs"] = [{"GroupId": group_id}]
        out.append(perm)
    return out


def seed(endpoint, plan, *, wrong: bool) -> None:
    """What the program builds (the parts verify reads); `wrong` plants six faults."""
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")).close()
    ec2 = boto3.client("ec2", region_name=plan.region, endpoint_url=endpoint, **_lower(CREDS))
    ssm = boto3.client("ssm", region_name=plan.region, endpoint_url=endpoint, **_lower(CREDS))
    vpc = ec2.create_vpc(CidrBlock=str(plan.vpc_cidr), AmazonProvidedIpv6CidrBlock=plan.ipv6)["Vpc"]
    v6 = vpc["Ipv6CidrBlockAssociationSet"][0]["Ipv6CidrBlock"] if plan.ipv6 else None
    subnets = {
        (s.az, s.kind): ec2.create_subnet(VpcId=vpc["VpcId"], CidrBlock=str(s.cidr), AvailabilityZone=s.az)["Subnet"][
            "SubnetId"
        ]
        for s in plan.subnets
    }
    groups = {}
    for name, rules in (("members", members_ingress(plan, v6)), ("onprem", onprem_ingress(plan))):
        if not rules:
            continue
        gid = ec2.create_security_group(
            GroupName=f"{plan.stack}-{name}",
            Description=name,
            VpcId=vpc["VpcId"],
            TagSpecifications=_tags(plan, "security-group", name),
        )["GroupId"]
        perms = _permissions(rules, gid)
        if wrong and name == "members":
            perms.append({"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]})
        ec2.authorize_security_group_ingress(GroupId=gid, IpPermissions=perms)
        groups[name] = gid
    image = ec2.describe_images()["Images"][0]
    enis = {}
    for inst in plan.instances:
        router = inst in plan.routers
        sgs = [groups["members"]] + ([groups["onprem"]] if router and "onprem" in groups else [])
        eni = ec2.create_network_interface(
            SubnetId=subnets[(inst.az, "public" if router else "private")],
            PrivateIpAddress=str(inst.private_ip),
            Groups=sgs,
            TagSpecifications=_tags(plan, "network-interface", inst.name),
        )["NetworkInterface"]
        enis[inst.name] = eni["NetworkInterfaceId"]
        if not (wrong and inst.name == "host-1"):
            ec2.modify_network_interface_attribute(
                NetworkInterfaceId=eni["NetworkInterfaceId"], SourceDestCheck={"Value": False}
            )
        tokens = "optional" if wrong and inst.name == "router-1" else "required"
        ec2.run_instances(
            ImageId=image["ImageId"],
            InstanceType=inst.instance_type,
            MinCount=1,
            MaxCount=1,
            NetworkInterfaces=[{"DeviceIndex": 0, "NetworkInterfaceId": eni["NetworkInterfaceId"]}],
            MetadataOptions={"HttpTokens": tokens, "HttpPutResponseHopLimit": 1},
            BlockDeviceMappings=[
                {
                    "DeviceName": image.get("RootDeviceName", "/dev/sda1"),
                    "Ebs": {"Encrypted": True, "VolumeType": "gp3", "VolumeSize": 20},
                }
            ],
            TagSpecifications=_tags(plan, "instance", inst.name),
        )
    for az in plan.azs:
        for kind in ("public", "private"):
            table = ec2.create_route_table(
                VpcId=vpc["VpcId"], TagSpecifications=_tags(plan, "route-table", f"{kind}-{az}")
            )["RouteTable"]["RouteTableId"]
            target = enis[router_for_az(plan, az)]
            for pool in plan.pools_v4:
                ec2.create_route(RouteTableId=table, DestinationCidrBlock=str(pool), NetworkInterfaceId=target)
            for pool in plan.pools_v6:
                if wrong and (kind, az) == ("private", plan.azs[-1]):
                    continue
                ec2.create_route(RouteTableId=table, DestinationIpv6CidrBlock=str(pool), NetworkInterfaceId=target)
    kms = boto3.client("kms", region_name=plan.region, endpoint_url=endpoint, **_lower(CREDS))
    key = kms.create_key(Description="bgp passwords")["KeyMetadata"]
    params = build_parameters(plan, lambda n: render_frr(plan, n), vpc_ipv6=v6)
    put_parameters(ssm, params, "seeded-password", onprem_password="seeded-onprem-password", key_id=key["Arn"])
    iam_client = boto3.client("iam", region_name=plan.region, endpoint_url=endpoint, **_lower(CREDS))
    for kind in ("routers", "hosts"):
        role = iam_client.create_role(
            RoleName=f"{plan.stack}-{kind}",
            Path=f"/overlay/{plan.stack}/",
            AssumeRolePolicyDocument=ASSUME_EC2,
            Tags=[{"Key": "overlay-role", "Value": kind[:-1]}],
        )["Role"]
        # The on-prem password is the routers' (review F10); `wrong` gives it to the hosts too.
        secrets = [password_name(plan)] + ([onprem_password_name(plan)] if kind == "routers" or wrong else [])
        iam_client.put_role_policy(
            RoleName=role["RoleName"],
            PolicyName=f"{kind}-read",
            PolicyDocument=role_policy(
                region=plan.region,
                account=ACCOUNT,
                parameter_root=f"/overlay/{plan.stack}",
                secrets=secrets,
                key_arn=key["Arn"],
                object_arn="arn:aws:s3:::bucket/agent/x",
            ),
        )
    # Another stack's role with the broad managed policy: verify looks only at its own path.
    iam_client.create_role(RoleName="someone-else", Path="/other/", AssumeRolePolicyDocument=ASSUME_EC2)
    iam_client.attach_role_policy(RoleName="someone-else", PolicyArn=SSM_CORE)
    if wrong:
        iam_client.attach_role_policy(RoleName=f"{plan.stack}-hosts", PolicyArn=SSM_CORE)
        iam_client.put_role_policy(
            RoleName=f"{plan.stack}-routers",
            PolicyName="debugging",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Sid": "Debug", "Effect": "Allow", "Action": "ssm:GetParameter*", "Resource": "*"}],
                }
            ),
        )
    if wrong:
        ssm.put_parameter(
            Name=f"/overlay/{plan.stack}/instances/router-1/tunnels/host-2", Value="{}", Type="String", Overwrite=True
        )
        ssm.delete_parameter(Name=f"/overlay/{plan.stack}/instances/host-2/agent")


def _lower(creds):
    return {k.lower(): v for k, v in creds.items()}


def verify(endpoint) -> subprocess.CompletedProcess:
    env = {**os.environ, **CREDS, "AWS_ENDPOINT_URL": endpoint}
    return subprocess.run(
        [sys.executable, "-m", "infra.verify", STACK],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def plan():
    return build_plan(load_stack(STACK))


def test_seeded_right_all_pass(endpoint, plan):
    seed(endpoint, plan, wrong=False)
    result = verify(endpoint)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["result", "check", "subject", "detail"]
    rows = [line for line in lines[2:] if line.startswith(("PASS", "FAIL"))]
    # Per instance: address, source/dest, on its ENI, IMDSv2, no key, root volume; a route
    # row per table; two groups; four parameter rows (set, SecureString, the two passwords'
    # key); a row per instance role.
    assert len(rows) == 6 * len(plan.instances) + 2 * len(plan.azs) + 2 + 4 + 2
    assert all(r.startswith("PASS") for r in rows)
    assert f"{len(rows)} passed, 0 failed" in result.stdout


def test_seeded_wrong_names_each_failure(endpoint, plan):
    seed(endpoint, plan, wrong=True)
    result = verify(endpoint)
    assert result.returncode == 1, result.stdout + result.stderr
    failed = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    text = "\n".join(failed)
    assert len(failed) == 7, text
    pool6 = str(plan.pools_v6[0])
    assert any(
        "pool routes" in f and f"private-{plan.azs[-1]}" in f and f"{pool6} -> nothing (want router-1)" in f
        for f in failed
    ), text
    assert any("eni source/dest check off" in f and "host-1" in f for f in failed), text
    assert any("imdsv2 required" in f and "router-1" in f and "HttpTokens=optional" in f for f in failed), text
    assert any("security group rules" in f and "unexpected: tcp 22-22 from 0.0.0.0/0" in f for f in failed), text
    assert any(
        "instance role policies" in f and f"{STACK}-hosts" in f and f"managed policy attached: {SSM_CORE}" in f
        for f in failed
    ), text
    # A docker host's role that may read the datacenter key (review F10).
    assert any(
        "instance role policies" in f
        and f"{STACK}-hosts" in f
        and f"hosts-read: Passwords: reads {onprem_password_name(plan)} (routers only)" in f
        for f in failed
    ), text
    assert any(
        "instance role policies" in f and f"{STACK}-routers" in f and "debugging: Debug: ssm:GetParameter* on *" in f
        for f in failed
    ), text
    params = next(f for f in failed if "parameters equal the plan" in f)
    assert "host-2/agent missing" in params and "router-1/tunnels/host-2 differs from the plan" in params
    assert "7 failed" in result.stdout


def test_unknown_stack_is_one_line_error():
    result = subprocess.run(
        [sys.executable, "-m", "infra.verify", "nope"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "no such stack file" in result.stderr
