"""Generated docs are current, and the stack config schema they come from admits the real stacks."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from infra import config
from tools import gendocs

REPO_ROOT = Path(__file__).resolve().parents[2]
STACK_FILES = sorted(
    [*(REPO_ROOT / "stacks").glob("Pulumi.*.yaml"), *(REPO_ROOT / "tests/vm/stacks").glob("Pulumi.*.yaml")]
)


def test_generated_docs_are_current():
    """docs/cli.md, docs/config.md, docs/config.schema.json and the marked blocks (the agent's
    synopsis, Pulumi.yaml's config declarations) are what their sources produce; after a change
    run `python -m tools.gendocs`."""
    assert gendocs.stale() == [], "stale: run .venv/bin/python -m tools.gendocs"


def test_config_md_lists_every_key_the_parser_accepts():
    text = (REPO_ROOT / "docs/config.md").read_text()
    for top in config.TOP_KEYS:
        assert f"| `{top}` |" in text or f"## `overlay:{top}`" in text, top
    for section, names in config.SECTION_KEYS.items():
        for name in names:
            assert f"| `{name}` |" in text, f"{section}.{name}"


def test_schema_defaults_are_what_parse_applies():
    """A key left out takes the schema's default: the minimal stack parses to the defaults."""
    cfg = config.parse(
        {
            "region": "eu-west-1",
            "vpc": {"cidr": "10.20.0.0/16", "azs": ["a"]},
            "pools": {"ipv4": ["10.96.0.0/16"], "ipv6": ["fd10:96::/48"]},
        },
        "s",
    )
    fields = {
        "environment": cfg.environment,
        "vpc.ipv6": cfg.ipv6,
        "vpc.failover": cfg.vpc_failover,
        "vpc.routeServerAsn": cfg.route_server_asn,
        "routers.count": cfg.router_count,
        "routers.asn": cfg.router_asn,
        "routers.instanceType": cfg.router_instance_type,
        "routers.maxRouters": cfg.max_routers,
        "hosts.count": cfg.host_count,
        "hosts.asn": cfg.host_asn,
        "hosts.asnMode": cfg.host_asn_mode,
        "hosts.instanceType": cfg.host_instance_type,
        "hosts.blockPrefix": cfg.host_block_prefix,
        "hosts.ipv6BlockPrefix": cfg.host_ipv6_block_prefix,
        "hosts.ipv6Delegation": cfg.host_ipv6_delegation,
        "hosts.rootVolumeGb": cfg.host_root_volume_gb,
        "pools.sharedIpv4": cfg.shared_v4,
        "pools.sharedIpv6": cfg.shared_v6,
        "tunnels.ipv4": cfg.tunnel_v4,
        "tunnels.ipv6": cfg.tunnel_v6,
        "tunnels.mtu": cfg.mtu,
        "tunnels.onpremMtu": cfg.onprem_mtu,
        "bgp.keepalive": cfg.bgp.keepalive,
        "bgp.hold": cfg.bgp.hold,
        "bgp.bfdInterval": cfg.bgp.bfd_interval_ms,
        "bgp.bfdMultiplier": cfg.bgp.bfd_multiplier,
        "bgp.maxPrefix": cfg.bgp.max_prefix,
        "bgp.announce": cfg.bgp.announce,
        "bgp.gracefulRestart": cfg.bgp.graceful_restart,
        "onprem": cfg.onprem,
        "routing.mode": cfg.routing_mode,
        "agent.pollInterval": cfg.poll_interval,
    }
    for name, value in fields.items():
        assert config.KEYS[name].parsed_default() == value, name
    assert set(fields) | {
        k.name for k in config.SCHEMA if k.required is not None or config.KEYS[k.name].type is config.SECRET
    } | {"pools.ipv6"} == set(config.KEYS)


@pytest.mark.parametrize("path", STACK_FILES, ids=lambda p: p.name)
def test_stack_files_satisfy_the_json_schema(path):
    schema = json.loads((REPO_ROOT / "docs/config.schema.json").read_text())
    jsonschema.validate(yaml.safe_load(path.read_text()), schema)


@pytest.mark.parametrize(
    "change",
    [
        {"overlay:vpc": {"cidr": "10.20.0.0/16", "azs": ["a"], "ipv7": True}},  # unknown key
        {"overlay:routers": {"count": 99}},  # out of range
        {"overlay:bgp": {"announce": "everything"}},  # not a choice
        {"overlay:onprem": [{"name": "dc1", "address": "198.51.100.1"}]},  # asn missing
    ],
)
def test_json_schema_refuses_what_the_parser_refuses(change):
    schema = json.loads((REPO_ROOT / "docs/config.schema.json").read_text())
    doc = yaml.safe_load((REPO_ROOT / "stacks/Pulumi.lab.yaml").read_text())
    doc["config"].update(change)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, schema)
    raw = {k.split(":", 1)[1]: v for k, v in doc["config"].items() if k.startswith("overlay:")}
    with pytest.raises(config.ConfigError):
        config.parse(raw, "lab")
