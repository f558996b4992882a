"""A second `pulumi up`, an instance replacement and a first boot's ordering, under mocks (review F5, F6, F7).

What the mocks can and cannot show: Pulumi's mocks record the inputs and resource options
the program registers, but run no provider: no Check (which fills schema defaults), no
Read (refresh) and no Diff. So the "preview of a second up" here is the program run twice,
with the one provider step that matters for F5 written out: terraform-provider-aws's
`aws_instance.source_dest_check` has `Default: true` (so Check plans `true` when the
program sets nothing) while Read fills the state from the primary ENI (`false`), and the
bridge drops diffs on `ignoreChanges` paths (terraform-provider-aws#44768). Whether the
provider bundled in pulumi-aws still has that bug is exactly what the mocks cannot tell;
what they do show is that whichever way it goes, the instance's diff ignores the field.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pulumi
import pytest

from infra.plan import build_plan
from infra.stackfile import list_stacks, load_stack
from tests.infra.mockrun import run_program

INSTANCE = "aws:ec2/instance:Instance"
ENI = "aws:ec2/networkInterface:NetworkInterface"

# The provider's schema defaults Check fills in for an unset input (only the one F5 is about).
PROVIDER_DEFAULTS = {INSTANCE: {"sourceDestCheck": True}}


def _state_after_read(run, rec) -> dict:
    """The resource's state as the provider's Read leaves it: the instance's sourceDestCheck
    is read from its primary ENI."""
    state = dict(rec.inputs)
    if rec.type == INSTANCE:
        eni = run.named(rec.name[: -len("-instance")] + "-eni")
        state["sourceDestCheck"] = eni.inputs["sourceDestCheck"]
    return state


def _comparable(value):
    """Assets as the engine compares them: by content hash, not object identity."""
    if isinstance(value, pulumi.FileAsset):
        return ("asset", hashlib.sha256(Path(value.path).read_bytes()).hexdigest())
    return value


def second_up_diff(first, second, *, honour_ignore_changes: bool = True) -> dict[str, set[str]]:
    """Per resource of the second run, the top-level properties a preview would show changing."""
    old = {(r.type, r.name): r for r in first.resources if r.custom}
    out = {}
    for rec in second.resources:
        if not rec.custom or rec.type.startswith("pulumi:providers:"):
            continue
        before = old.get((rec.type, rec.name))
        if before is None:
            out[rec.name] = {"(create)"}
            continue
        state = {k: _comparable(v) for k, v in _state_after_read(first, before).items()}
        planned = {k: _comparable(v) for k, v in {**PROVIDER_DEFAULTS.get(rec.type, {}), **rec.inputs}.items()}
        changed = {k for k in set(state) | set(planned) if state.get(k) != planned.get(k)}
        if honour_ignore_changes:
            changed -= set(rec.ignore_changes)
        if changed:
            out[rec.name] = changed
    return out


@pytest.fixture(scope="module", params=list_stacks())
def two_runs(request):
    return run_program(request.param), run_program(request.param)


def test_second_up_changes_nothing(two_runs):
    first, second = two_runs
    assert sorted((r.type, r.name) for r in first.resources) == sorted((r.type, r.name) for r in second.resources)
    assert second_up_diff(first, second) == {}


def test_without_ignore_changes_the_second_up_would_turn_source_dest_check_on(two_runs):
    # The control: the same diff, ignoring nothing, is F5 itself, on every instance.
    first, second = two_runs
    diff = second_up_diff(first, second, honour_ignore_changes=False)
    assert diff == {r.name: {"sourceDestCheck"} for r in second.of_type(INSTANCE)}


def test_adding_a_host_touches_no_existing_instance():
    first = run_program("test-use2")
    n = len(build_plan(load_stack("test-use2")).hosts)
    second = run_program("test-use2", {"hosts.count": n + 1})
    diff = second_up_diff(first, second)
    changed = {name for name, props in diff.items() if props != {"(create)"}}
    assert not [n for n in changed if n.endswith(("-instance", "-eni", "-eip"))], diff
    assert f"host-{n + 1}-instance" in diff


def test_instances_replace_delete_first_and_keep_their_eni(two_runs):
    run, _ = two_runs
    for rec in run.of_type(INSTANCE):
        # EC2 attaches an ENI to one instance at a time: the old one must go first (F7).
        assert rec.delete_before_replace is True, rec.name
        assert rec.inputs["primaryNetworkInterface"]["deleteOnTermination"] is False
        assert set(rec.ignore_changes) >= {"ami", "userData", "sourceDestCheck"}
    # The ENI and EIP are not replaced with the instance: nothing makes them delete first.
    assert not [r.name for r in run.resources if r.delete_before_replace and r.type != INSTANCE]


def test_instances_boot_after_their_egress_role_policy_and_agent_package(two_runs):
    run, _ = two_runs
    plan = build_plan(load_stack(run.stack))
    for inst in plan.instances:
        rec = run.named(f"{inst.name}-instance")
        deps = {run.by_urn(u).name for u in rec.dependencies}
        kind = "public" if inst in plan.routers else "private"
        want = {
            f"net-{kind}-{inst.az}",
            f"net-{kind}-{inst.az}-default4",
            "net-s3",
            "routers-read" if inst in plan.routers else "hosts-read",
            "agent-object",
            f"{inst.name}-agent",
            f"{inst.name}-frr",
        }
        if plan.ipv6:
            want.add(f"net-{kind}-{inst.az}-default6")
        if kind == "public":
            want.add(f"{inst.name}-eip")
        assert deps >= want, (inst.name, want - deps)
        # The association among them is the route table association, not the table.
        types = {run.by_urn(u).type for u in rec.dependencies}
        assert "aws:ec2/routeTableAssociation:RouteTableAssociation" in types
        if kind == "private":
            nat_route = run.named(f"net-private-{inst.az}-default4")
            assert nat_route.inputs["natGatewayId"] == f"net-nat-{inst.az}-id"


def test_root_volumes_sized_per_role_and_tagged(two_runs):
    run, _ = two_runs
    cfg = load_stack(run.stack)
    plan = build_plan(cfg)
    for inst in plan.instances:
        rec = run.named(f"{inst.name}-instance")
        want = 20 if inst in plan.routers else cfg.host_root_volume_gb
        assert rec.inputs["rootBlockDevice"]["volumeSize"] == want
        assert rec.inputs["volumeTags"] == {
            "project": "overlay",
            "stack": run.stack,
            "environment": plan.environment,
            "managed-by": "pulumi",
            "Name": f"{run.stack}-{inst.name}",
            "overlay-role": "router" if inst in plan.routers else "host",
        }


def test_host_root_volume_is_configurable():
    run = run_program("test-use2", {"hosts.rootVolumeGb": 200})
    assert {r.inputs["rootBlockDevice"]["volumeSize"] for r in run.of_type(INSTANCE) if r.name.startswith("host-")} == {
        200
    }
    with pytest.raises(Exception, match=r"overlay:hosts.rootVolumeGb = 4: must be"):
        run_program("test-use2", {"hosts.rootVolumeGb": 4})


def test_a_render_error_inside_apply_is_one_line(monkeypatch):
    # User data renders inside an apply (it needs the bucket's name); its errors must read
    # like every other config error, not as a chain of "While processing input" lines.
    import infra.program
    from infra.render import RenderError

    def broken(*args, **kwargs):
        raise RenderError("bucket = 'Bad_Bucket': must be an S3 bucket name")

    monkeypatch.setattr(infra.program, "render_user_data", broken)
    with pytest.raises(pulumi.RunError) as exc:
        run_program("lab")
    assert str(exc.value) == "stack lab: bucket = 'Bad_Bucket': must be an S3 bucket name"


def test_fixed_addresses_reserved_and_the_nat_gateway_pinned_below_them(two_runs):
    # Review F15: AWS picks addresses for the ENIs it creates; the planned ones are reserved.
    import ipaddress

    run, _ = two_runs
    plan = build_plan(load_stack(run.stack))
    reservations = run.of_type("aws:ec2/subnetCidrReservation:SubnetCidrReservation")
    by_subnet = {}
    for r in reservations:
        assert r.inputs["reservationType"] == "explicit"
        by_subnet.setdefault(r.inputs["subnetId"], []).append(ipaddress.ip_network(r.inputs["cidrBlock"]))
    for s in plan.subnets:
        got = sorted(by_subnet[f"net-{s.kind}-{s.az}-id"])
        assert got == sorted(s.reserved) and all(c.subnet_of(s.cidr) for c in got)
    for inst in plan.instances:
        subnet = next(s for s in plan.subnets if s.cidr == inst.subnet)
        assert any(inst.private_ip in c for c in subnet.reserved), inst.name
    for nat in run.of_type("aws:ec2/natGateway:NatGateway"):
        az = nat.name[len("net-nat-") :]
        public = next(s for s in plan.subnets if s.az == az and s.kind == "public")
        assert nat.inputs["privateIp"] == str(public.nat_ip)
        assert public.nat_ip == public.cidr.network_address + 5
        assert not any(public.nat_ip in c for c in public.reserved)
