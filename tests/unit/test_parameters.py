"""The SSM parameter set: contract names and shapes, stable revisions, host additions touching little."""

from __future__ import annotations

import dataclasses
import json

import pytest

from infra.parameters import (
    ADVANCED_MAX,
    PASSWORD_PLACEHOLDER,
    ParameterError,
    build_parameters,
    instance_path,
    kind_of,
    onprem_password_name,
    password_name,
)
from infra.plan import build_plan
from infra.stackfile import list_stacks, load_stack


def fake_frr(plan):
    """Stands in for infra.render.render_frr: the instance's own identity only (no host list)."""

    def render(name: str) -> str:
        inst = next(i for i in plan.instances if i.name == name)
        return f"hostname {name}\nrouter bgp {inst.asn}\n neighbor x password {PASSWORD_PLACEHOLDER}\n"

    return render


def renderers():
    """The fake always; the real renderer too once infra/render.py exists."""
    out = [("fake", fake_frr)]
    try:
        from infra.render import render_frr
    except ImportError:
        return out
    out.append(("real", lambda plan: lambda name: render_frr(plan, name)))
    return out


RENDERERS = renderers()


def params_for(stack: str, hosts: int | None = None, renderer=fake_frr, **cfg_changes):
    cfg = load_stack(stack)
    if hosts is not None:
        cfg_changes["host_count"] = hosts
    cfg = dataclasses.replace(cfg, **cfg_changes)
    plan = build_plan(cfg)
    return plan, build_parameters(plan, renderer(plan))


@pytest.mark.parametrize("stack", list_stacks())
def test_every_instance_has_the_contract_set(stack):
    plan, params = params_for(stack)
    for inst in plan.instances:
        base = instance_path(plan, inst.name)
        names = {n for n, p in params.items() if p.instance == inst.name}
        peers = {p.b.name if p.a.name == inst.name else p.a.name for p in plan.pairings_of(inst.name)}
        assert names == {f"{base}/agent", f"{base}/frr", f"{base}/revision"} | {
            f"{base}/tunnels/{peer}" for peer in peers
        }
        assert all(params[n].type == "String" for n in names)
    pw = params[password_name(plan)]
    assert pw.name == f"/overlay/{stack}/bgp-password" and pw.type == "SecureString" and pw.value is None
    # The on-prem sessions' own password, with on-prem peers (review F10).
    onprem = params.get(onprem_password_name(plan))
    assert (onprem is not None) == bool(plan.onprem)
    if onprem is not None:
        assert onprem.name == f"/overlay/{stack}/onprem-bgp-password" and onprem.type == "SecureString"
        assert onprem.value is None and onprem.instance is None
    assert len(params) == 1 + bool(plan.onprem) + sum(3 + len(plan.pairings_of(i.name)) for i in plan.instances)


def test_routers_pair_with_every_host_and_onprem_peer_hosts_with_every_router():
    plan, params = params_for("prod-euw1")
    for r in plan.routers:
        peers = {n.rsplit("/", 1)[1] for n in params if n.startswith(instance_path(plan, r.name) + "/tunnels/")}
        assert peers == {h.name for h in plan.hosts} | {o.name for o in plan.onprem}
    for h in plan.hosts:
        peers = {n.rsplit("/", 1)[1] for n in params if n.startswith(instance_path(plan, h.name) + "/tunnels/")}
        assert peers == {r.name for r in plan.routers}


def test_agent_document_matches_the_contract():
    plan, params = params_for("lab")
    host = json.loads(params["/overlay/lab/instances/host-1/agent"].value)
    assert host == {
        "schema": 1,
        "project": "overlay",
        "stack": "lab",
        "instance": "host-1",
        "role": "host",
        "asn": 65100,
        "underlay": {"address": "10.40.0.10"},
        "blocks": {"ipv4": "10.99.0.0/24", "ipv6": "fd10:99::/112"},
        "pools": {"ipv4": ["10.99.0.0/16"], "ipv6": ["fd10:99::/48"]},
        "shared": {"ipv4": ["10.99.255.0/24"], "ipv6": ["fd10:99:0:ffff:ffff:ffff:ffff:ff00/120"]},
        "settings": {
            "route_protocol": 149,
            "route_protocol_name": "overlay",
            "poll_interval": 15,
            "resync_interval": 30,
        },
    }
    router = json.loads(params["/overlay/lab/instances/router-2/agent"].value)
    assert router["role"] == "router" and router["blocks"] is None
    assert router["underlay"] == {"address": "10.40.144.10"} and router["asn"] == 65000


def test_the_agent_parses_its_documents():
    """The agent's own parser (hostagent) accepts every agent document the program publishes."""
    from overlay_agent.config import parse as agent_parse

    for stack in list_stacks():
        plan, params = params_for(stack)
        for inst in plan.instances:
            cfg = agent_parse(json.loads(params[f"{instance_path(plan, inst.name)}/agent"].value))
            assert cfg.instance == inst.name and cfg.asn == inst.asn


def test_tunnel_documents_mirror_each_other():
    plan, params = params_for("lab")
    r_side = json.loads(params["/overlay/lab/instances/router-2/tunnels/host-1"].value)
    h_side = json.loads(params["/overlay/lab/instances/host-1/tunnels/router-2"].value)
    assert r_side == {
        "schema": 1,
        "name": "gre-129",
        "peer": "host-1",
        "kind": "host",
        "local": "10.40.144.10",
        "remote": "10.40.0.10",
        "key": 129,
        "ttl": 64,
        "mtu": 1472,
        "inner_ipv4": {"local": "169.254.65.0", "remote": "169.254.65.1", "prefixlen": 31},
        "inner_ipv6": {"local": "fd10:7e:0:0:1000::", "remote": "fd10:7e::1000:0:0:1", "prefixlen": 127},
        "peer_asn": 65100,
        # what only host-1 may announce; the router's agent filters with it
        "peer_blocks": {"ipv4": "10.99.0.0/24", "ipv6": "fd10:99::/112"},
        "peer_index": 0,
    }
    assert h_side["peer"] == "router-2" and h_side["peer_asn"] == 65000
    assert "peer_blocks" not in h_side and "peer_index" not in h_side
    assert (h_side["local"], h_side["remote"]) == (r_side["remote"], r_side["local"])
    assert h_side["inner_ipv4"]["local"] == r_side["inner_ipv4"]["remote"]
    assert h_side["inner_ipv6"]["remote"] == r_side["inner_ipv6"]["local"]
    assert (h_side["name"], h_side["key"], h_side["mtu"]) == (r_side["name"], r_side["key"], r_side["mtu"])
    onprem = json.loads(params["/overlay/lab/instances/router-1/tunnels/dc1"].value)
    # The router's source is its private address; the EIP is a 1:1 NAT in front of it.
    assert onprem["kind"] == "onprem" and onprem["local"] == "10.40.128.10"
    assert onprem["remote"] == "198.51.100.1" and onprem["peer_asn"] == 64600


def test_ipv6_off_gives_null_inner_ipv6():
    plan, params = params_for("lab", ipv6=False, pools_v6=(), tunnel_v6=None)
    doc = json.loads(params["/overlay/lab/instances/host-1/tunnels/router-1"].value)
    assert doc["inner_ipv6"] is None
    assert json.loads(params["/overlay/lab/instances/host-1/agent"].value)["blocks"]["ipv6"] is None


def test_same_plan_same_values():
    _, one = params_for("prod-euw1")
    _, two = params_for("prod-euw1")
    assert one == two


def test_revision_follows_any_change_of_its_set():
    plan, params = params_for("lab")
    _, other = params_for("lab", mtu=1400)
    rev = "/overlay/lab/instances/host-1/revision"
    assert params[rev].value != other[rev].value
    assert len(params[rev].value) == 16 and int(params[rev].value, 16) >= 0


@pytest.mark.parametrize("label,renderer", RENDERERS, ids=[r[0] for r in RENDERERS])
@pytest.mark.parametrize("stack", list_stacks())
def test_adding_a_host_touches_only_its_set_and_the_routers_tunnels(stack, label, renderer):
    plan, before = params_for(stack, renderer=renderer)
    n = len(plan.hosts)
    _, after = params_for(stack, hosts=n + 1, renderer=renderer)
    new = f"host-{n + 1}"
    added = set(after) - set(before)
    changed = {k for k in set(before) & set(after) if before[k] != after[k]}
    assert set(before) - set(after) == set()
    assert added == {n for n, p in after.items() if p.instance == new} | {
        f"{instance_path(plan, r.name)}/tunnels/{new}" for r in plan.routers
    }
    assert changed == {f"{instance_path(plan, r.name)}/revision" for r in plan.routers}


@pytest.mark.parametrize("size", [10, 4096, 4097, 8192])
def test_the_tier_is_the_kinds_never_the_size(size):
    # A parameter that shrinks must keep its tier: SSM cannot go Advanced -> Standard, and
    # the replacement pulumi-aws would make of a named parameter fails (review F12).
    plan = build_plan(load_stack("lab"))
    params = build_parameters(plan, lambda name: "x" * size)
    tiers = {}
    for p in params.values():
        if p.instance is not None:
            tiers.setdefault(kind_of(p.name, instance_path(plan, p.instance)), set()).add(p.tier)
    assert tiers == {"agent": {"Standard"}, "frr": {"Advanced"}, "tunnels": {"Standard"}, "revision": {"Standard"}}


def test_too_large_values_fail_with_their_tiers_limit():
    plan = build_plan(load_stack("lab"))
    with pytest.raises(
        ParameterError, match="router-1/frr: value is 8193 bytes; Advanced-tier parameters hold at most 8192"
    ):
        build_parameters(plan, lambda name: "x" * (ADVANCED_MAX + 1))


@pytest.mark.parametrize("value", ["password {{BGP_PASSWORD}}", "{{ssm:/other/parameter}}", "a {{\n}} b"])
def test_a_value_ssm_refuses_for_its_double_brackets_is_an_error(value):
    plan = build_plan(load_stack("lab"))
    with pytest.raises(ParameterError, match=r"router-1/frr: value contains .*SSM refuses values wrapped in double"):
        build_parameters(plan, lambda name: value)
    build_parameters(plan, lambda name: "one { brace } is fine")
