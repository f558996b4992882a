"""The Pulumi program under mocks, every stack, resource by resource: what `pulumi up` would ask AWS for."""

from __future__ import annotations

import base64
import contextvars
import dataclasses
import ipaddress
import json
import zlib

import pulumi
import pytest
import yaml
from pulumi.runtime import settings

from infra import image_recipe
from infra.config import ConfigError
from infra.iam import policy_problems, reads_parameter

from infra.parameters import SSM_NESTED, build_parameters, onprem_password_name, password_name, route_server_doc
from infra.plan import build_plan
from infra.plan.report import to_mermaid
from infra.program import architecture, read_config
from infra.render import ONPREM_PASSWORD_PLACEHOLDER, PASSWORD_PLACEHOLDER, render_frr
from infra.rules import EC2_DESCRIPTION, EC2_RULE_DESCRIPTION
from infra.stackfile import REPO_ROOT, list_stacks, load_stack, stack_path
from tests.infra.mockrun import (
    ACCOUNT,
    AMI,
    ONPREM_PASSWORD,
    PASSWORD,
    VPC_IPV6,
    RecordingMocks,
    cli_config,
    route_server_endpoint_address,
    run_program,
)
from tests.support.pulumi_project import check_stack

STACKS = list_stacks()
SECRET_SIG = "4dabf18193072939515e22adb298388d"  # pulumi's marker for a secret value
ENI = "aws:ec2/networkInterface:NetworkInterface"
INSTANCE = "aws:ec2/instance:Instance"
PARAM = "aws:ssm/parameter:Parameter"
ROUTE = "aws:ec2/route:Route"
SG = "aws:ec2/securityGroup:SecurityGroup"
EIP = "aws:ec2/eip:Eip"
IB_INFRA = "aws:imagebuilder/infrastructureConfiguration:InfrastructureConfiguration"


def image_ami(arch: str) -> str:
    """The AMI the mocks' Image Builder image of `arch` produced (infra/mockrun.py)."""
    return f"ami-{zlib.crc32(f'image-{arch}-image'.encode()):08x}"


@pytest.fixture(scope="module", params=STACKS)
def run(request):
    return run_program(request.param)


@pytest.fixture(scope="module")
def plan(run):
    return build_plan(load_stack(run.stack))


def eni_of(run, name):
    return run.named(f"{name}-eni")


def test_one_provider_with_region_and_default_tags_used_by_every_resource(run, plan):
    providers = run.of_type("pulumi:providers:aws")
    assert len(providers) == 1
    p = providers[0]
    assert p.inputs["region"] == plan.region
    tags = p.inputs["defaultTags"]
    tags = json.loads(tags) if isinstance(tags, str) else tags
    assert tags == {
        "tags": {"project": "overlay", "stack": run.stack, "environment": plan.environment, "managed-by": "pulumi"}
    }
    custom = [r for r in run.resources if r.custom and r is not p]
    assert custom and all(r.provider.startswith(p.urn + "::") for r in custom), [
        r.name for r in custom if not r.provider.startswith(p.urn)
    ]


def test_components_parent_their_children_and_register_outputs(run, plan):
    components = {r.urn: r for r in run.resources if not r.custom}
    # The pool routes are the program's in static failover mode, the route server's otherwise.
    routes = "overlay:network:RouteServer" if plan.vpc_failover == "routeServer" else "overlay:network:PoolRoutes"
    assert {c.type for c in components.values()} >= {
        "overlay:network:Network",
        "overlay:security:SecurityGroups",
        "overlay:agent:AgentPackage",
        "overlay:iam:InstanceRole",
        "overlay:parameters:BgpPassword",
        routes,
        "overlay:instances:RoutingInstance",
        "overlay:instances:DockerHost",
    }
    for r in run.resources:
        if r.type.startswith("pulumi:providers:") or not r.custom:
            continue
        parent = components.get(r.parent)
        assert parent is not None, f"{r.type} {r.name} is not inside a component"
        assert r.name.startswith(parent.name + "-"), (r.name, parent.name)
    assert all(c.outputs for c in components.values()), [c.name for c in components.values() if not c.outputs]


def test_dual_stack_vpc_subnets_and_gateways(run, plan):
    (vpc,) = run.of_type("aws:ec2/vpc:Vpc")
    assert vpc.inputs["cidrBlock"] == str(plan.vpc_cidr)
    assert vpc.inputs["assignGeneratedIpv6CidrBlock"] is plan.ipv6
    subnets = {(s.inputs["availabilityZone"], s.name.split("-")[1]): s for s in run.of_type("aws:ec2/subnet:Subnet")}
    assert len(subnets) == len(plan.subnets)
    for s in plan.subnets:
        got = subnets[(s.az, s.kind)].inputs
        assert got["cidrBlock"] == str(s.cidr) and got["mapPublicIpOnLaunch"] is False
        if plan.ipv6:
            want = list(ipaddress.ip_network(VPC_IPV6).subnets(new_prefix=64))[s.ipv6_netnum]
            assert got["ipv6CidrBlock"] == str(want)
    assert len(run.of_type("aws:ec2/internetGateway:InternetGateway")) == 1
    assert len(run.of_type("aws:ec2/routeTable:RouteTable")) == 2 * len(plan.azs)
    assert len(run.of_type("aws:ec2/natGateway:NatGateway")) == len(plan.azs)


def test_every_router_and_host_eni_is_fixed_with_source_dest_check_off(run, plan):
    enis = run.of_type(ENI)
    assert len(enis) == len(plan.instances)
    cfg = load_stack(run.stack)
    for inst in plan.instances:
        kind = "public" if inst in plan.routers else "private"
        eni = eni_of(run, inst.name).inputs
        assert eni["sourceDestCheck"] is False
        assert eni["privateIps"] == [str(inst.private_ip)]
        assert eni["subnetId"] == f"net-{kind}-{inst.az}-id"
        want_sgs = (
            ["sg-members-id"]
            + (["sg-onprem-id"] if kind == "public" and plan.onprem else [])
            + (["sg-route-server-id"] if kind == "public" and plan.vpc_failover == "routeServer" else [])
        )
        assert eni["securityGroups"] == want_sgs
        assert eni.get("ipv6AddressCount") == (1 if plan.ipv6 else None)
        delegated = kind == "private" and cfg.host_ipv6_delegation
        assert eni.get("ipv6PrefixCount") == (1 if delegated else None)


def test_instances_imdsv2_encrypted_gp3_kept_eni_and_no_forced_replacement(run, plan):
    instances = run.of_type(INSTANCE)
    assert len(instances) == len(plan.instances)
    for inst in plan.instances:
        rec = run.named(f"{inst.name}-instance")
        i = rec.inputs
        assert i["metadataOptions"]["httpTokens"] == "required"
        assert i["metadataOptions"]["httpPutResponseHopLimit"] == 1
        assert i["rootBlockDevice"]["encrypted"] is True and i["rootBlockDevice"]["volumeType"] == "gp3"
        assert i["primaryNetworkInterface"] == {
            "networkInterfaceId": f"{inst.name}-eni-id",
            "deleteOnTermination": False,
        }
        assert i["userDataReplaceOnChange"] is False
        assert set(rec.ignore_changes) >= {"ami", "userData"}
        # The stack's own image (infra/components/image.py), not Debian's AMI.
        assert i["ami"] == image_ami("x86_64") and i["instanceType"] == inst.instance_type
        kind = "routers" if inst in plan.routers else "hosts"
        assert i["iamInstanceProfile"] == f"{kind}-profile-7a8b"
        assert i["userData"].startswith("#cloud-config")
        assert "keyName" not in i  # no SSH key: access is through SSM
        # Boots after its agent and frr parameters exist; tunnels are no dependency.
        assert {run.by_urn(u).name for u in rec.dependencies} >= {f"{inst.name}-agent", f"{inst.name}-frr"}
        assert not [u for u in rec.dependencies if "-tunnels-" in u]


def test_every_router_has_an_eip_and_nothing_else_does(run, plan):
    eips = {e.name: e.inputs for e in run.of_type(EIP) if not e.name.startswith("net-nat-")}
    want = {f"{r.name}-eip" for r in plan.routers}
    assert set(eips) == want
    igw = run.named("net-igw").urn
    for r in plan.routers:
        assert eips[f"{r.name}-eip"]["networkInterface"] == f"{r.name}-eni-id"
        # EC2 associates an EIP only once the VPC's internet gateway is attached.
        assert igw in run.named(f"{r.name}-eip").dependencies
    assert all(igw in n.dependencies for n in run.of_type("aws:ec2/natGateway:NatGateway"))


def test_prod_protects_router_enis_and_eips_test_protects_nothing(run, plan):
    protected = {r.name for r in run.resources if r.protect}
    if plan.environment == "prod":
        assert protected == {f"{r.name}-eni" for r in plan.routers} | {f"{r.name}-eip" for r in plan.routers}
    else:
        assert protected == set()
        (bucket,) = run.of_type("aws:s3/bucket:Bucket")
        assert bucket.inputs["forceDestroy"] is True


def _rules(sg):
    out = set()
    for r in sg.inputs.get("ingress", []):
        out.add(
            (
                r["protocol"],
                r["fromPort"],
                r["toPort"],
                tuple(r.get("cidrBlocks", ())),
                tuple(r.get("ipv6CidrBlocks", ())),
                bool(r.get("self")),
            )
        )
    return out


def test_security_group_rules_exactly(run, plan):
    sgs = {s.name: s for s in run.of_type(SG)}
    vpc4 = (str(plan.vpc_cidr),)
    vpc6 = (VPC_IPV6,) if plan.ipv6 else ()
    members = {
        ("47", 0, 0, (), (), True),
        ("icmp", 3, 4, vpc4, (), False),
        ("icmp", -1, -1, vpc4, (), False),
    }
    if plan.vpc_failover == "routeServer":
        # BGP and BFD only from the route server endpoints: the VPC-wide rules leave them out.
        members |= {
            ("tcp", 0, 178, vpc4, vpc6, False),
            ("tcp", 180, 65535, vpc4, vpc6, False),
            ("udp", 0, 3783, vpc4, vpc6, False),
            ("udp", 3785, 4783, vpc4, vpc6, False),
            ("udp", 4785, 65535, vpc4, vpc6, False),
        }
    else:
        members |= {("tcp", 0, 65535, vpc4, vpc6, False), ("udp", 0, 65535, vpc4, vpc6, False)}
    if plan.ipv6:
        members |= {("icmpv6", 2, 0, (), vpc6, False), ("icmpv6", -1, -1, (), vpc6, False)}
    assert _rules(sgs["sg-members"]) == members
    if plan.onprem:
        assert _rules(sgs["sg-onprem"]) == {("47", 0, 0, (f"{o.address}/32",), (), False) for o in plan.onprem} | {
            ("icmp", 3, 4, ("0.0.0.0/0",), (), False)
        }
    else:
        assert "sg-onprem" not in sgs
    for sg in sgs.values():
        for rule in _rules(sg):
            proto, lo, hi, v4, v6, _ = rule
            # Open to the world: only the PMTU signal on the routers' internet path.
            if "0.0.0.0/0" in v4 or "::/0" in v6:
                assert (proto, lo, hi) == ("icmp", 3, 4) and sg.name == "sg-onprem"
            # No SSH, and GRE only from members or the declared peers.
            assert not (proto in ("tcp", "-1") and lo <= 22 <= hi and not set(v4) <= set(vpc4))
            if proto == "47":
                assert rule[5] or all(c in {f"{o.address}/32" for o in plan.onprem} for c in v4)


def test_security_group_and_rule_descriptions_are_what_ec2_accepts(run):
    # Review F1: EC2 refuses an apostrophe (any character outside its set) at `pulumi up`.
    for sg in run.of_type(SG):
        assert EC2_DESCRIPTION.fullmatch(sg.inputs["description"]), (sg.name, sg.inputs["description"])
        for rule in sg.inputs.get("ingress", []) + sg.inputs.get("egress", []):
            assert EC2_RULE_DESCRIPTION.fullmatch(rule["description"]), (sg.name, rule["description"])


def test_no_parameter_value_has_what_ssm_refuses(run):
    # Review F2: SSM refuses "{{...}}" in a parameter value (the old password placeholder).
    for p in run.of_type(PARAM):
        value = p.inputs.get("insecureValue")
        if value is not None:
            assert not SSM_NESTED.search(value), (p.name, SSM_NESTED.search(value).group(0))


def test_pools_routed_to_the_router_in_each_az(run, plan):
    if plan.vpc_failover == "routeServer":
        assert not [r for r in run.of_type(ROUTE) if "networkInterfaceId" in r.inputs]
        return  # the route server writes them: test_route_server_*
    routes = run.of_type(ROUTE)
    routers_by_az = {}
    for r in plan.routers:
        routers_by_az.setdefault(r.az, r.name)
    for i, az in enumerate(plan.azs):
        target = routers_by_az.get(az) or plan.routers[i % len(plan.routers)].name
        for kind in ("public", "private"):
            table = f"net-{kind}-{az}-id"
            got = {
                (x.inputs.get("destinationCidrBlock") or x.inputs.get("destinationIpv6CidrBlock")): x.inputs.get(
                    "networkInterfaceId"
                )
                for x in routes
                if x.inputs["routeTableId"] == table and "networkInterfaceId" in x.inputs
            }
            assert got == {str(p): f"{target}-eni-id" for p in plan.pools_v4 + plan.pools_v6}
            defaults = {
                x.inputs.get("destinationCidrBlock") or x.inputs.get("destinationIpv6CidrBlock")
                for x in routes
                if x.inputs["routeTableId"] == table and "networkInterfaceId" not in x.inputs
            }
            assert defaults == ({"0.0.0.0/0", "::/0"} if plan.ipv6 else {"0.0.0.0/0"})


def route_server_docs(run, plan):
    """Each router's route-server parameter as the program computes it from the endpoints' addresses."""
    if plan.vpc_failover != "routeServer":
        return None
    routers = {r.name: r for r in plan.routers}
    return lambda name: (
        route_server_doc(plan, [route_server_endpoint_address(f"route-server-{routers[name].az}")])
        if name in routers
        else None
    )


def test_parameters_equal_the_plan(run, plan):
    # Routers of IPv6 stacks carry the VPC's IPv6 block (AWS's, the mocks' VPC_IPV6) in `vpc`.
    want = build_parameters(
        plan, lambda name: render_frr(plan, name), route_server=route_server_docs(run, plan), vpc_ipv6=VPC_IPV6
    )
    got = {p.inputs["name"]: p.inputs for p in run.of_type(PARAM)}
    assert set(got) == set(want)
    for name, p in want.items():
        assert got[name]["type"] == p.type
        if p.type == "String":
            assert (got[name]["insecureValue"], got[name]["tier"]) == (p.value, p.tier), name
            assert "value" not in got[name]
    # The password arrives as a Pulumi secret (encrypted in state), not as a plain string.
    secret = got[password_name(plan)]["value"]
    assert secret == {SECRET_SIG: "1b47061264138c4ac30d75fd1eb44270", "value": PASSWORD}
    assert "insecureValue" not in got[password_name(plan)]
    # Each instance's revision is written after the rest of its set.
    for inst in plan.instances:
        rev = run.named(f"{inst.name}-revision")
        others = {p.urn for p in run.of_type(PARAM) if p.parent == rev.parent and p is not rev}
        # A router's revision in routeServer mode also hashes its endpoints' addresses, and
        # in an IPv6 stack the VPC's block.
        endpoints = {e.urn for e in run.of_type("aws:vpc/routeServerEndpoint:RouteServerEndpoint")}
        vpcs = {v.urn for v in run.of_type("aws:ec2/vpc:Vpc")}
        assert others <= set(rev.dependencies) <= others | endpoints | vpcs


def test_no_secret_outside_the_secure_string(run, plan):
    holders, onprem_holders = [], []
    for r in run.resources:
        text = json.dumps(r.inputs, default=str)
        if PASSWORD in text:
            holders.append(r.name)
        if ONPREM_PASSWORD in text:
            onprem_holders.append(r.name)
    assert holders == ["bgp-password-parameter"]
    # Every stack in stacks/ has on-prem peers: their password is its own SecureString.
    assert plan.onprem and onprem_holders == ["bgp-password-parameter-onprem-bgp-password"]
    (p,) = [r for r in run.of_type(PARAM) if r.inputs["name"] == onprem_password_name(plan)]
    (q,) = [r for r in run.of_type(PARAM) if r.inputs["name"] == password_name(plan)]
    assert p.inputs["type"] == "SecureString" and p.inputs["keyId"] == q.inputs["keyId"]


def test_onprem_sessions_have_their_own_password_only_routers_read(run, plan):
    # Review F10: the datacenter sessions' key is in no docker host's config, parameter set
    # or IAM grant; routers' ONPREM peer group and the datacenter side carry its placeholder.
    frr = {r.inputs["name"]: r.inputs["insecureValue"] for r in run.of_type(PARAM) if r.inputs["name"].endswith("/frr")}
    for name, text in frr.items():
        if "/router-" in name:
            assert f"neighbor ONPREM password {ONPREM_PASSWORD_PLACEHOLDER}" in text
            assert f"neighbor HOSTS password {PASSWORD_PLACEHOLDER}" in text
        else:
            assert ONPREM_PASSWORD_PLACEHOLDER not in text and "ONPREM" not in text
    for text in run.outputs["onpremFrr"].values():
        assert f"password {ONPREM_PASSWORD_PLACEHOLDER}" in text and PASSWORD_PLACEHOLDER not in text
    policies = {p.name: json.loads(p.inputs["policy"]) for p in run.of_type("aws:iam/rolePolicy:RolePolicy")}
    onprem_arn = f"arn:aws:ssm:{plan.region}:{ACCOUNT}:parameter{onprem_password_name(plan)}"
    for name, doc in policies.items():
        stmts = {s["Sid"]: s for s in doc["Statement"]}
        if name.startswith("routers"):
            assert onprem_arn in stmts["Passwords"]["Resource"]
        else:
            assert onprem_arn not in json.dumps(doc) and not reads_parameter(doc, onprem_password_name(plan))
    (key,) = run.of_type("aws:kms/key:Key")
    for stmt in json.loads(key.inputs["policy"])["Statement"][1:]:
        arns = stmt["Condition"]["ForAnyValue:StringEquals"]["kms:EncryptionContext:PARAMETER_ARN"]
        assert (onprem_arn in arns) == ("routers" in stmt["Principal"]["AWS"]), stmt
    tags = {r.name: r.inputs.get("tags") for r in run.of_type("aws:iam/role:Role")}
    assert tags == {
        "routers-role": {"overlay-role": "router"},
        "hosts-role": {"overlay-role": "host"},
        "image-x86_64-build-role": {"overlay-role": "image-build"},
    }


def test_onprem_password_required_valid_and_its_own():
    with pytest.raises(
        pulumi.RunError,
        match=r"^stack lab: overlay:onpremBgpPassword = None: is required for the "
        r"on-prem peers \(dc1\): pulumi config set --secret ",
    ):
        run_program("lab", onprem_password=None)
    with pytest.raises(
        pulumi.RunError,
        match=r"overlay:onpremBgpPassword = '\(hidden\)': must differ from "
        r"overlay:bgpPassword",
    ):
        run_program("lab", onprem_password=PASSWORD)
    with pytest.raises(pulumi.RunError) as exc:
        run_program("lab", onprem_password="has space")
    assert "overlay:onpremBgpPassword = '(hidden)': unusable as a TCP MD5 key (" in str(exc.value)
    assert "has space" not in str(exc.value)
    config, keys = cli_config("lab")
    with pytest.raises(pulumi.RunError, match=r"overlay:onpremBgpPassword = '\(hidden\)': must be a secret"):
        run_program("lab", secret_keys=[k for k in keys if k != "overlay:onpremBgpPassword"])
    # Without on-prem peers none is needed, and none is published.
    run = run_program("lab", {"onprem": []}, onprem_password=None)
    assert not [r for r in run.of_type(PARAM) if r.inputs["name"].endswith("/onprem-bgp-password")]
    for i in run.of_type(INSTANCE):
        assert PASSWORD not in i.inputs["userData"]


def test_instance_roles_read_only_their_stack_and_the_agent_package(run, plan):
    # Review F9: no AmazonSSMManagedInstanceCore (ssm:GetParameter on "*"), nothing managed.
    assert not run.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
    policies = {p.name: json.loads(p.inputs["policy"]) for p in run.of_type("aws:iam/rolePolicy:RolePolicy")}
    archs = sorted({architecture(i.instance_type) for i in plan.instances})
    build = {f"image-{a}-build" for a in archs}
    assert set(policies) == {"routers-read", "hosts-read"} | build
    for name in build:  # the image build instance's: reads no parameter, decrypts nothing
        assert policy_problems(policies[name]) == [] and not reads_parameter(policies.pop(name), password_name(plan))
    (key,) = run.of_type("aws:kms/key:Key")
    key_arn = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/bgp-password-key-0f1e2d"
    for name, doc in policies.items():
        assert policy_problems(doc) == [], name
        stmts = {s["Sid"]: s for s in doc["Statement"]}
        arn = f"arn:aws:ssm:{plan.region}:{ACCOUNT}:parameter/overlay/{run.stack}/instances"
        assert stmts["StackParameters"]["Resource"] == [arn, f"{arn}/*"]
        assert all(a.startswith("ssm:Get") for a in stmts["StackParameters"]["Action"])
        # Routers read the on-prem sessions' password too; docker hosts never (review F10).
        onprem = [onprem_password_name(plan)] if name.startswith("routers") and plan.onprem else []
        assert stmts["Passwords"]["Resource"] == [
            f"arn:aws:ssm:{plan.region}:{ACCOUNT}:parameter{n}" for n in [password_name(plan), *onprem]
        ]
        assert stmts["PasswordKey"] == {
            "Sid": "PasswordKey",
            "Effect": "Allow",
            "Action": "kms:Decrypt",
            "Resource": key_arn,
            "Condition": {"StringEquals": {"kms:ViaService": f"ssm.{plan.region}.amazonaws.com"}},
        }
        assert stmts["AgentPackage"] == {
            "Sid": "AgentPackage",
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": "arn:aws:s3:::agent-bucket-1a2b3c/agent/overlay-agent-bundle.tar",
        }
        assert set(stmts["SessionManager"]["Action"]) == {
            "ssm:UpdateInstanceInformation",
            "ssmmessages:CreateControlChannel",
            "ssmmessages:CreateDataChannel",
            "ssmmessages:OpenControlChannel",
            "ssmmessages:OpenDataChannel",
        }
        assert all(a.startswith("ec2messages:") for a in stmts["RunCommand"]["Action"])
        assert set(stmts) == {
            "StackParameters",
            "Passwords",
            "PasswordKey",
            "AgentPackage",
            "SessionManager",
            "RunCommand",
        }
    for role in run.of_type("aws:iam/role:Role"):
        assert role.inputs["path"] == f"/overlay/{run.stack}/"


def test_password_key_decrypts_for_this_stacks_roles_through_ssm_only(run, plan):
    (key,) = run.of_type("aws:kms/key:Key")
    assert key.inputs["enableKeyRotation"] is True
    doc = json.loads(key.inputs["policy"])
    admin, *readers = doc["Statement"]
    assert admin["Principal"] == {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}
    assert {r["Principal"]["AWS"] for r in readers} == {
        f"arn:aws:iam::{ACCOUNT}:role/{k}-role-5e6f" for k in ("routers", "hosts")
    }
    for r in readers:
        assert r["Action"] == "kms:Decrypt"
        assert r["Condition"]["StringEquals"] == {"kms:ViaService": f"ssm.{plan.region}.amazonaws.com"}
        onprem = [onprem_password_name(plan)] if "routers" in r["Principal"]["AWS"] and plan.onprem else []
        assert r["Condition"]["ForAnyValue:StringEquals"]["kms:EncryptionContext:PARAMETER_ARN"] == [
            f"arn:aws:ssm:{plan.region}:{ACCOUNT}:parameter{n}" for n in [password_name(plan), *onprem]
        ]
    params = [p for p in run.of_type(PARAM) if p.inputs["type"] == "SecureString"]
    assert len(params) == 1 + bool(plan.onprem)
    assert all(p.inputs["keyId"] == key_arn_of(key) for p in params)


def key_arn_of(key):
    return f"arn:aws:kms:us-east-1:{ACCOUNT}:key/{key.name}-0f1e2d"


def test_agent_bucket_private_encrypted_with_the_package(run):
    (pab,) = run.of_type("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")
    assert all(
        pab.inputs[k] is True
        for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    )
    (sse,) = run.of_type("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration")
    assert sse.inputs["rules"][0]["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == "aws:kms"
    (own,) = run.of_type("aws:s3/bucketOwnershipControls:BucketOwnershipControls")
    assert own.inputs["rule"]["objectOwnership"] == "BucketOwnerEnforced"
    (policy,) = run.of_type("aws:s3/bucketPolicy:BucketPolicy")
    (stmt,) = json.loads(policy.inputs["policy"])["Statement"]
    assert stmt["Effect"] == "Deny" and stmt["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    (obj,) = run.of_type("aws:s3/bucketObjectv2:BucketObjectv2")
    assert obj.inputs["key"] == "agent/overlay-agent-bundle.tar" and obj.inputs["bucket"] == "agent-bucket-id"
    for i in run.of_type(INSTANCE):
        assert (
            "agent-bucket-1a2b3c" in i.inputs["userData"] and "agent/overlay-agent-bundle.tar" in i.inputs["userData"]
        )


def test_stack_outputs(run, plan):
    out = run.outputs
    assert out["routerAddresses"] == {r.name: str(r.private_ip) for r in plan.routers}
    eips = {e.name[: -len("-eip")]: e for e in run.of_type(EIP) if not e.name.startswith("net-")}
    assert set(out["routerEips"]) == set(eips)
    assert len(out["pairings"]) == len(plan.pairings)
    assert {(p["router"], p["peer"], p["key"]) for p in out["pairings"]} == {
        (p.a.name, p.b.name, p.key) for p in plan.pairings
    }
    assert out["topology"] == to_mermaid(plan)
    assert set(out["onpremFrr"]) == {o.name for o in plan.onprem}
    for text in out["onpremFrr"].values():
        assert all(ip in text for ip in out["routerEips"].values())
        assert PASSWORD not in text
    assert out["vpcId"] == "net-vpc-id" and out["agentBucket"] == "agent-bucket-1a2b3c"


def test_static_mode_routes_each_host_block_to_its_eni():
    run = run_program("test-use2", {"routing.mode": "static"})
    plan = build_plan(dataclasses.replace(load_stack("test-use2"), routing_mode="static"))
    tables = {f"net-{k}-{az}-id" for az in plan.azs for k in ("public", "private")}
    for h in plan.hosts:
        got = {
            (x.inputs["routeTableId"], x.inputs.get("destinationCidrBlock") or x.inputs.get("destinationIpv6CidrBlock"))
            for x in run.of_type(ROUTE)
            if x.inputs.get("networkInterfaceId") == f"{h.name}-eni-id"
        }
        assert got == {(t, str(b)) for t in tables for b in (h.block_v4, h.block_v6)}


@pytest.mark.parametrize(
    "changes,match",
    [
        ({"vpc.cidr": "10.20.0.0/33"}, r"overlay:vpc.cidr = '10.20.0.0/33': is not a valid IPv4 CIDR"),
        ({"hosts.cuont": 3}, r"overlay:hosts.cuont = 3: unknown key; did you mean 'count'\?"),
    ],
)
def test_config_errors_are_one_line(changes, match):
    with pytest.raises(pulumi.RunError, match=match) as exc:
        run_program("lab", changes)
    assert "\n" not in str(exc.value) and str(exc.value).startswith("stack lab: ")


def test_password_must_be_a_secret():
    with pytest.raises(pulumi.RunError, match=r"overlay:bgpPassword = '\(hidden\)': must be a secret"):
        run_program("lab", secret_keys=[])
    with pytest.raises(pulumi.RunError, match=r"overlay:bgpPassword = None: is required"):
        run_program("lab", password=None)


@pytest.mark.parametrize("password", ["has space", "x" * 81, "new\nline"])
def test_password_the_agent_would_refuse_is_refused_when_the_program_runs(password):
    # The agent's rule (infra.passwords, pinned equal to the agent's in tests/unit): found
    # here, in one line without the password, not later as FRR configs no agent applies.
    with pytest.raises(pulumi.RunError) as exc:
        run_program("lab", password=password)
    msg = str(exc.value)
    assert msg.startswith("stack lab: overlay:bgpPassword = '(hidden)': unusable as a TCP MD5 key (")
    assert "\n" not in msg and password not in msg


def test_config_through_the_environment_gives_the_same_program():
    by_env = run_program("lab", via_env=True)
    direct = run_program("lab")
    assert sorted((r.type, r.name) for r in by_env.resources) == sorted((r.type, r.name) for r in direct.resources)
    assert by_env.outputs == direct.outputs


def test_pulumi_project_defaults_give_the_same_program():
    """The CLI merges Pulumi.yaml's declared defaults into the config it hands the program (a
    section left out as `{}`, no onprem as `[]`; tests/support/pulumi_project.py): the program
    registers the same resources with the same inputs, so a declaration cannot change a stack."""
    project = yaml.safe_load((REPO_ROOT / "Pulumi.yaml").read_text())
    stack_config = yaml.safe_load(stack_path("test-use2").read_text())["config"]
    merged = check_stack(project, "test-use2", {**stack_config, "overlay:bgpPassword": {"secure": "v1:AAAA"}})
    raw = {k.split(":", 1)[1]: v for k, v in merged.items() if k.startswith("overlay:") and k != "overlay:bgpPassword"}
    assert {"routing", "agent"} <= set(raw) - {k.split(":", 1)[1] for k in stack_config}
    with_defaults, plain = run_program("test-use2", raw=raw), run_program("test-use2")

    def registered(run):  # an asset by its path (its repr holds the object's id)
        return sorted((r.urn, json.dumps(r.inputs, sort_keys=True, default=lambda o: o.path)) for r in run.resources)

    assert registered(with_defaults) == registered(plain)
    assert with_defaults.outputs == plain.outputs


def test_ipv4_only_stack_without_onprem_peers():
    changes = {"onprem": [], "vpc.ipv6": False, "pools.ipv6": None, "pools.sharedIpv6": None, "tunnels.ipv6": None}
    run = run_program("test-use2", changes)
    (vpc,) = run.of_type("aws:ec2/vpc:Vpc")
    assert vpc.inputs["assignGeneratedIpv6CidrBlock"] is False
    assert not run.of_type("aws:ec2/egressOnlyInternetGateway:EgressOnlyInternetGateway")
    # routers still get an EIP (their only IPv4 egress); the rest are the NAT gateways'
    routers = [e.name for e in run.of_type(EIP) if e.name.startswith("router-")]
    assert sorted(e.name for e in run.of_type(EIP) if e.name not in routers) == sorted(
        n.name for n in run.of_type("aws:ec2/natGateway:NatGateway")
    )
    assert routers == ["router-1-eip"]
    assert {s.name for s in run.of_type(SG)} == {"sg-members"}
    assert not [r.name for r in run.of_type(ROUTE) if "destinationIpv6CidrBlock" in r.inputs]
    assert len(run.of_type(ROUTE)) == 2 * len(run.of_type("aws:ec2/routeTable:RouteTable"))
    assert all("ipv6AddressCount" not in e.inputs for e in run.of_type(ENI))
    assert set(run.outputs["routerEips"]) == {"router-1"} and run.outputs["onpremFrr"] == {}


@pytest.mark.parametrize(
    "instance_type,arch",
    [
        ("m6i.xlarge", "x86_64"),
        ("c6in.large", "x86_64"),
        ("m7g.large", "arm64"),
        ("c6gn.xlarge", "arm64"),
        ("t4g.small", "arm64"),
        ("lab", "x86_64"),
    ],
)
def test_architecture_from_instance_type(instance_type, arch):
    assert architecture(instance_type) == arch


def test_graviton_hosts_get_the_arm64_debian_ami():
    run = run_program("test-use2", {"hosts.instanceType": "m7g.large"})
    lookups = [args for token, args in run.calls if token == "aws:ec2/getAmi:getAmi"]
    assert sorted(next(f["values"][0] for f in a["filters"] if f["name"] == "architecture") for a in lookups) == [
        "arm64",
        "x86_64",
    ]
    assert all(a["owners"] == ["136693071363"] and a["mostRecent"] is True for a in lookups)
    # One image per architecture, each built on the build instance type the stack runs there.
    recipes = {r.name: r.inputs["parentImage"] for r in run.of_type("aws:imagebuilder/imageRecipe:ImageRecipe")}
    assert recipes == {"image-arm64-recipe": AMI["arm64"], "image-x86_64-recipe": AMI["x86_64"]}
    builds = {b.name: b.inputs["instanceTypes"] for b in run.of_type(IB_INFRA)}
    assert builds == {"image-arm64-build": ["m7g.large"], "image-x86_64-build": ["c6in.large"]}
    amis = {i.name: i.inputs["ami"] for i in run.of_type(INSTANCE)}
    assert amis == {
        "router-1-instance": image_ami("x86_64"),
        "host-1-instance": image_ami("arm64"),
        "host-2-instance": image_ami("arm64"),
    }


def test_static_mode_past_the_route_table_limit_is_refused():
    changes = {"hosts.count": 500, "hosts.blockPrefix": 25, "routing.mode": "static"}
    with pytest.raises(
        pulumi.RunError,
        match=r"overlay:routing.mode = 'static': 500 hosts need 1004 routes "
        r"per table; AWS allows 1000",
    ):
        run_program("prod-euw1", changes)


def test_the_program_reads_its_values_through_pulumi_config(monkeypatch):
    """Every `overlay:*` value the stack sets is read by name with the public pulumi.Config (review W4)."""
    read: list[tuple[str, str]] = []
    real = pulumi.Config.get

    def get(self, key, default=None):
        read.append((self.name, key))
        return real(self, key, default)

    monkeypatch.setattr(pulumi.Config, "get", get)
    run = run_program("lab")
    config, _ = cli_config("lab")
    assert run.outputs["routerAddresses"]
    assert {("overlay", k.split(":", 1)[1]) for k in config} <= set(read)


def test_structured_value_that_is_not_json_is_one_line():
    config, keys = cli_config("lab")
    config["overlay:vpc"] = '{"cidr": "10.40.0.0/16",'

    def go():
        settings.ROOT.set(None)
        pulumi.runtime.set_mocks(RecordingMocks(), project="overlay", stack="lab", preview=False)
        pulumi.runtime.set_all_config(config, keys)
        read_config()

    with pytest.raises(ConfigError, match=r"^overlay:vpc = .*: is not valid JSON"):
        contextvars.Context().run(go)


# -- VPC failover: routeServer (docs/vpc-failover.md) -----------------------------------
RS = "aws:vpc/routeServer:RouteServer"
RS_VPC = "aws:vpc/routeServerVpcAssociation:RouteServerVpcAssociation"
RS_ENDPOINT = "aws:vpc/routeServerEndpoint:RouteServerEndpoint"
RS_PEER = "aws:vpc/routeServerPeer:RouteServerPeer"
RS_PROPAGATION = "aws:vpc/routeServerPropagation:RouteServerPropagation"


@pytest.fixture(scope="module", params=["prod-euw1", "test-use2-rs"])
def rs_run(request):
    if request.param == "test-use2-rs":
        r = run_program("test-use2", {"vpc.failover": "routeServer"})
        return r, build_plan(dataclasses.replace(load_stack("test-use2"), vpc_failover="routeServer"))
    return run_program(request.param), build_plan(load_stack(request.param))


def test_route_server_associated_with_the_vpc_without_persisted_routes(rs_run):
    run, plan = rs_run
    (rs,) = run.of_type(RS)
    assert rs.inputs["amazonSideAsn"] == plan.route_server_asn
    # Persisted routes would keep the tables on a dead router once every peer is gone.
    assert rs.inputs["persistRoutes"] == "disable"
    (assoc,) = run.of_type(RS_VPC)
    assert assoc.inputs == {"routeServerId": "rs-route-server-server", "vpcId": "net-vpc-id"}
    # Endpoints and propagations only once the association exists.
    for r in run.of_type(RS_ENDPOINT) + run.of_type(RS_PROPAGATION):
        assert assoc.urn in r.dependencies, r.name


def test_route_server_endpoint_in_every_router_subnet_and_one_bfd_peer_per_router(rs_run):
    run, plan = rs_run
    endpoints = {e.name: e.inputs for e in run.of_type(RS_ENDPOINT)}
    router_azs = [az for az in plan.azs if any(r.az == az for r in plan.routers)]
    assert endpoints == {
        f"route-server-{az}": {
            "routeServerId": "rs-route-server-server",
            "subnetId": f"net-public-{az}-id",
            "tags": {"Name": f"{plan.stack}-route-server-{az}"},
        }
        for az in router_azs
    }
    peers = {p.name: p for p in run.of_type(RS_PEER)}
    assert set(peers) == {f"route-server-{r.name}" for r in plan.routers}
    for r in plan.routers:
        p = peers[f"route-server-{r.name}"]
        assert p.inputs["routeServerEndpointId"] == f"rse-route-server-{r.az}"
        assert p.inputs["peerAddress"] == str(r.private_ip)
        assert p.inputs["bgpOptions"] == {"peerAsn": r.asn, "peerLivenessDetection": "bfd"}
        # The peer exists only with the router's ENI (its address).
        assert run.named(f"{r.name}-eni").urn in p.dependencies


def test_route_server_propagates_to_every_table_and_no_static_pool_route_remains(rs_run):
    run, plan = rs_run
    tables = {p.inputs["routeTableId"] for p in run.of_type(RS_PROPAGATION)}
    assert tables == {f"net-{k}-{az}-id" for az in plan.azs for k in ("public", "private")}
    assert all(p.inputs["routeServerId"] == "rs-route-server-server" for p in run.of_type(RS_PROPAGATION))
    assert not run.of_type("overlay:network:PoolRoutes")
    pools = {str(p) for p in plan.pools_v4 + plan.pools_v6}
    assert not [
        r
        for r in run.of_type(ROUTE)
        if (r.inputs.get("destinationCidrBlock") or r.inputs.get("destinationIpv6CidrBlock")) in pools
    ]


def test_route_server_group_admits_bgp_and_bfd_from_the_endpoints_only(rs_run):
    run, plan = rs_run
    sg = run.named("sg-route-server")
    eps = sorted(f"{route_server_endpoint_address(e.name)}/32" for e in run.of_type(RS_ENDPOINT))
    assert _rules(sg) == {
        ("tcp", 179, 179, tuple(eps), (), False),
        ("udp", 3784, 3784, tuple(eps), (), False),
        ("udp", 4784, 4784, tuple(eps), (), False),
    }
    for r in plan.routers:
        assert "sg-route-server-id" in run.named(f"{r.name}-eni").inputs["securityGroups"]
    for h in plan.hosts:
        assert "sg-route-server-id" not in run.named(f"{h.name}-eni").inputs["securityGroups"]


def test_router_learns_its_endpoints_from_its_route_server_parameter(rs_run):
    run, plan = rs_run
    params = {p.inputs["name"]: p for p in run.of_type(PARAM)}
    for r in plan.routers:
        base = f"/overlay/{plan.stack}/instances/{r.name}"
        doc = json.loads(params[f"{base}/route-server"].inputs["insecureValue"])
        assert doc == {
            "schema": 1,
            "asn": plan.route_server_asn,
            "endpoints": [route_server_endpoint_address(f"route-server-{r.az}")],
        }
        # The revision covers the late parameter: a new endpoint address moves it.
        rev = run.named(f"{r.name}-revision")
        assert run.named(f"{r.name}-route-server").urn in rev.dependencies
        frr = params[f"{base}/frr"].inputs["insecureValue"]
        assert "neighbor ROUTE-SERVER remote-as" in frr and "route-server neighbors: filled in by the agent" in frr
    for h in plan.hosts:
        assert f"/overlay/{plan.stack}/instances/{h.name}/route-server" not in params


def test_static_failover_has_no_route_server(run, plan):
    if plan.vpc_failover == "routeServer":
        return
    assert not [r for r in run.resources if r.type.startswith("aws:vpc/routeServer")]
    assert "sg-route-server" not in {s.name for s in run.of_type(SG)}
    assert "routeServerEndpoints" not in run.outputs


def test_instances_boot_the_stacks_image_built_from_the_repositorys_recipe(run, plan):
    """Image Builder runs image/provision.sh with image/packages.txt on Debian's AMI in the
    stack's private subnet, after its egress works; the lab's VMs boot the same recipe."""
    (component,) = run.of_type("aws:imagebuilder/component:Component")
    doc = yaml.safe_load(component.inputs["data"])
    script = doc["phases"][0]["steps"][0]["inputs"]["commands"][0]
    assert image_recipe.PROVISION_SCRIPT.read_text() in script and image_recipe.PACKAGES_FILE.read_text() in script
    assert component.inputs["platform"] == "Linux" and component.inputs["version"] == "1.0.0"
    # Immutable in AWS: the name changes with the recipe and the parent AMI.
    assert component.inputs["name"].startswith(f"overlay-{run.stack}-x86_64-")
    (recipe,) = run.of_type("aws:imagebuilder/imageRecipe:ImageRecipe")
    assert recipe.inputs["parentImage"] == AMI["x86_64"] and recipe.inputs["name"] == component.inputs["name"]
    assert recipe.inputs["components"] == [
        {"componentArn": f"arn:aws:imagebuilder:us-east-1:{ACCOUNT}:component/{component.inputs['name']}/1.0.0/1"}
    ]
    assert recipe.inputs["blockDeviceMappings"][0]["ebs"]["encrypted"] is True
    # Operator access: the SSM Agent, installed as AWS documents for Debian, stays in the image.
    boot = base64.b64decode(recipe.inputs["userDataBase64"]).decode()
    assert (
        f"https://s3.{plan.region}.amazonaws.com/amazon-ssm-{plan.region}/latest/debian_amd64/amazon-ssm-agent.deb"
        in boot
    )
    assert recipe.inputs["systemsManagerAgent"] == {"uninstallAfterBuild": False}
    (build,) = run.of_type(IB_INFRA)
    assert build.inputs["subnetId"] == f"net-private-{plan.azs[0]}-id"
    assert build.inputs["instanceMetadataOptions"] == {"httpTokens": "required", "httpPutResponseHopLimit": 1}
    assert build.inputs["terminateInstanceOnFailure"] is True
    (image,) = run.of_type("aws:imagebuilder/image:Image")
    deps = {run.by_urn(u).name for u in image.dependencies}
    # Review F6 for the build too: apt on the build instance needs the NAT route.
    assert {f"net-private-{plan.azs[0]}", f"net-private-{plan.azs[0]}-default4", "image-x86_64-build"} <= deps, deps
    for inst in plan.instances:
        assert run.named(f"{inst.name}-instance").inputs["ami"] == image_ami("x86_64")
