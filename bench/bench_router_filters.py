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
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from unittest.mock import patch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python bench/bench_router_filters.py`

from pyroute2 import IPRoute

from infra.config import parse
from infra.parameters import build_parameters
from infra.plan import build_plan
from infra.render import render_frr
from bench.pairing_rig import Rig, instance_snapshot, router_namespace
from lab.frr import FRR
from overlay_agent import pairing
from overlay_agent.frr import Frr, fill_password
from overlay_agent.gre.userspace import UserspaceBackend
from overlay_agent.ssm import Snapshot
from overlay_agent.tunnels import HOST_FILTER_SEQ, PyrouteTunnels, TunnelReconciler, host_filters, parse_tunnels

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
    # The VPC's IPv6 block (AWS assigns it; the router's `vpc` parameter) for the on-prem import filter.
    params = build_parameters(
        plan, lambda n: render_frr(plan, n) if n == "router-1" else "!\n", vpc_ipv6="2600:1f18:4a3:6c00::/56"
    )
    return instance_snapshot(plan, params, "router-1", f"h{hosts}", PASSWORD), str(plan.routers[0].private_ip)


def one_round(hosts: int, filters: bool) -> dict[str, Any]:
    snaps = {n: router_snapshot(n) for n in range(hosts, hosts + ADDED + 1)}
    snap, address = snaps[hosts]
    assert snap.frr is not None
    with ExitStack() as cleanup:  # undone in reverse: the GRE daemon, FRR, the namespace, the patch, tmp
        tmp = Path(tempfile.mkdtemp(prefix="bench-filters-"))
        cleanup.callback(shutil.rmtree, tmp, ignore_errors=True)
        # The control: the pairing sync's host_filters renders nothing (the apply before per-host filters).
        cleanup.enter_context(patch.object(pairing, "host_filters", host_filters if filters else lambda tunnels: ""))
        # The router's ENI: its private address; tunnel packets leave by it (nobody answers).
        ns = cleanup.enter_context(router_namespace("bf", f"{address}/16"))
        # FRR as the router boots: the `frr` parameter (user data's copy), no host filters yet.
        frr = FRR(ns, "router", daemons=("zebra", "bgpd", "bfdd", "staticd"))
        cleanup.callback(frr.stop)
        frr.start(fill_password(snap.frr, PASSWORD), timeout=120)
        agent_frr = Frr(tmp / "state", vty_socket=str(frr.vty_dir), confdir=str(frr.dir))
        ipr = cleanup.enter_context(IPRoute(netns=ns))
        backend = UserspaceBackend(tmp / "state", netns=ns)
        cleanup.callback(backend.close)
        rig = Rig(snap, tmp / "state", TunnelReconciler(backend, PyrouteTunnels(ipr)), agent_frr)
        sync = rig.sync
        boot = rig.boot()
        assert sync.frr_state.error is None, sync.frr_state.error
        assert sync.report is not None and len(sync.report.tunnels) == hosts
        text = sync.frr_state.applied or ""
        assert (f"route-map HOSTS-IN permit {HOST_FILTER_SEQ + hosts - 1}" in text) == filters
        added = []
        for n in range(hosts + 1, hosts + ADDED + 1):
            added.append(rig.publish(snaps[n][0]))
            assert sync.frr_state.error is None, sync.frr_state.error
            assert len(sync.report.tunnels) == n
        reloads = sync.frr_state.reloads
        idle = [rig.resync() for _ in range(IDLE)]  # nothing changed: the resync every 30 s
        assert sync.frr_state.reloads == reloads, "an unchanged resync reloaded FRR"
        running = frr.vtysh("show running-config")
        assert ("match peer" in running) == filters
        return {
            "boot": boot,
            "added": added,
            "idle": idle,
            "size": len((sync.frr_state.applied or "").encode()),
            "filters": len(host_filters(parse_tunnels(rig.src.snap.tunnels)[0].values()).encode()),
        }


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
        text = host_filters(tunnels)
        took = time.perf_counter() - t0
        print(
            f"| {n} | {len((snap.frr or '').encode()) / 1024:.1f} KB | {len(text.encode()) / 1024:.0f} KB "
            f"({len(text.encode()) / n:.0f} bytes per host) | {took * 1000:.0f} ms |",
            flush=True,
        )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--sizes"]:
        sizes([int(a) for a in sys.argv[2:]] or [2, 500, 1000])
    else:
        main([int(a) for a in sys.argv[1:]] or [32, 128, 256])
