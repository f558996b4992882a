"""VPC-side failover in the lab (routeServer mode): router frozen -> VPC-native pings answered again, p50/p99.

`python -m bench.bench_vpc_failover [RUNS]` (root, under the heavy lock): brings up the lab
stack with vpc.failover routeServer under its own name, starts one container on host-1,
then repeats lab.failover.run_once RUNS times (default 20): ping every 10 ms from the
VPC-native instance, SIGSTOP every process of the preferred router, wait for the replies to
come back through the other router, SIGCONT, wait for the tables to return.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

from infra.stackfile import stack_path
from lab import demo, failover, stack

NAME = "rsbench"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> int:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, kernel {platform.release()}, "
        f"python {platform.python_version()}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        doc = yaml.safe_load(stack_path("lab").read_text())
        doc["config"]["overlay:vpc"]["failover"] = "routeServer"
        Path(tmp, f"Pulumi.{NAME}.yaml").write_text(yaml.safe_dump(doc))
        lab = stack.Lab.load(NAME, Path(tmp), say=lambda line: None)
        stack.down(lab, quiet=True)
        results = []
        try:
            stack.up(lab)
            from lab import egress

            demo.start_container(lab, "host-1", "bench-rs", {"overlay": "auto"})
            v4, _ = demo.container_addresses(lab, "host-1", "bench-rs")
            demo.start_container(lab, "host-2", "bench-peer", {"overlay": "auto"})
            demo.container_addresses(lab, "host-2", "bench-peer")
            others = {
                "onprem": (None, lab.topo.sites[0].client_ns, v4),
                "host_to_host": (failover.container_enter(lab, "host-2", "bench-peer"), None, v4),
                "egress": (failover.container_enter(lab, "host-1", "bench-rs"), None, str(egress.WWW_V4)),
            }
            pool = str(lab.plan.pools_v4[0])
            failover.wait_for(lambda: failover.vpc_choice(lab, pool) == "router-1", 30, "pool on router-1")
            for i in range(runs):
                r = failover.run_once(lab, v4, pool, others=others)
                print(f"run {i + 1}: {r.to_json()}", flush=True)
                results.append(r)
        finally:
            stack.down(lab, quiet=True)
    bfd = lab.plan.bgp
    print(f"BFD {bfd.bfd_interval_ms} ms x {bfd.bfd_multiplier}; n={len(results)}")
    for label, values in (
        ("freeze -> replies again (longest gap)", [r.outage_s for r in results]),
        ("freeze -> tables on the takeover router", [r.detect_s for r in results]),
        ("thaw -> tables back on the preferred router", [r.return_s for r in results]),
        *((f"{k}: longest gap", [r.others[k][0] for r in results]) for k in ("onprem", "host_to_host", "egress")),
    ):
        print(
            f"{label:<46} p50 {statistics.median(values) * 1000:6.0f} ms   p99 {pct(values, 0.99) * 1000:6.0f} ms"
            f"   max {max(values) * 1000:6.0f} ms"
        )
    print(
        f"echoes lost after the thaw: VPC-native {sum(len(r.lost_after_thaw) for r in results)}, "
        + ", ".join(f"{k} {sum(r.others[k][1] for r in results)}" for k in ("onprem", "host_to_host", "egress"))
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
