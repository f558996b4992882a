"""Plans the render tests run over: every stack in stacks/ plus generated ones at the edges (size, IPv4 only, options)."""

from __future__ import annotations

from typing import Any

from infra.config import parse
from infra.plan import build_plan
from infra.plan.model import OverlayPlan
from infra.stackfile import list_stacks, load_stack

BUCKET = "overlay-artifacts-123456789012"
AGENT_KEY = "agent/overlay-agent-bundle.tar"

GENERATED: dict[str, dict[str, Any]] = {
    # The largest stack the renderer must handle: 8 routers (the most a host's FRR config
    # lists), 500 hosts (with 8 routers, about the most SSM's default 10,000 Standard
    # parameters allow: 9,049, see infra.config._check_ssm_quotas), per-host ASNs, several
    # pools, on-prem peers, graceful restart on, specifics to on-prem.
    "gen-large": {
        "region": "eu-central-1",
        "environment": "prod",
        "vpc": {"cidr": "10.20.0.0/16", "azs": ["eu-central-1a", "eu-central-1b", "eu-central-1c"]},
        "routers": {"count": 8, "asn": 4200000000, "maxRouters": 8},
        "hosts": {"count": 500, "asnMode": "per-host", "asn": 4200001000, "blockPrefix": 24},
        "pools": {"ipv4": ["100.64.0.0/12", "100.80.0.0/14"], "ipv6": ["fd10:96::/48", "fd10:97::/48"]},
        "tunnels": {"ipv4": "172.16.0.0/16", "ipv6": "fd10:7e::/64"},
        "bgp": {"announce": "specifics", "gracefulRestart": True, "maxPrefix": 100000},
        "onprem": [{"name": f"dc{i}", "address": f"198.51.100.{i}", "asn": 64600 + i} for i in range(1, 5)],
    },
    # IPv4 only, one router, one host, nobody on-prem.
    "gen-v4only": {
        "region": "us-west-2",
        "vpc": {"cidr": "10.50.0.0/24", "ipv6": False, "azs": ["us-west-2a"]},
        "routers": {"count": 1, "maxRouters": 1},
        "hosts": {"count": 1},
        "pools": {"ipv4": ["10.98.0.0/24"]},
        "tunnels": {"ipv4": "169.254.200.0/24"},
    },
    # Many routers: every host config names all of them. 32 is the most whose host config
    # still fits one SSM parameter (8 KB, advanced tier); see docs/frr.md.
    "gen-many-routers": {
        "region": "ap-southeast-2",
        "vpc": {"cidr": "10.60.0.0/16", "azs": ["ap-southeast-2a", "ap-southeast-2b"]},
        "routers": {"count": 32, "maxRouters": 32},
        "hosts": {"count": 3},
        "pools": {"ipv4": ["10.90.0.0/16"], "ipv6": ["fd10:90::/48"]},
        "tunnels": {"ipv4": "172.20.0.0/16", "ipv6": "fd10:7d::/64"},
        "onprem": [{"name": "edge", "address": "203.0.113.9", "asn": 64512}],
    },
}


def generated_plan(name: str, **overrides: Any) -> OverlayPlan:
    raw = {**GENERATED[name], **overrides}
    return build_plan(parse(raw, name))


def stack_plans() -> dict[str, OverlayPlan]:
    return {name: build_plan(load_stack(name)) for name in list_stacks()}


def all_plans() -> dict[str, OverlayPlan]:
    plans = stack_plans()
    plans.update({name: generated_plan(name) for name in GENERATED})
    return plans


def fake_eips(plan: OverlayPlan) -> dict[str, str]:
    """Documentation-range stand-ins for the routers' EIPs (known only once AWS allocates them)."""
    return {r.name: f"192.0.2.{r.index + 1}" for r in plan.routers}


def random_raw(
    routers: int,
    hosts: int,
    n_az: int,
    onprem: int,
    ipv6: bool,
    per_host: bool,
    graceful_restart: bool,
    specifics: bool,
    pools: int,
) -> dict[str, Any]:
    """A valid stack config from a few knobs (for property tests)."""
    raw: dict[str, Any] = {
        "region": "eu-west-1",
        "vpc": {"cidr": "10.20.0.0/16", "ipv6": ipv6, "azs": [f"eu-west-1{c}" for c in "abcd"[:n_az]]},
        "routers": {"count": routers, "maxRouters": 8},
        "hosts": {
            "count": hosts,
            "blockPrefix": 24,
            **({"asnMode": "per-host", "asn": 4200000000} if per_host else {"asn": 65100}),
        },
        "pools": {"ipv4": [f"10.{96 + i}.0.0/16" for i in range(pools)]},
        "tunnels": {"ipv4": "169.254.64.0/18"},
        "bgp": {"gracefulRestart": graceful_restart, "announce": "specifics" if specifics else "aggregates"},
        "onprem": [{"name": f"dc{i}", "address": f"198.51.100.{i + 1}", "asn": 64600 + i} for i in range(onprem)],
    }
    if ipv6:
        raw["pools"]["ipv6"] = [f"fd10:{96 + i}::/48" for i in range(pools)]
        raw["tunnels"]["ipv6"] = "fd10:7e::/64"
    return raw


def one_router_one_host(bgp: dict[str, Any], onprem: list[dict[str, Any]] | None = None) -> OverlayPlan:
    """The smallest plan with real FRR on both ends: one router, one host, IPv6 on (tests/frr)."""
    raw: dict[str, Any] = {
        "region": "eu-west-1",
        "vpc": {"cidr": "10.40.0.0/16", "azs": ["lab-a"]},
        "routers": {"count": 1, "asn": 65000},
        "hosts": {"count": 1, "asn": 65100},
        "pools": {"ipv4": ["10.99.0.0/16"], "ipv6": ["fd10:99::/48"]},
        "tunnels": {"ipv4": "169.254.64.0/20", "ipv6": "fd10:7e::/64", "mtu": 1472},
        "bgp": bgp,
    }
    if onprem is not None:
        raw["onprem"] = onprem
    return build_plan(parse(raw, "frrtest"))
