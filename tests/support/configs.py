"""Config and document builders shared by the unit tests: the stack config (raw, as parse()
takes it) and the agent document. Test modules import these from here, never from another
test module."""

from __future__ import annotations

import copy

from infra.config import parse
from infra.plan import build_plan

# A small valid stack config (overlay: namespace stripped).
BASE = {
    "region": "eu-west-1",
    "environment": "test",
    "vpc": {"cidr": "10.20.0.0/16", "ipv6": True, "azs": ["eu-west-1a", "eu-west-1b"]},
    "routers": {"count": 2, "asn": 65000},
    "hosts": {"count": 4, "asn": 65100, "blockPrefix": 24},
    "pools": {"ipv4": ["10.96.0.0/16"], "ipv6": ["fd10:96::/48"]},
    "tunnels": {"ipv4": "169.254.64.0/18", "ipv6": "fd10:7e::/64"},
    "onprem": [{"name": "dc1", "address": "198.51.100.10", "asn": 64700}],
}


def with_change(path: str, value):
    raw = copy.deepcopy(BASE)
    node = raw
    *parents, last = path.split(".")
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return raw


def raw_config(
    routers: int,
    hosts: int,
    n_az: int,
    onprem: int,
    max_routers: int = 8,
    ipv6: bool = True,
    per_host_asn: bool = False,
) -> dict:
    raw = {
        "region": "eu-west-1",
        "vpc": {"cidr": "10.20.0.0/16", "ipv6": ipv6, "azs": [f"az-{i}" for i in range(n_az)]},
        "routers": {"count": routers, "asn": 65000, "maxRouters": max_routers},
        "hosts": {
            "count": hosts,
            "asn": 4200000000 if per_host_asn else 65100,
            "asnMode": "per-host" if per_host_asn else "shared",
            "blockPrefix": 26,
        },
        "pools": {"ipv4": ["10.96.0.0/16", "100.64.0.0/16"]},
        "tunnels": {"ipv4": "169.254.64.0/18"},
        "onprem": [{"name": f"dc{i}", "address": f"198.51.100.{i + 1}", "asn": 64700 + i} for i in range(onprem)],
    }
    if ipv6:
        raw["pools"]["ipv6"] = ["fd10:96::/48"]
        raw["tunnels"]["ipv6"] = "fd10:7e::/64"
    return raw


def plan_for(**kw):
    return build_plan(parse(raw_config(**kw), "prop"))


def agent_doc(**over):
    """A valid host `agent` document (docs/contracts.md), with top-level keys replaced."""
    d = {
        "schema": 1,
        "project": "overlay",
        "stack": "lab",
        "instance": "host-1",
        "role": "host",
        "asn": 65101,
        "underlay": {"address": "10.20.0.10"},
        "blocks": {"ipv4": "100.64.0.0/26", "ipv6": "fd00:64::/112"},
        "pools": {"ipv4": ["100.64.0.0/16"], "ipv6": ["fd00:64::/48"]},
        "settings": {
            "route_protocol": 149,
            "route_protocol_name": "overlay",
            "poll_interval": 15,
            "resync_interval": 30,
        },
    }
    d.update(over)
    return d
