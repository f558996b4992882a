"""Pairing apply speed: a router with 100 host tunnels (userspace GRE, real netlink) applies one host added (root)."""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python bench/bench_pairing.py`

import yaml
from pyroute2 import IPRoute

from infra.parameters import build_parameters
from infra.plan import build_plan
from infra.stackfile import STACKS_DIR, load_stack
from bench.pairing_rig import Rig, instance_snapshot, router_namespace
from overlay_agent.gre.userspace import UserspaceBackend
from overlay_agent.ssm import Snapshot
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
    return instance_snapshot(plan, params, "router-1", rev, None)


def main() -> None:
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cpu(s), kernel {platform.release()}, "
        f"python {platform.python_version()}"
    )
    tmp = Path(tempfile.mkdtemp(prefix="bench-pairing-"))
    stacks = tmp / "stacks"
    stacks.mkdir()
    try:
        snaps = {n: router_snapshot(stacks, n, f"r{n}") for n in range(HOSTS, HOSTS + ROUNDS + 1)}
        # The router's ENI: its private address and a default route via the VPC router.
        with router_namespace("bp", "10.40.128.10/20", "10.40.128.1") as ns, IPRoute(netns=ns) as ipr:
            backend = UserspaceBackend(tmp / "state", netns=ns)
            rig = Rig(snaps[HOSTS], tmp / "state", TunnelReconciler(backend, PyrouteTunnels(ipr)))
            t0 = time.perf_counter()
            rig.boot()
            first = time.perf_counter() - t0
            sync = rig.sync
            assert sync.report is not None
            up = sum(1 for t in sync.report.tunnels if t.state == "up")
            print(f"initial apply: {len(sync.report.tunnels)} tunnels ({up} up) in {first:.2f} s")
            times, idle = [], []
            for n in range(HOSTS + 1, HOSTS + ROUNDS + 1):
                times.append(rig.publish(snaps[n]))
                assert len(sync.report.tunnels) == n and sync.report.changes > 0
            if os.environ.get("BENCH_PROFILE"):
                import cProfile

                cProfile.runctx("sync.apply(resync=True)", globals(), locals(), sort="cumtime")
            for _ in range(ROUNDS):
                idle.append(rig.resync())  # nothing changed: the resync cost
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
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
