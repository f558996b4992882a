"""Plan speed: stack config -> OverlayPlan for 1,000 hosts x 4 routers (goal: under 1 s)."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from infra.config import parse
from infra.plan import OverlayPlan, build_plan
from infra.plan.report import to_json, to_markdown


def raw(hosts: int, routers: int) -> dict[str, Any]:
    return {
        "region": "eu-west-1",
        "vpc": {"cidr": "10.20.0.0/16", "azs": ["a", "b", "c"]},
        "routers": {"count": routers, "maxRouters": 4},
        "hosts": {"count": hosts, "blockPrefix": 24},
        "pools": {"ipv4": ["10.96.0.0/14"], "ipv6": ["fd10:96::/48"]},
        "tunnels": {"ipv4": "169.254.64.0/18", "ipv6": "fd10:7e::/64"},
        "onprem": [
            {"name": "dc1", "address": "198.51.100.1", "asn": 64700},
            {"name": "dc2", "address": "198.51.100.2", "asn": 64701},
        ],
    }


def config_and_plan(hosts: int, routers: int) -> OverlayPlan:
    return build_plan(parse(raw(hosts, routers), "bench"))


def timed(fn: Callable[[], object], repeat: int = 5) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    print(f"machine: {platform.machine()} {platform.processor() or ''} python {platform.python_version()}")
    for hosts, routers in ((100, 2), (1000, 4)):
        plan_t = timed(partial(config_and_plan, hosts, routers))
        plan = config_and_plan(hosts, routers)
        json_t = timed(partial(to_json, plan), 3)
        md_t = timed(partial(to_markdown, plan), 3)
        print(
            f"{hosts:5d} hosts x {routers} routers ({len(plan.pairings)} pairings): "
            f"config+plan median {statistics.median(plan_t) * 1000:.0f} ms (max {max(plan_t) * 1000:.0f} ms), "
            f"json {statistics.median(json_t) * 1000:.0f} ms, markdown {statistics.median(md_t) * 1000:.0f} ms"
        )


if __name__ == "__main__":
    main()
