"""The documents between the program and the agent are defined once (overlay_agent/schemas): both sides use the files.

The agent validates with fastjsonschema (pure Python, for the instances' wheelhouse); here a
second implementation, `jsonschema`, checks that the files are standard draft-07 and that
they say the same about the program's documents, so neither side leans on one library's quirks.
"""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
from referencing import Registry, Resource

from infra import parameters
from infra.parameters import ParameterError, build_parameters, instance_path
from infra.plan import build_plan
from infra.render import render_frr, render_user_data
from infra.stackfile import REPO_ROOT, list_stacks, load_stack
from overlay_agent import schemas, tunnels
from overlay_agent.config import FORBIDDEN_PROTOCOLS
from overlay_agent.config import parse as parse_agent
from overlay_agent.errors import ConfigError
from overlay_agent.frr import fill_route_server, vpc_ipv6_block
from overlay_agent.ssm import load_bootstrap
from overlay_agent.tunnels import parse_tunnel

SCHEMA_DIR = REPO_ROOT / "hostagent" / "overlay_agent" / "schemas"
CONTRACTS = REPO_ROOT / "docs" / "contracts.md"


def _registry() -> Registry:
    return Registry().with_resources(
        (schemas.BASE + f"{n}.schema.json", Resource.from_contents(schemas.schema(n)))
        for n in schemas.DOCUMENTS + schemas.PARTS
    )


def reference_errors(name: str, doc: object) -> list[str]:
    """What `jsonschema` (the reference implementation) finds wrong, formats checked like the agent's."""
    checker = jsonschema.FormatChecker()
    for fmt, check in schemas.FORMATS.items():
        checker.checks(fmt)(check)
    v = jsonschema.Draft7Validator(schemas.schema(name), registry=_registry(), format_checker=checker)
    return [e.message for e in v.iter_errors(doc)]


def test_every_schema_file_is_a_draft_07_schema_and_is_shipped():
    on_disk = sorted(p.name for p in SCHEMA_DIR.glob("*.schema.json"))
    assert on_disk == sorted(f"{n}.schema.json" for n in schemas.DOCUMENTS + schemas.PARTS)
    for name in schemas.DOCUMENTS + schemas.PARTS:
        doc = schemas.schema(name)
        jsonschema.Draft7Validator.check_schema(doc)
        assert doc["$id"] == f"{schemas.BASE}{name}.schema.json"
    pyproject = (REPO_ROOT / "hostagent" / "pyproject.toml").read_text()
    assert '"overlay_agent.schemas" = ["*.schema.json"]' in pyproject


def _published(stack: str) -> tuple:
    plan = build_plan(load_stack(stack))
    params = build_parameters(
        plan,
        lambda n: render_frr(plan, n),
        route_server=lambda r: parameters.route_server_doc(plan, ["10.20.128.5"]),
        vpc_ipv6="2600:1f18:4a3:6c00::/56",
    )
    return plan, params


@pytest.mark.parametrize("stack", list_stacks())
def test_every_document_the_program_publishes_fits_its_schema_by_both_implementations(stack):
    plan, params = _published(stack)
    kinds = {"agent": "agent", "tunnels": "tunnel", "route-server": "route-server", "vpc": "vpc"}
    seen = set()
    for inst in plan.instances:
        base = instance_path(plan, inst.name)
        for name, p in params.items():
            kind = parameters.kind_of(name, base) if name.startswith(base + "/") else None
            if kind not in kinds:
                continue
            doc = json.loads(p.value)
            assert reference_errors(kinds[kind], doc) == [], name
            schemas.validate(kinds[kind], doc, name)
            seen.add(kind)
        boot = re.search(r"^\s+(\{.*\"parameter_path\".*\})$", _user_data(plan, inst.name), re.M)
        assert boot is not None
        assert reference_errors("bootstrap", json.loads(boot.group(1))) == []
        assert json.loads(boot.group(1))["parameter_path"] == base
    assert {"agent", "tunnels"} <= seen


def _user_data(plan, name: str) -> str:
    return render_user_data(plan, name, bucket="b-1", agent_key="agent/x.tar", parameter_path=instance_path(plan, name))


# Each bad document: what the agent's validator says (one line, the field named) and that the
# reference implementation refuses it too.
BAD = [
    ("tunnel", {"key": -1}, "tunnels/router-1: key: -1 is less than the minimum of 0"),
    ("tunnel", {"mtu": 70000}, "tunnels/router-1: mtu: 70000 is greater than the maximum of 65507"),
    ("tunnel", {"inner_ipv4": {"local": "169.254.64.9", "remote": "169.254.64.8"}}, "inner_ipv4: missing key"),
    ("tunnel", {"peer_blocks": {"ipv4": "100.64.1.1/24"}, "peer_index": 1}, "peer_blocks.ipv4: '100.64.1.1/24'"),
    ("tunnel", {"name": "gre-1/2"}, "name: 'gre-1/2' is not an interface name"),
    ("agent", {"settings": {"route_protocol": 42}}, "settings.route_protocol: 42 is not a route protocol number"),
    ("agent", {"pools": {"ipv4": ["100.64.0.0/16"], "ipv6": ["fd00:64::1/48"]}}, "pools.ipv6[0]: 'fd00:64::1/48'"),
    ("agent", {"role": "router"}, "blocks: {"),
    ("bootstrap", {"parameter_path": "/overlay/lab/"}, "parameter_path: '/overlay/lab/' is not the instance's"),
    ("bootstrap", {"region": "EU"}, "region: 'EU' is not an AWS region name"),
    ("route-server", {"endpoints": ["10.0.0.1; neighbor x"]}, "endpoints[0]: '10.0.0.1; neighbor x' is not an IPv4"),
    ("vpc", {"ipv6": "10.0.0.0/8"}, "ipv6: '10.0.0.0/8' is not an IPv6 network"),
]
GOOD = {
    "tunnel": {
        "schema": 1,
        "name": "gre-5",
        "peer": "router-1",
        "kind": "host",
        "local": "10.20.0.10",
        "remote": "10.20.128.10",
        "key": 5,
        "ttl": 64,
        "mtu": 8973,
        "inner_ipv4": {"local": "169.254.64.9", "remote": "169.254.64.8", "prefixlen": 31},
        "inner_ipv6": None,
        "peer_asn": 65000,
    },
    "agent": {
        "schema": 1,
        "role": "host",
        "asn": 65101,
        "blocks": {"ipv4": "100.64.0.0/26", "ipv6": None},
        "pools": {"ipv4": ["100.64.0.0/16"], "ipv6": []},
    },
    "bootstrap": schemas.bootstrap("overlay", "lab", "host-1", "host", "eu-west-1"),
    "route-server": {"schema": 1, "asn": 64512, "endpoints": ["10.20.128.37"]},
    "vpc": {"schema": 1, "ipv6": "2600:1f18:4a3:6c00::/56"},
}


@pytest.mark.parametrize("name, change, line", BAD)
def test_a_bad_document_is_refused_by_its_schema_in_one_line_naming_the_field(name, change, line):
    assert reference_errors(name, GOOD[name]) == []
    schemas.validate(name, GOOD[name])
    bad = {**GOOD[name], **change}
    source = "tunnels/router-1" if name == "tunnel" else name
    with pytest.raises(ConfigError) as info:
        schemas.validate(name, bad, source)
    msg = str(info.value)
    assert msg.startswith(f"{source}: ") and line in msg and "\n" not in msg and len(msg) < 300, msg
    assert reference_errors(name, bad), "jsonschema accepts what the agent refuses"


def test_the_agent_reads_each_document_through_its_schema(tmp_path):
    """Each reader refuses with the schema's line: the agent's parsers do not restate the checks."""
    t = json.dumps({**GOOD["tunnel"], "key": -1})
    with pytest.raises(ConfigError, match=r"^tunnels/router-1: key: -1 is less than the minimum of 0$"):
        parse_tunnel("tunnels/router-1", t)
    with pytest.raises(ConfigError, match=r"^agent: asn: 0 is less than the minimum of 1$"):
        parse_agent({**GOOD["agent"], "asn": 0})
    boot = tmp_path / "bootstrap.json"
    boot.write_text(json.dumps({**GOOD["bootstrap"], "role": "switch"}))
    with pytest.raises(ConfigError, match=r"bootstrap.json: role: 'switch' is not one of 'host', 'router'$"):
        load_bootstrap(boot)
    marker = "! route-server neighbors: filled in by the agent from the route-server parameter\n"
    with pytest.raises(ConfigError, match=r"^route-server: asn: 'x' is not of type integer"):
        fill_route_server(marker, json.dumps({**GOOD["route-server"], "asn": "x"}))
    with pytest.raises(ConfigError, match=r"^vpc: missing key 'ipv6'$"):
        vpc_ipv6_block(json.dumps({"schema": 1}))


def test_the_program_refuses_to_write_a_document_the_agent_would_refuse(monkeypatch):
    plan = build_plan(load_stack("lab"))
    real = parameters.tunnel_doc
    monkeypatch.setattr(parameters, "tunnel_doc", lambda *a, **kw: {**real(*a, **kw), "mtu": 10})
    with pytest.raises(ParameterError, match=r"^/overlay/lab/instances/\S+/tunnels/\S+: mtu: 10 is less than"):
        build_parameters(plan, lambda n: render_frr(plan, n))
    with pytest.raises(ParameterError, match=r"^vpc: ipv6: '10\.0\.0\.0/8' is not an IPv6 network"):
        parameters.vpc_doc(plan, "10.0.0.0/8")


def test_the_agents_constants_are_the_schemas():
    route_protocol = schemas.schema("agent")["properties"]["settings"]["properties"]["route_protocol"]
    assert FORBIDDEN_PROTOCOLS == {*range(0, 19), 42, 99, *range(186, 199)}
    assert set(route_protocol["allOf"][0]["not"]["enum"]) == FORBIDDEN_PROTOCOLS
    assert schemas.schema("tunnel")["properties"]["peer_index"]["maximum"] == tunnels.MAX_FILTERED_HOSTS - 1
    assert parameters.SCHEMA == schemas.VERSION == 1


def _contract_examples() -> dict[str, list[dict]]:
    """docs/contracts.md's JSON examples under each `## ` heading, and its inline {"schema": 1, ...} ones."""
    out: dict[str, list[dict]] = {}
    section = ""
    text = CONTRACTS.read_text()
    for block in re.split(r"^(## .*)$", text, flags=re.M):
        if block.startswith("## "):
            section = block
            continue
        for m in re.finditer(r"```json\n(.*?)```", block, re.S):
            body = m.group(1).strip()
            if body.startswith('"'):  # a fragment: keys added to the example above it
                out[section][-1] = {**out[section][-1], **json.loads("{" + body + "}")}
            else:
                out.setdefault(section, []).append(json.loads(body))
    flat = re.sub(r"\s*\n\s*", " ", text)
    for name in ("route-server", "vpc"):
        m = re.search(rf"/{name}\s.*?(\{{\"schema\": 1.*?\}})", flat)
        assert m is not None, name
        out[name] = [json.loads(m.group(1))]
    return out


def test_the_contract_doc_points_to_the_schemas_and_its_examples_fit_them():
    text = CONTRACTS.read_text()
    for name in schemas.DOCUMENTS + schemas.PARTS:
        assert f"hostagent/overlay_agent/schemas/{name}.schema.json" in text, name
    examples = _contract_examples()
    docs = {"## `agent`": "agent", "## `tunnels/<peer>`": "tunnel", "route-server": "route-server", "vpc": "vpc"}
    for section, name in docs.items():
        assert examples.get(section), section
        for doc in examples[section]:
            assert reference_errors(name, doc) == [], (section, doc)
            schemas.validate(name, doc, section)
    assert any("peer_blocks" in d for d in examples["## `tunnels/<peer>`"])


def test_a_bootstrap_the_lab_and_user_data_write_is_read_back(tmp_path):
    doc = schemas.bootstrap("overlay", "lab", "host-1", "host", "eu-west-1", endpoint_url="http://10.40.0.1:5000")
    path = tmp_path / "bootstrap.json"
    path.write_text(json.dumps(doc))
    b = load_bootstrap(path)
    assert (b.parameter_path, b.endpoint_url) == ("/overlay/lab/instances/host-1", "http://10.40.0.1:5000")
    assert b.password_name == "/overlay/lab/bgp-password"
    with pytest.raises(ConfigError, match=r"^bootstrap: region: 'Mars' is not an AWS region name"):
        schemas.bootstrap("overlay", "lab", "host-1", "host", "Mars")


def test_schema_files_are_formatted_json():
    """Two-space indented JSON with a final newline, so a diff of the contract reads line by line."""
    for path in SCHEMA_DIR.glob("*.schema.json"):
        text = path.read_text()
        assert text == json.dumps(json.loads(text), indent=2, ensure_ascii=False) + "\n", path.name
