"""Pairing apply speed: a router with 100 host tunnels (userspace GRE, real netlink) applies one host added (root)."""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python bench/bench_pairing.py`

import yaml
from pyroute2 import IPRoute

from infra.parameters import build_parameters, instance_path
from infra.plan import build_plan
from infra.stackfile import STACKS_DIR, load_stack
from lab.underlay import kill_namespace_processes
from overlay_agent.gre.userspace import UserspaceBackend
from overlay_agent.documents import DocumentSource
from overlay_agent.pairing import attach
from overlay_agent.ssm import Cache, Poller, Snapshot
from overlay_agent.tunnels import PyrouteTunnels, TunnelReconciler

HOSTS = 100
ROUNDS = 5


def router_snapshot(stacks: Path, hosts: int, rev: str) -> Snapshot:
    """router-1's parameters for the lab stack with `hosts` hosts, from the program's own functions."""
    doc = yaml.safe_load((STACKS_DIR / "Pulumi.lab.yaml").read_text())
    doc["config"]["overlay:hosts"]["count"] = hosts
    doc["config"]["overlay:onprem"] = []
    (stacks / "Pulumi.lab.yaml").write_text(yaml.safe_dump(doc))
    plan = build_plan(load_stack("lab", stacks))
    params = build_parameters(plan, lambda name: "! frr config unchanged by hosts\n")
    base = instance_path(plan, "router-1")
    vals = {k[len(base) + 1 :]: p.value for k, p in params.items() if k.startswith(base + "/")}
    return Snapshot(
        rev, vals["agent"], vals["frr"], {k: v for k, v in vals.items() if k.startswith("tunnels/")}, None, time.time()
    )


class Fixed:
    """A parameter source returning whatever snapshot the benchmark sets (the read is not timed)."""

    def __init__(self, snap):
        self.snap = snap

    def revision(self):
        return self.snap.revision

    def fetch(self):
        return self.snap


def sh(*args, ns=None):
    subprocess.run((["ip", "netns", "exec", ns] if ns else []) + list(args), check=True, capture_output=True)


def main() -> None:
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cpu(s), kernel {platform.release()}, "
        f"python {platform.python_version()}"
    )
    ns = f"ovtbp{os.getpid() % 100000}"
    tmp = Path(tempfile.mkdtemp(prefix="bench-pairing-"))
    stacks = tmp / "stacks"
    stacks.mkdir()
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "link", "set", "lo", "up", ns=ns)
        # The router's ENI: its private address and a default route via the VPC router.
        sh("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p", ns=ns)
        sh("ip", "addr", "add", "10.40.128.10/20", "dev", "eth0", ns=ns)
        sh("ip", "link", "set", "eth0", "up", ns=ns)
        sh("ip", "link", "set", "eth0p", "up", ns=ns)
        sh("ip", "route", "add", "default", "via", "10.40.128.1", ns=ns)
        snaps = {n: router_snapshot(stacks, n, f"r{n}") for n in range(HOSTS, HOSTS + ROUNDS + 1)}
        with IPRoute(netns=ns) as ipr:
            backend = UserspaceBackend(tmp / "state", netns=ns)
            src = Fixed(snaps[HOSTS])
            cache = Cache(tmp / "state")
            source = DocumentSource(Poller(src, cache), cache)
            sync = attach(source, TunnelReconciler(backend, PyrouteTunnels(ipr)), None, tmp / "state")
            t0 = time.perf_counter()
            source.start()
            sync.step(now=0.0)
            first = time.perf_counter() - t0
            up = sum(1 for t in sync.report.tunnels if t.state == "up")
            print(f"initial apply: {len(sync.report.tunnels)} tunnels ({up} up) in {first:.2f} s")
            times, idle = [], []
            for n in range(HOSTS + 1, HOSTS + ROUNDS + 1):
                src.snap = snaps[n]
                source.hup()
                source.step(now=1.0)  # reads the new revision and offers it
                sync.step(now=1.0)  # applies it
                times.append(sync.last_apply_seconds)
                assert len(sync.report.tunnels) == n and sync.report.changes > 0
            if os.environ.get("BENCH_PROFILE"):
                import cProfile

                cProfile.runctx("sync.apply(resync=True)", globals(), locals(), sort="cumtime")
            for _ in range(ROUNDS):
                sync.apply(resync=True)  # nothing changed: the resync cost
                idle.append(sync.last_apply_seconds)
            print(
                f"one host added to {HOSTS}..{HOSTS + ROUNDS - 1} tunnels, apply after the read: "
                f"median {statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms"
            )
            print(
                f"resync with nothing to change ({HOSTS + ROUNDS} tunnels): median "
                f"{statistics.median(idle) * 1000:.0f} ms"
            )
            backend.close()
    finally:
        kill_namespace_processes(ns)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
