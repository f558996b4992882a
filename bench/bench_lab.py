"""Lab figures: `up` time, container start -> /32 at a router and -> reachable from on-prem, stop -> withdrawn (p50/p99)."""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time

from lab import demo, stack

SAMPLES = int(os.environ.get("SAMPLES", "30"))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> int:
    name = sys.argv[1] if len(sys.argv) > 1 else "lab"
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, kernel {platform.release()}, "
        f"python {platform.python_version()}"
    )
    lab = stack.Lab.load(name, say=lambda line: None)
    stack.down(lab, quiet=True)
    t0 = time.monotonic()
    stack.up(lab)
    print(f"lab up (stack {name}): {time.monotonic() - t0:.1f} s")
    router = lab.plan.routers[0].name
    site = lab.topo.sites[0]
    host = lab.plan.hosts[0].name
    to_router, to_onprem, withdraw = [], [], []
    try:
        for i in range(SAMPLES):
            cname = f"bench-{i}"
            t = time.monotonic()
            demo.start_container(lab, host, cname, {"overlay": "auto"})
            v4, _ = demo.container_addresses(lab, host, cname)
            demo.wait_route(lab, router, f"{v4}/32", timeout=30)
            to_router.append(time.monotonic() - t)
            while demo.http_get(site.client_ns, v4, timeout=0.5) is None:
                if time.monotonic() - t > 30:
                    raise RuntimeError(f"{v4} not reachable from on-prem")
            to_onprem.append(time.monotonic() - t)
            t = time.monotonic()
            demo.remove_container(lab, host, cname)
            demo.wait_route(lab, router, f"{v4}/32", present=False, timeout=30)
            withdraw.append(time.monotonic() - t)
    finally:
        stack.down(lab, quiet=True)
    for label, values in (
        ("start -> /32 at router", to_router),
        ("start -> reachable from on-prem", to_onprem),
        ("stop -> /32 gone at router", withdraw),
    ):
        print(
            f"{label:<34} p50 {statistics.median(values) * 1000:6.0f} ms   p99 {pct(values, 0.99) * 1000:6.0f} ms"
            f"   (n={len(values)}; includes `docker run`/`rm -f` API calls)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
