"""The preflight: every stack passes AWS's schemas and documented rules; each kind of defect is caught in one line."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infra import preflight as pf
from infra.stackfile import REPO_ROOT, list_stacks, load_stack
from tests.support.render_plans import random_raw

STACKS = list_stacks()
SG = "aws:ec2/securityGroup:SecurityGroup"
PARAM = "aws:ssm/parameter:Parameter"


@pytest.fixture(scope="module")
def captured():
    """Each stack's resources, captured once; tests inject defects into copies."""
    return {stack: pf.capture(stack) for stack in STACKS}


def fresh(captured, stack="test-use2"):
    resources, region = captured[stack]
    return [pf.Resource(r.name, r.type, copy.deepcopy(r.inputs)) for r in resources], region


def named(resources, name):
    return next(r for r in resources if r.name == name)


def only_violation(resources, region, **quotas):
    report = pf.check(resources, region, "t", quotas)
    assert len(report.violations) == 1, [f.line() for f in report.violations]
    line = report.violations[0].line()
    assert "\n" not in line
    return line


# -- the real stacks ----------------------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_every_stack_passes(captured, stack):
    resources, region = captured[stack]
    report = pf.check(resources, region, stack)
    assert not report.violations, "\n".join(f.line() for f in report.violations)
    # Nothing is silently passed: only the S3 object (no CloudFormation counterpart) is
    # unchecked, and it is listed. A new resource type fails here until it has a row in
    # infra/preflight.py's CFN table (or NO_COUNTERPART, with the reason).
    new = set(report.unchecked) - set(pf.NO_COUNTERPART)
    assert not new, f"resource types without a row in infra/preflight.py CFN: {sorted(new)}"
    assert "aws:s3/bucketObjectv2:BucketObjectv2" in report.unchecked
    assert any(line.startswith("UNCHECKED aws:s3/bucketObjectv2") for line in report.lines())
    assert report.checked_values > 50


def test_prod_warns_that_it_needs_every_eip_of_the_default_quota(captured):
    resources, region = captured["prod-euw1"]
    report = pf.check(resources, region, "prod-euw1")
    (warning,) = report.warnings
    assert "5 EIPs" in warning.line() and "EC2-VPC Elastic IPs" in warning.line()
    assert not pf.check(resources, region, "prod-euw1", {"eips-per-region": 10}).warnings


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.fixed_dictionaries(
        {
            "routers": st.integers(1, 4),
            "hosts": st.integers(1, 6),
            "n_az": st.integers(1, 3),
            "onprem": st.integers(0, 3),
            "ipv6": st.booleans(),
            "per_host": st.booleans(),
            "graceful_restart": st.booleans(),
            "specifics": st.booleans(),
            "pools": st.integers(1, 2),
        }
    )
)
def test_generated_stacks_pass(knobs):
    report = pf.preflight("prop", raw=random_raw(**knobs), quotas={"eips-per-region": 100})
    assert not report.violations and not report.warnings, f"{knobs}: " + "\n".join(f.line() for f in report.findings)


# -- each kind of defect, injected into captured resources -------------------------------


def test_apostrophe_in_a_security_group_description(captured):
    resources, region = fresh(captured)
    named(resources, "sg-onprem").inputs["description"] = "overlay test-use2: routers' on-prem GRE peers"
    line = only_violation(resources, region)
    assert line.startswith(
        "VIOLATION sg-onprem (aws:ec2/securityGroup:SecurityGroup) description = "
        '"overlay test-use2: routers\' on-prem GRE peers": does not match '
        "AWS::EC2::SecurityGroup GroupDescription pattern"
    )


def test_apostrophe_in_a_security_group_rule_description(captured):
    resources, region = fresh(captured)
    named(resources, "sg-members").inputs["ingress"][0]["description"] = "GRE between the stack's members"
    line = only_violation(resources, region)
    assert "sg-members" in line and "ingress[0].description" in line and "EC2 refuses it" in line


def test_double_brackets_in_a_parameter_value(captured):
    resources, region = fresh(captured)
    frr = next(r for r in resources if r.type == PARAM and r.inputs["name"].endswith("/frr"))
    frr.inputs["insecureValue"] = frr.inputs["insecureValue"].replace("<<BGP PASSWORD>>", "{{BGP_PASSWORD}}", 1)
    report = pf.check(resources, region, "t")
    # Also not a placeholder, so a (possible) password in clear: a second line, same resource.
    assert {f.resource for f in report.violations} == {frr.name} and len(report.violations) == 2
    line = report.violations[0].line()
    assert (
        f"VIOLATION {frr.name} ({PARAM}) insecureValue = '{{{{BGP_PASSWORD}}}}': SSM refuses values "
        "wrapped in double brackets" in line
    )


def test_over_long_description_and_name(captured):
    resources, region = fresh(captured)
    named(resources, "sg-members").inputs["description"] = "x" * 256
    line = only_violation(resources, region)
    assert "is 256 characters; AWS::EC2::SecurityGroup GroupDescription maxLength is 255" in line
    resources, region = fresh(captured)
    named(resources, "hosts-role").inputs["name"] = "overlay-test-use2-" + "r" * 47
    line = only_violation(resources, region)
    assert "hosts-role" in line and "name =" in line and "AWS::IAM::Role RoleName maxLength is 64" in line


def test_an_auto_generated_name_past_the_limit(captured):
    # Pulumi names the role `<logical>-<7 hex>` when the program sets no name: 57 + 8 > 64.
    resources, region = fresh(captured)
    role = named(resources, "hosts-role")
    role.name = "r" * 57
    line = only_violation(resources, region)
    assert "name (auto-named) = '" + "r" * 57 + "-0123abc'" in line and "RoleName maxLength is 64" in line


@pytest.mark.parametrize(
    "resource,path,bad,cfn",
    [
        (
            "test-use2:host-1-instance",
            ("metadataOptions", "httpTokens"),
            "requierd",
            "AWS::EC2::Instance MetadataOptions.HttpTokens enum",
        ),
        (
            "agent-ownership",
            ("rule", "objectOwnership"),
            "BucketOwnerEnforce",
            "AWS::S3::Bucket OwnershipControls.Rules[].ObjectOwnership enum",
        ),
        ("test-use2:router-1-revision", ("tier",), "Premium", "AWS::SSM::Parameter Tier enum"),
        ("test-use2:router-1-revision", ("type",), "SecureStrin", "PutParameter API (botocore ssm ParameterType) enum"),
    ],
)
def test_bad_enum_value(captured, resource, path, bad, cfn):
    resources, region = fresh(captured)
    name = resource.split(":")[-1]
    node = named(resources, name).inputs
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = bad
    line = only_violation(resources, region)
    assert f"{name} " in line and repr(bad) in line and cfn in line


def test_secure_string_is_a_type_the_api_takes(captured):
    resources, region = fresh(captured)
    password = next(r for r in resources if r.type == PARAM and r.inputs["type"] == "SecureString")
    assert not pf.check(resources, region, "t").violations  # CloudFormation's enum lacks it; the API's has it
    password.inputs["type"] = "Secure"
    assert "ParameterType" in only_violation(resources, region)


def test_out_of_range_number(captured):
    resources, region = fresh(captured)
    named(resources, "host-1-instance").inputs["metadataOptions"]["httpPutResponseHopLimit"] = 65
    assert "MetadataOptions.HttpPutResponseHopLimit maximum 64" in only_violation(resources, region)


def test_sizes_ssm_tiers_and_user_data(captured):
    resources, region = fresh(captured)
    agent = next(r for r in resources if r.type == PARAM and r.inputs["name"].endswith("/agent"))
    agent.inputs["insecureValue"] = "x" * 4097
    assert "SSM holds at most 4096 bytes in the Standard tier" in only_violation(resources, region)
    agent.inputs["tier"] = "Advanced"
    assert not pf.check(resources, region, "t").violations
    agent.inputs["insecureValue"] = "x" * 8193
    assert "at most 8192 bytes in the Advanced tier" in only_violation(resources, region)
    resources, region = fresh(captured)
    named(resources, "host-1-instance").inputs["userData"] = "#cloud-config\n" + "#" * 16384
    assert "userData = '16398 bytes': EC2 user data is limited to 16384 bytes" in only_violation(resources, region)


def test_a_clear_password_in_a_string_parameter(captured):
    resources, region = fresh(captured)
    frr = next(r for r in resources if r.type == PARAM and r.inputs["name"].endswith("/frr"))
    frr.inputs["insecureValue"] = frr.inputs["insecureValue"].replace("<<BGP PASSWORD>>", "hunter2", 1)
    line = only_violation(resources, region)
    assert "password in clear" in line and "hunter2" not in line


def test_tags(captured):
    resources, region = fresh(captured)
    eni = named(resources, "host-1-eni")
    eni.inputs["tags"] = {**eni.inputs["tags"], "aws:owner": "me"}
    assert "the aws: prefix is reserved" in only_violation(resources, region)
    # The provider's 4 default tags count too: 47 own tags make 51.
    eni.inputs["tags"] = {f"k{i}": "v" for i in range(47)}
    assert "51 tags" in only_violation(resources, region)
    eni.inputs["tags"] = {"Name": "v" * 257}
    assert "tag values hold at most 256" in only_violation(resources, region)


def test_routes_per_table_against_the_default_quota(captured):
    resources, region = fresh(captured)
    route = next(r for r in resources if r.type == "aws:ec2/route:Route" and r.inputs.get("destinationCidrBlock"))
    table = route.inputs["routeTableId"]
    existing = (
        sum(
            1
            for r in resources
            if r.type == "aws:ec2/route:Route"
            and r.inputs["routeTableId"] == table
            and r.inputs.get("destinationCidrBlock")
        )
        + 1
    )  # + S3 endpoint
    for i in range(51 - existing):
        resources.append(
            pf.Resource(
                f"extra-{i}", "aws:ec2/route:Route", {"routeTableId": table, "destinationCidrBlock": f"10.200.{i}.0/24"}
            )
        )
    line = only_violation(resources, region)
    assert "(aws:ec2/routeTable:RouteTable) routes (IPv4) = '51 routes'" in line
    assert "Routes per route table" in line
    assert not pf.check(resources, region, "t", {"routes-per-route-table": 100}).violations


def test_rules_per_security_group_against_the_default_quota(captured):
    resources, region = fresh(captured)
    sg = named(resources, "sg-onprem")
    sg.inputs["ingress"].append(
        {
            "description": "many",
            "protocol": "tcp",
            "fromPort": 1,
            "toPort": 1,
            "cidrBlocks": [f"198.18.0.{i}/32" for i in range(60)],
        }
    )
    line = only_violation(resources, region)
    assert "sg-onprem" in line and "ingress (IPv4)" in line and "more than 60" in line


def test_a_type_without_counterpart_is_listed_not_passed(captured):
    resources, region = fresh(captured)
    resources.append(pf.Resource("mystery", "aws:ec2/newThing:NewThing", {"description": "x"}))
    report = pf.check(resources, region, "t")
    assert "aws:ec2/newThing:NewThing" in report.unchecked
    assert "UNCHECKED aws:ec2/newThing:NewThing (1): no CloudFormation counterpart" in "\n".join(report.lines())


def test_the_table_names_real_cloudformation_properties_in_every_stack_region():
    regions = {load_stack(s).region for s in STACKS}
    for region in regions:
        for cfn_type, props in pf.CFN.values():
            schema = pf.cfn_schema(region, cfn_type)
            assert schema is not None, (region, cfn_type)
            for cfn_path in props.values():
                pf.cfn_property(schema, cfn_path)  # KeyError when the table is wrong


def test_the_table_names_real_pulumi_aws_inputs():
    # A misspelt pulumi property would match nothing and check nothing: each path's first
    # part must be an input of the pulumi-aws resource.
    import importlib
    import inspect
    import re

    for pulumi_type, (_, props) in pf.CFN.items():
        module, _, cls = pulumi_type.split(":", 1)[1].partition(":")
        resource = getattr(importlib.import_module(f"pulumi_aws.{module.split('/')[0]}"), cls)
        inputs = set(inspect.signature(resource._internal_init).parameters)
        for path in props:
            head = re.sub(r"(?<!^)([A-Z])", r"_\1", path.split(".")[0].removesuffix("[]")).lower()
            assert head in inputs, (pulumi_type, path)


# -- through the program: a patched component, not just patched inputs --------------------


def test_a_defect_the_program_itself_creates_is_caught(monkeypatch):
    # Review F1 as the program had it: the rule set with an apostrophe in a description.
    from infra import rules
    from infra.components import security

    original = rules.onprem_ingress

    def with_apostrophe(plan):
        return [
            rules.Rule("GRE from the datacenter's edge", r.protocol, r.from_port, r.to_port, r.cidrs_v4)
            if r.protocol == rules.GRE
            else r
            for r in original(plan)
        ]

    monkeypatch.setattr(security, "onprem_ingress", with_apostrophe)
    report = pf.preflight("test-use2")
    assert [f.prop for f in report.violations] == ["ingress[0].description"]


def test_a_stack_file_from_another_directory(tmp_path):
    (tmp_path / "Pulumi.copy.yaml").write_text((REPO_ROOT / "stacks" / "Pulumi.lab.yaml").read_text())
    report = pf.preflight("copy", stacks_dir=tmp_path)
    assert report.region == "eu-west-1" and not report.violations
    with pytest.raises(pf.PreflightError, match="no such stack file"):
        pf.preflight("lab", stacks_dir=tmp_path)


# -- the command line -------------------------------------------------------------------------


def _cli(*args, cwd=REPO_ROOT):
    return subprocess.run(
        [sys.executable, "-m", "infra.preflight", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_cli_exit_codes_and_one_line_per_violation():
    ok = _cli("lab")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # Unchecked: the S3 object and the subnet CIDR reservations (no CloudFormation resource).
    assert ok.stdout.splitlines()[-1] == "preflight lab: 0 violation(s), 0 warning(s), 2 type(s) unchecked"
    assert ok.stderr == ""

    # The account's quota as --quota states it: with room for only 2 routes per table, each
    # of lab's tables (default route, IPv4 pool, S3 endpoint; IPv6 pool and default route)
    # is past it, one line per table and family.
    bad = _cli("lab", "--quota", "routes-per-route-table=2")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    violations = [line for line in bad.stdout.splitlines() if line.startswith("VIOLATION")]
    assert violations and len(violations) == len(set(violations))
    assert all(
        line.startswith("VIOLATION net-")
        and "(aws:ec2/routeTable:RouteTable) routes (IPv" in line
        and "more than 2" in line
        and "Routes per route table" in line
        for line in violations
    )
    assert bad.stdout.splitlines()[-1].startswith(f"preflight lab: {len(violations)} violation(s)")

    for args in (["nosuch"], ["lab", "--quota", "routes=5"], []):
        usage = _cli(*args)
        assert usage.returncode == 2 and usage.stdout == ""
    missing = _cli("nosuch")
    assert missing.stderr.strip().count("\n") == 0 and "no such stack file" in missing.stderr
