"""The lab's on-prem router: its GRE tunnels to the routers' EIPs (the agent's own tunnel reconciler) and its FRR config."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from infra.parameters import tunnel_doc
from infra.plan import OverlayPlan
from infra.render import render_onprem_frr
from overlay_agent.frr import fill_password
from lab.topology import LabTopology, OnPremSite
from lab.underlay import LabError


def tunnel_docs(plan: OverlayPlan, topo: LabTopology, site: OnPremSite) -> dict[str, str]:
    """The on-prem side of each pairing, in the agent's tunnel format: remote = the router's EIP."""
    docs = {}
    for p in plan.pairings:
        if p.kind != "onprem" or p.b.name != site.name:
            continue
        doc = tunnel_doc(p, "b")
        # The plan cannot know an EIP; in the lab the topology allocated it.
        doc["remote"] = str(topo.instance(p.a.name).eip)
        doc["local"] = str(site.public)
        docs[p.a.name] = json.dumps(doc, sort_keys=True)
    return docs


def frr_config(plan: OverlayPlan, topo: LabTopology, site: OnPremSite, password: str) -> str:
    eips = {i.name: str(i.eip) for i in topo.instances if i.eip is not None}
    text = render_onprem_frr(
        plan, site.name, eips, networks_v4=(str(site.lan_v4),), networks_v6=(str(site.lan_v6),) if plan.ipv6 else ()
    )
    # The datacenter team's step (the on-prem password); the agent's fill, so the lab never
    # has a second copy.
    return fill_password(text, None, onprem_password=password, source=f"on-prem {site.name} frr")


def apply_tunnels(site: OnPremSite, docs: dict[str, str], state_dir: Path) -> dict:
    """Run the tunnel reconciler once inside the site's namespace; the GRE daemon stays."""
    state_dir.mkdir(parents=True, exist_ok=True)
    spec = state_dir / "tunnels.json"
    spec.write_text(json.dumps(docs))
    proc = subprocess.run(
        ["ip", "netns", "exec", site.ns, sys.executable, "-m", "lab.onprem", str(spec), str(state_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parent.parent,
    )
    if proc.returncode != 0:
        raise LabError(f"on-prem {site.name}: tunnels failed: {proc.stderr.strip()[-400:]}")
    return json.loads(proc.stdout)


def main(argv: list[str] | None = None) -> int:
    from pyroute2 import IPRoute

    from overlay_agent.gre import select_backend
    from overlay_agent.tunnels import PyrouteTunnels, TunnelReconciler, parse_tunnels

    p = argparse.ArgumentParser(prog="python -m lab.onprem")
    p.add_argument("tunnels", type=Path)
    p.add_argument("state_dir", type=Path)
    args = p.parse_args(argv)
    tunnels, rejected = parse_tunnels(json.loads(args.tunnels.read_text()))
    with IPRoute() as ipr:
        backend = select_backend(ipr, args.state_dir)
        report = TunnelReconciler(backend, PyrouteTunnels(ipr)).apply(tunnels, rejected)
    print(json.dumps(report.to_json()))
    return 1 if report.rejected else 0


if __name__ == "__main__":
    sys.exit(main())
