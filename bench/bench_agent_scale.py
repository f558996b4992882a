"""Agent at scale with real Docker and FRR: N containers on one host (default 1,000): all reachable, agent RSS, idle resync time (root).

Run from the repository root:  .venv/bin/python bench/bench_agent_scale.py [--count N]

Every container gets an explicit IPv4 address (the test block is a /26) and an IPv6
address from the host's block. Reachability: one ICMP echo from the router namespace to
every /32. The idle resync figure is the agent's own overlay_resync_seconds histogram
over resyncs that ran after everything was wired (nothing to change).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lab.poll import wait_until
from lab.agentsite import Site  # one docker host and a router: netns, dockerd, FRR, the agent


def metric(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def mem_available_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--resync-interval", type=float, default=5.0)
    args = ap.parse_args()
    print(
        f"machine: {os.cpu_count()} cpus, {platform.platform()}, kernel {platform.release()}, "
        f"{mem_available_mb()} MB available"
    )
    # The ARP/ND tables are shared by all namespaces and each container costs two entries;
    # the defaults (gc_thresh3 1024) overflow near 500 containers ("neighbor table
    # overflow!", containers unreachable). A docker host needs these raised (user data); so
    # does this machine for the run. Raising them only adds capacity; restored at the end.
    keys = [f"/proc/sys/net/ipv{v}/neigh/default/gc_thresh{i}" for v in (4, 6) for i in (1, 2, 3)]
    saved = {k: Path(k).read_text().strip() for k in keys}
    floor = {"1": 8192, "2": 32768, "3": 65536}
    for k in keys:
        Path(k).write_text(str(max(int(saved[k]), floor[k[-1]])))
    site = Site(with_frr=True, resync_interval=args.resync_interval)
    try:
        site.start()
        agent = site.agent().start()
        agent.wait_ready()
        addrs = [f"100.64.{40 + i // 250}.{1 + i % 250}" for i in range(args.count)]

        client = site.docker
        assert client is not None  # started

        def start_one(addr: str) -> None:
            client.containers.run(
                site.image, ["sleep", "36000"], labels={"overlay.ipv4": addr}, network_mode="none", detach=True
            )

        t0 = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            for i, _ in enumerate(pool.map(start_one, addrs)):
                if i % 250 == 249:
                    print(
                        f"  {i + 1} started ({time.monotonic() - t0:.0f} s, {mem_available_mb()} MB available)",
                        flush=True,
                    )
        print(f"docker started {args.count} containers in {time.monotonic() - t0:.1f} s")
        want = {a + "/32" for a in addrs}
        wait_until(lambda: want <= set(site.host_routes()), 120, interval=0.5, what="all wired")
        print(f"all {args.count} wired (host FIB) {time.monotonic() - t0:.1f} s after the first start")
        wait_until(lambda: want <= site.router_fib(), 300, interval=1, what="router has all")
        print(
            f"router has all {args.count} /32s (and the /128s: "
            f"{sum(1 for p in site.router_fib() if ':' in p)}) {time.monotonic() - t0:.1f} s after the first start"
        )

        def ping(addr: str) -> bool:
            out = subprocess.run(["ip", "netns", "exec", site.router, "ping", "-c1", "-W2", addr], capture_output=True)
            return out.returncode == 0

        t1 = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            ok = sum(pool.map(ping, addrs))
        print(f"reachable from the router (ICMP): {ok}/{args.count} ({time.monotonic() - t1:.1f} s)")

        m0 = agent.metrics()
        s0, n0 = metric(m0, "overlay_resync_seconds_sum"), metric(m0, "overlay_resync_seconds_count")
        time.sleep(args.resync_interval * 3 + 1)
        m1 = agent.metrics()
        s1, n1 = metric(m1, "overlay_resync_seconds_sum"), metric(m1, "overlay_resync_seconds_count")
        changes0 = sum(float(x) for x in re.findall(r"^overlay_netlink_changes_total\{.*\} ([0-9.e+]+)$", m0, re.M))
        changes1 = sum(float(x) for x in re.findall(r"^overlay_netlink_changes_total\{.*\} ([0-9.e+]+)$", m1, re.M))
        if n1 > n0:
            print(
                f"idle full resync with {args.count} containers: {(s1 - s0) / (n1 - n0) * 1000:.0f} ms mean over "
                f"{int(n1 - n0)} resyncs; kernel changes meanwhile: {int(changes1 - changes0)}"
            )
        print(f"agent RSS with {args.count} containers: {agent.rss_kb() / 1024:.1f} MB")

        # Agent restart with everything running: the router's FIB must not lose a route.
        watch = subprocess.Popen(["ip", "-n", site.router, "monitor", "route"], stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)
        t3 = time.time()
        agent.stop()
        agent.start()
        agent.wait_ready(since=t3, timeout=120)
        ready = time.time() - t3
        time.sleep(2)
        watch.terminate()
        lines = watch.communicate(timeout=10)[0].splitlines()
        deleted = [ln for ln in lines if ln.startswith("Deleted") and " 100.64." in " " + ln]
        print(
            f"agent restart with {args.count} containers: first full pass done {ready:.2f} s after SIGTERM; "
            f"routes deleted at the router meanwhile: {len(deleted)}; route changes at the router: {len(lines)}"
        )
        t2 = time.monotonic()
        site.remove_all()
        wait_until(lambda: not site.host_routes(), 300, interval=1, what="all routes gone")
        print(f"removed all in {time.monotonic() - t2:.1f} s; no route of protocol 149 left")
    finally:
        site.stop()
        for k, v in saved.items():
            Path(k).write_text(v)
    return 0


if __name__ == "__main__":
    sys.exit(main())
