"""The lab's parameter store: moto's SSM in server mode inside the VPC namespace, seeded by the program's own code path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from infra.plan import OverlayPlan
from lab import daemon
from lab.topology import Instance, LabTopology
from lab.underlay import LabError

PORT = 4566
# The lab's own BGP password: the lab is a throwaway on one machine, and the password
# still travels the way it does on AWS (SecureString -> agent -> frr.conf), never in
# user data or a template.
LAB_PASSWORD = "lab-only-md5-secret"
# The on-prem sessions' own password (routers and the lab's datacenter routers only), as
# overlay:onpremBgpPassword gives it on AWS.
LAB_ONPREM_PASSWORD = "lab-only-onprem-md5-secret"
# Poll quickly in the lab so changes (a host added) show within seconds.
LAB_POLL_INTERVAL = 2
LAB_RESYNC_INTERVAL = 10


def endpoint_for(inst: Instance) -> str:
    """Instances reach the endpoint at their subnet's gateway, as EC2 reaches SSM via the VPC."""
    return f"http://{inst.segment.gateway}:{PORT}"


def start(topo: LabTopology, state: Path) -> None:
    pidfile = state / "moto.pid"
    if daemon.alive(pidfile):
        return
    daemon.start(
        topo.vpc_ns,
        [str(Path(sys.executable).with_name("moto_server")), "-H", "0.0.0.0", "-p", str(PORT)],
        log=state / "logs" / "moto.log",
        pidfile=pidfile,
    )
    daemon.wait_tcp(topo.vpc_ns, "127.0.0.1", PORT, 30, "moto SSM server")


def stop(state: Path) -> None:
    daemon.stop(state / "moto.pid")


def seed(plan: OverlayPlan, topo: LabTopology, stacks_dir: Path | None = None) -> list[str]:
    """Publish the stack's parameters with infra.publish, from inside the VPC namespace."""
    cmd = [
        "ip",
        "netns",
        "exec",
        topo.vpc_ns,
        sys.executable,
        "-m",
        "lab.seed",
        plan.stack,
        "--endpoint",
        f"http://127.0.0.1:{PORT}",
        "--region",
        plan.region,
    ]
    if stacks_dir is not None:
        cmd += ["--stacks-dir", str(stacks_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parent.parent)
    if proc.returncode != 0:
        raise LabError(f"seeding parameters for stack {plan.stack} failed: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout)["written"]
