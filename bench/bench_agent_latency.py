"""Agent wiring latency with real Docker and FRR: start event -> /32 in the host FIB and at the router; a 200-container burst (root).

Run from the repository root:  .venv/bin/python bench/bench_agent_latency.py [--sequential N] [--burst N]
                                                                           [--guard on|off|both]

Times: Docker's own `start` event timestamp (timeNano, same clock) to the moment
`ip monitor route` in the host / router namespace prints the route (read by a thread here,
so the figures include up to a millisecond or so of reading delay).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import docker

from lab.poll import wait_until
from lab.agentsite import Site  # one docker host and a router: netns, dockerd, FRR, the agent


class RouteWatch:
    """`ip monitor route` in a namespace: first time each prefix was added (time.time_ns())."""

    def __init__(self, netns: str):
        self.seen: dict[str, int] = {}
        self.proc = subprocess.Popen(
            ["ip", "-n", netns, "monitor", "route"], stdout=subprocess.PIPE, text=True, bufsize=1
        )
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            now = time.time_ns()
            if line.startswith("Deleted"):
                continue
            prefix = line.split()[0]
            if prefix.count(".") == 3:
                self.seen.setdefault(prefix if "/" in prefix else prefix + "/32", now)

    def has(self, prefix: str) -> bool:
        return prefix in self.seen

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=5)


class StartEvents:
    """Docker `start` events: container id -> timeNano."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.at: dict[str, int] = {}
        self.stream = client.api.events(decode=True, filters={"type": "container", "event": "start"})
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for ev in self.stream:
                self.at[ev["Actor"]["ID"]] = int(ev["timeNano"])
        except Exception:  # noqa: BLE001 - the stream is closed at the end
            pass

    def stop(self) -> None:
        self.stream.close()


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def fmt(values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return (
        f"n={len(ms)} p50={pct(ms, 0.5):.1f} ms p90={pct(ms, 0.9):.1f} ms p99={pct(ms, 0.99):.1f} ms "
        f"max={max(ms):.1f} ms mean={statistics.mean(ms):.1f} ms"
    )


def measure(site: Site, args: argparse.Namespace, guard: bool) -> None:
    """One agent (with or without its anti-spoofing table), the sequential and the burst figures."""
    label = "guard on " if guard else "guard off"
    agent = site.agent(*(() if guard else ("--no-guard",))).start()
    agent.wait_ready()
    host_watch, router_watch = RouteWatch(site.host), RouteWatch(site.router)
    client = site.docker
    assert client is not None  # started
    starts = StartEvents(client)
    time.sleep(0.5)
    try:
        # 1. one at a time
        ids: dict[str, str] = {}
        for i in range(args.sequential):
            addr = f"100.64.20.{i + 1}"
            c = site.run("sleep", "3600", labels={"overlay.ipv4": addr})
            ids[c.id] = addr + "/32"
            wait_until(partial(router_watch.has, addr + "/32"), 30, interval=0.005, what=f"router learns {addr}")
        host_lat = [(host_watch.seen[p] - starts.at[cid]) / 1e9 for cid, p in ids.items()]
        router_lat = [(router_watch.seen[p] - starts.at[cid]) / 1e9 for cid, p in ids.items()]
        print(f"[{label}] start event -> /32 in host FIB   ({args.sequential} sequential): {fmt(host_lat)}")
        print(f"[{label}] start event -> /32 at the router ({args.sequential} sequential): {fmt(router_lat)}")
        if guard:
            # the table really follows the wiring: every container's address is in its set
            table = subprocess.run(
                ["ip", "netns", "exec", site.host, "nft", "list", "table", "inet", "overlay_guard"],
                capture_output=True,
                text=True,
            ).stdout
            missing = [p for p in ids.values() if not re.search(rf"\. {re.escape(p.split('/')[0])}(?![.\d])", table)]
            assert not missing, f"anti-spoofing set lacks {missing[:3]}"
        site.remove_all()
        wait_until(lambda: not site.host_routes(), 60, what="routes gone")

        # 2. a burst: N containers started together (8 client threads)
        if args.burst:
            burst: dict[str, str] = {}

            def start_one(i: int) -> None:
                addr = f"100.64.{30 + i // 250}.{1 + i % 250}"
                c = client.containers.run(
                    site.image, ["sleep", "3600"], labels={"overlay.ipv4": addr}, network_mode="none", detach=True
                )
                assert c.id is not None
                burst[c.id] = addr + "/32"

            t0 = time.monotonic()
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(start_one, range(args.burst)))
            started = time.monotonic() - t0
            wait_until(
                lambda: all(p in host_watch.seen for p in burst.values()), 120, interval=0.01, what="burst wired"
            )
            wait_until(lambda: all(cid in starts.at for cid in burst), 30, what="all start events")
            last_start = max(starts.at[cid] for cid in burst)
            last_route = max(host_watch.seen[p] for p in burst.values())
            print(
                f"[{label}] burst of {args.burst}: docker took {started:.1f} s to start them; last /32 in host "
                f"FIB {(last_route - last_start) / 1e9 * 1000:.0f} ms after the last start event"
            )
            wait_until(
                lambda: all(p in router_watch.seen for p in burst.values()), 120, interval=0.05, what="burst at router"
            )
            last_router = max(router_watch.seen[p] for p in burst.values())
            print(
                f"[{label}] burst of {args.burst}: last /32 at the router "
                f"{(last_router - last_start) / 1e9 * 1000:.0f} ms after the last start event"
            )
            site.remove_all()
            wait_until(lambda: not site.host_routes(), 60, what="routes gone")
        print(f"[{label}] agent RSS: {agent.rss_kb() / 1024:.1f} MB", flush=True)
    finally:
        starts.stop()
        host_watch.stop()
        router_watch.stop()
        agent.stop()
        # the next agent starts from a host without the table (as one started with --no-guard finds it)
        subprocess.run(
            ["ip", "netns", "exec", site.host, "nft", "delete", "table", "inet", "overlay_guard"], capture_output=True
        )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sequential", type=int, default=100, help="containers started one by one")
    ap.add_argument("--burst", type=int, default=200, help="containers started together (0: none)")
    ap.add_argument(
        "--guard",
        choices=("on", "off", "both"),
        default="both",
        help="the agent's anti-spoofing table (nftables): on (the default agent), off "
        "(--no-guard, the wiring as before the table), or both, one after the other",
    )
    args = ap.parse_args()
    print(
        f"machine: {os.cpu_count()} cpus, {platform.platform()}, kernel {platform.release()}, "
        f"load {os.getloadavg()[0]:.1f}"
    )
    site = Site(with_frr=True)
    try:
        site.start()
        for guard in {"on": (True,), "off": (False,), "both": (True, False)}[args.guard]:
            measure(site, args, guard)
    finally:
        site.stop()
    print(f"load after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
