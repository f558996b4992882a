"""A router with per-host import filters for N hosts: the agent's apply, timed (root, FRR, userspace GRE).

    flock /tmp/overlay-heavy.lock .venv/bin/python bench/bench_router_filters.py [hosts ...]
    .venv/bin/python bench/bench_router_filters.py --sizes [hosts ...]     # sizes only, no root

The `frr` parameter is the same for any host count; the router's agent appends one filter
entry per host (overlay_agent.tunnels.host_filters) and applies the whole text with
frr-reload. Timed here is the agent's own apply (`PairingSync.apply`: N GRE tunnels through
the userspace backend and real netlink, then `frr-reload --test`, `--reload` and `--test`
again against a real FRR in a scratch namespace), at three moments:

- boot: FRR runs the `frr` parameter as user data left it, the agent applies N tunnels and
  the N hosts' filters at once;
- one host added (a new `tunnels/<host>` parameter: one tunnel, one filter entry);
- the resync every 30 s with nothing to change (`frr-reload --test` over the whole text).

Each is measured with the filters and, as the control, with `host_filters` returning nothing
(the apply as it was before per-host filters), so the difference is the filters' cost.
Also printed: the applied text's size.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python bench/bench_router_filters.py`

from pyroute2 import IPRoute

from infra.config import parse
from infra.parameters import build_parameters, instance_path
from infra.plan import build_plan
from infra.render import render_frr
from lab.frr import FRR
from lab.underlay import kill_namespace_processes
from overlay_agent import pairing
from overlay_agent.frr import Frr, fill_password
from overlay_agent.gre.userspace import UserspaceBackend
from overlay_agent.documents import DocumentSource
from overlay_agent.pairing import attach
from overlay_agent.ssm import Cache, Poller, Snapshot
from overlay_agent.tunnels import HOST_FILTER_SEQ, PyrouteTunnels, TunnelReconciler, parse_tunnels

PASSWORD = "bench-secret"
ADDED = 3  # hosts added one at a time after the boot apply
IDLE = 3  # resyncs with nothing to change


def router_snapshot(hosts: int) -> tuple[Snapshot, str]:
    """router-1's parameters for a dual-stack stack of `hosts` hosts (one ASN each), and its private address."""
    plan = build_plan(
        parse(
            {
                "region": "eu-west-1",
                "vpc": {"cidr": "10.20.0.0/16", "azs": ["a", "b"]},
                "routers": {"count": 2},
                "hosts": {"count": hosts, "asnMode": "per-host", "blockPrefix": 24},
                "pools": {
                    "ipv4": ["100.64.0.0/12"],
                    "ipv6": ["fd10:96::/48"],
                    "sharedIpv4": ["100.79.255.0/24"],
                    "sharedIpv6": ["fd10:96:0:ffff::/120"],
                },
                "tunnels": {"ipv4": "172.16.0.0/16", "ipv6": "fd10:7e::/64"},
                "agent": {"pollInterval": 120},  # SSM's request quota with 1,000 hosts
            },
            "bench",
        )
    )
    params = build_parameters(plan, lambda n: render_frr(plan, n) if n == "router-1" else "!\n")
    base = instance_path(plan, "router-1") + "/"
    vals = {k[len(base) :]: p.value for k, p in params.items() if k.startswith(base)}
    snap = Snapshot(
        f"h{hosts}",
        vals["agent"],
        vals["frr"],
        {k: v for k, v in vals.items() if k.startswith("tunnels/")},
        PASSWORD,
        time.time(),
    )
    return snap, str(plan.routers[0].private_ip)


class Fixed:
    """A parameter source returning whatever snapshot the benchmark sets (the read is not timed)."""

    def __init__(self, snap: Snapshot):
        self.snap = snap

    def revision(self) -> str:
        return self.snap.revision

    def fetch(self) -> Snapshot:
        return self.snap


def sh(*args: str, ns: str | None = None) -> None:
    subprocess.run((["ip", "netns", "exec", ns] if ns else []) + list(args), check=True, capture_output=True)


def one_round(hosts: int, filters: bool) -> dict:
    snaps = {n: router_snapshot(n) for n in range(hosts, hosts + ADDED + 1)}
    snap, address = snaps[hosts]
    ns = f"ovtbf{os.getpid() % 100000}"
    tmp = Path(tempfile.mkdtemp(prefix="bench-filters-"))
    frr = backend = None
    real_filters = pairing.host_filters
    pairing.host_filters = real_filters if filters else (lambda tunnels: "")
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "link", "set", "lo", "up", ns=ns)
        # The router's ENI: its private address; tunnel packets leave by it (nobody answers).
        sh("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p", ns=ns)
        sh("ip", "addr", "add", f"{address}/16", "dev", "eth0", ns=ns)
        sh("ip", "link", "set", "eth0", "up", ns=ns)
        sh("ip", "link", "set", "eth0p", "up", ns=ns)
        # FRR as the router boots: the `frr` parameter (user data's copy), no host filters yet.
        frr = FRR(ns, "router", daemons=("zebra", "bgpd", "bfdd", "staticd"))
        frr.start(fill_password(snap.frr, PASSWORD), timeout=120)
        agent_frr = Frr(tmp / "state", vty_socket=str(frr.vty_dir), confdir=str(frr.dir))
        with IPRoute(netns=ns) as ipr:
            backend = UserspaceBackend(tmp / "state", netns=ns)
            src = Fixed(snap)
            cache = Cache(tmp / "state")
            source = DocumentSource(Poller(src, cache), cache)
            sync = attach(source, TunnelReconciler(backend, PyrouteTunnels(ipr)), agent_frr, tmp / "state")
            source.start()
            sync.step(now=0.0)
            boot = sync.last_apply_seconds
            assert sync.frr_state.error is None, sync.frr_state.error
            assert len(sync.report.tunnels) == hosts
            text = sync.frr_state.applied or ""
            assert (f"route-map HOSTS-IN permit {HOST_FILTER_SEQ + hosts - 1}" in text) == filters
            added = []
            for n in range(hosts + 1, hosts + ADDED + 1):
                src.snap = snaps[n][0]
                source.hup()
                source.step(now=1.0)  # reads the new revision and offers it
                sync.step(now=1.0)  # applies it
                added.append(sync.last_apply_seconds)
                assert sync.frr_state.error is None, sync.frr_state.error
                assert len(sync.report.tunnels) == n
            reloads = sync.frr_state.reloads
            idle = []
            for _ in range(IDLE):
                sync.apply(resync=True)  # nothing changed: the resync every 30 s
                idle.append(sync.last_apply_seconds)
            assert sync.frr_state.reloads == reloads, "an unchanged resync reloaded FRR"
            running = frr.vtysh("show running-config")
            assert ("match peer" in running) == filters
            return {
                "boot": boot,
                "added": added,
                "idle": idle,
                "size": len((sync.frr_state.applied or "").encode()),
                "filters": len(real_filters(parse_tunnels(src.snap.tunnels)[0].values()).encode()),
            }
    finally:
        pairing.host_filters = real_filters
        if backend is not None:
            backend.close()
        if frr is not None:
            frr.stop()
        kill_namespace_processes(ns)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


def main(counts: list[int]) -> None:
    # the agent's own warnings (e.g. "frr-reload needed a second run") belong in the figures' context
    logging.basicConfig(level=logging.WARNING, format="  agent %(levelname)s: %(message)s")
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cpu(s), kernel {platform.release()}, "
        f"python {platform.python_version()}, load {os.getloadavg()[0]:.1f}"
    )
    print(
        "| hosts | filters | applied text | boot apply (N tunnels + FRR) | one host added, median / max "
        "| resync, nothing to change (median) |"
    )
    print("|---|---|---|---|---|---|")
    for n in counts:
        for filters in (True, False):
            r = one_round(n, filters)
            ms = [a * 1000 for a in r["added"]]
            print(
                f"| {n} | {'per host' if filters else 'none (control)'} | {r['size'] / 1024:.0f} KB "
                f"| {r['boot']:.2f} s | {statistics.median(ms):.0f} / {max(ms):.0f} ms "
                f"| {statistics.median(r['idle']) * 1000:.0f} ms |",
                flush=True,
            )
    print(f"load after: {os.getloadavg()[0]:.1f}")


def sizes(counts: list[int]) -> None:
    """No root needed: the `frr` parameter's size and the filters the agent renders for N hosts, and the render time."""
    print("| hosts | `frr` parameter | per-host filters | render (host_filters) |")
    print("|---|---|---|---|")
    for n in counts:
        snap, _ = router_snapshot(n)
        tunnels = parse_tunnels(snap.tunnels)[0].values()
        t0 = time.perf_counter()
        text = pairing.host_filters(tunnels)
        took = time.perf_counter() - t0
        print(
            f"| {n} | {len(snap.frr.encode()) / 1024:.1f} KB | {len(text.encode()) / 1024:.0f} KB "
            f"({len(text.encode()) / n:.0f} bytes per host) | {took * 1000:.0f} ms |",
            flush=True,
        )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--sizes"]:
        sizes([int(a) for a in sys.argv[2:]] or [2, 500, 1000])
    else:
        main([int(a) for a in sys.argv[1:]] or [32, 128, 256])
