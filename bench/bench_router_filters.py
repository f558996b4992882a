"""A router's FRR with per-host import filters for N hosts: config size, frr-reload's diff and a one-host reload (root, FRR).

    flock /tmp/overlay-heavy.lock python bench/bench_router_filters.py [hosts ...]

The `frr` parameter is the same for any host count; the router's agent appends one filter
entry per host (overlay_agent.tunnels.host_filters). Measured: the applied text's size,
`frr-reload.py --test` against the running config when nothing changed (what the agent's
resync runs every 30 s) and the reload that adds one host (what a new host costs).
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python bench/bench_router_filters.py`

from infra.config import parse  # noqa: E402
from infra.parameters import build_parameters, instance_path  # noqa: E402
from infra.plan import build_plan  # noqa: E402
from infra.render import PASSWORD_PLACEHOLDER, render_frr  # noqa: E402
from lab.frr import FRR  # noqa: E402
from overlay_agent.frr import Frr  # noqa: E402
from overlay_agent.tunnels import host_filters, parse_tunnels  # noqa: E402
from tests.support import netns as nsutil  # noqa: E402


def router_text(hosts: int) -> str:
    plan = build_plan(parse({
        "region": "eu-west-1", "vpc": {"cidr": "10.20.0.0/16", "azs": ["a", "b"]},
        "routers": {"count": 2}, "hosts": {"count": hosts, "asnMode": "per-host", "blockPrefix": 24},
        "pools": {"ipv4": ["100.64.0.0/12"], "ipv6": ["fd10:96::/48"],
                  "sharedIpv4": ["100.79.255.0/24"], "sharedIpv6": ["fd10:96:0:ffff::/120"]},
        "tunnels": {"ipv4": "172.16.0.0/16", "ipv6": "fd10:7e::/64"},
    }, "bench"))
    params = build_parameters(plan, lambda n: render_frr(plan, n) if n == "router-1" else "!\n")
    base = instance_path(plan, "router-1") + "/"
    good, _ = parse_tunnels({k[len(base):]: p.value for k, p in params.items() if k.startswith(base + "tunnels/")})
    frr = params[base + "frr"].value.replace(PASSWORD_PLACEHOLDER, "bench-secret")
    return frr.rstrip("\n") + "\n" + host_filters(good.values()), len(params[base + "frr"].value.encode())


def main(counts: list[int]) -> None:
    print("| hosts | `frr` parameter | applied text | frr-reload --test, unchanged | reload adding one host |")
    print("|---|---|---|---|---|")
    for n in counts:
        ns = nsutil.unique_name("bench")
        nsutil.create(ns)
        frr = None
        try:
            text, param_size = router_text(n)
            grown, _ = router_text(n + 1)
            frr = FRR(ns, "router", daemons=("zebra", "bgpd", "bfdd", "staticd"))
            frr.start(text, timeout=120)
            with tempfile.TemporaryDirectory() as state:
                agent = Frr(state, vty_socket=str(frr.vty_dir), confdir=str(frr.dir))
                t0 = time.monotonic()
                delete, add = agent.diff(text)
                t_test = time.monotonic() - t0
                t0 = time.monotonic()
                agent.reload(grown, previous=text)
                t_reload = time.monotonic() - t0
                left = agent.diff(grown)
            print(f"| {n} | {param_size / 1024:.1f} KB | {len(text.encode()) / 1024:.0f} KB | {t_test:.2f} s "
                  f"(diff {len(delete)}/{len(add)} lines) | {t_reload:.2f} s (after: {len(left[0])}/{len(left[1])}) |",
                  flush=True)
        finally:
            if frr is not None:
                frr.stop()
            nsutil.destroy(ns)
    subprocess.run(["true"])


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [10, 100, 500])
