"""Brings a whole stack up in namespaces and down again: underlay, SSM, FRR, dockerd, agents, on-prem."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from infra.parameters import vpc_doc
from infra.plan import OverlayPlan, build_plan
from infra.render import render_frr
from infra.stackfile import STACKS_DIR, load_stack
from lab import daemon, onprem, route_server, ssm, topology
from lab.frr import FRR
from lab.seed import route_server_docs
from lab.underlay import LabError, build_underlay, lab_namespaces, remove_namespaces
from overlay_agent import schemas
from overlay_agent.frr import fill_bogons, fill_password, fill_route_server

STATE_ROOT = Path("/var/lib/overlay-lab")
# FRR daemons every lab instance runs: staticd holds the underlay pins of the rendered
# configs (`ip route ...`), bfdd the BFD sessions.
FRR_DAEMONS = ("zebra", "bgpd", "staticd", "bfdd")
REPO = Path(__file__).resolve().parent.parent


def state_dir(stack: str) -> Path:
    return STATE_ROOT / stack


@dataclass
class Lab:
    """A stack's lab: the plan, the topology, and handles on what runs."""

    plan: OverlayPlan
    topo: topology.LabTopology
    state: Path
    stacks_dir: Path = STACKS_DIR
    say: Callable[[str], None] = print
    frr: dict[str, FRR] = field(default_factory=dict)

    @classmethod
    def load(cls, stack: str, stacks_dir: Path = STACKS_DIR, say: Callable[[str], None] = print) -> "Lab":
        plan = build_plan(load_stack(stack, stacks_dir))
        return cls(plan, topology.build(plan), state_dir(stack), stacks_dir, say)

    # -- handles on running parts ---------------------------------------------------------
    def frr_for(self, name: str) -> FRR:
        if name == route_server.NAME and name not in self.frr:
            self.frr[name] = FRR(self.topo.vpc_ns, name, route_server.DAEMONS, workdir=self.state / "frr" / name)
        if name not in self.frr:
            inst_ns = next((i.ns for i in self.topo.instances if i.name == name), None)
            inst_ns = inst_ns or next(s.ns for s in self.topo.sites if s.name == name)
            self.frr[name] = FRR(inst_ns, name, FRR_DAEMONS, workdir=self.state / "frr" / name)
        return self.frr[name]

    def docker_url(self, host: str) -> str:
        return f"unix://{self.state / 'docker' / host / 'docker.sock'}"

    def agent_dir(self, name: str) -> Path:
        return self.state / "agent" / name

    def is_up(self) -> bool:
        marker = self.state / "up.json"
        return marker.exists() and set(lab_namespaces(self.plan.stack)) >= set(self.topo.namespaces)


def _step(lab: Lab, n: int, total: int, what: str, fn: Callable[[], str | None]) -> None:
    t0 = time.monotonic()
    lab.say(f"[{n}/{total}] {what} ...")
    detail = fn()
    lab.say(f"[{n}/{total}] {what}: {detail or 'done'} ({time.monotonic() - t0:.1f} s)")


# -- up -----------------------------------------------------------------------------------


def _as_agent_applies(text: str, plan: OverlayPlan) -> str:
    # The agent's own fills (and their refusals), as on an instance: the password, the
    # bogon filters and the lab VPC's IPv6 block (its `vpc` parameter, lab/seed.py).
    vpc = vpc_doc(plan, str(topology.LAB_VPC_V6)) if plan.ipv6 else None
    return fill_bogons(fill_password(text, ssm.LAB_PASSWORD, onprem_password=ssm.LAB_ONPREM_PASSWORD), vpc)


def _start_frr(lab: Lab, names: list[str]) -> str:
    docs = route_server_docs(lab.plan)
    for name in names:
        # Start with the instance's own rendered config as its agent will apply it (the
        # agent then finds nothing to reload), so sessions come up without waiting for the
        # first parameter poll.
        text = _as_agent_applies(render_frr(lab.plan, name), lab.plan)
        if docs is not None and name in {r.name for r in lab.plan.routers}:
            text = fill_route_server(text, docs(name))
        lab.frr_for(name).start(text, timeout=30)
    return ", ".join(names)


def _start_egress(lab: Lab) -> str:
    from lab import egress

    out = egress.build(lab.plan, lab.topo, lab.state)
    if lab.plan.ipv6:
        egress.apply_eigw(lab.topo)
    return out


def _start_route_server(lab: Lab) -> str:
    lab.frr_for(route_server.NAME).start(route_server.frr_config(lab.plan, lab.topo), timeout=30)
    eps = route_server.endpoints(lab.plan, lab.topo)
    return f"FRR in {lab.topo.vpc_ns}, endpoints {', '.join(f'{az} {a}' for az, a in eps.items())}"


def _start_docker(lab: Lab, hosts: list[str]) -> str:
    from lab import image
    from lab.dockerd import Dockerd

    refs = set()
    for h in hosts:
        d = Dockerd(lab.topo.instance(h).ns, workdir=lab.state / "docker" / h, live_restore=True)
        d.start(timeout=60)
        client = d.client()
        try:
            refs.add(image.ensure(client))
        finally:
            client.close()
    return f"{len(hosts)} daemons, image {', '.join(sorted(refs))}"


def agent_command(lab: Lab, name: str) -> list[str]:
    inst = lab.topo.instance(name)
    adir = lab.agent_dir(name)
    frr = lab.frr_for(name)
    cmd = [
        str(Path(sys.executable).with_name("overlay-agent")),
        "run",
        "--bootstrap",
        str(adir / "bootstrap.json"),
        "--state-dir",
        str(adir / "state"),
        "--status-file",
        str(adir / "status.json"),
        "--frr-vty-socket",
        str(frr.vty_dir),
        "--frr-confdir",
        str(frr.dir),
        "--metrics-address",
        f"{inst.address}:9469",
        "--log-format",
        "text",
    ]
    if inst.role == "host":
        cmd += ["--docker-url", lab.docker_url(name)]
    return cmd


def _start_agents(lab: Lab, names: list[str]) -> str:
    for inst in (i for i in lab.plan.instances if i.name in names):
        topo_inst = lab.topo.instance(inst.name)
        adir = lab.agent_dir(inst.name)
        adir.mkdir(parents=True, exist_ok=True)
        # The same bootstrap document user data writes on EC2, plus the lab's endpoint.
        boot = schemas.bootstrap(
            lab.plan.project,
            lab.plan.stack,
            inst.name,
            topo_inst.role,
            lab.plan.region,
            endpoint_url=ssm.endpoint_for(topo_inst),
        )
        (adir / "bootstrap.json").write_text(json.dumps(boot, indent=1))
        daemon.start(
            topo_inst.ns,
            agent_command(lab, inst.name),
            log=lab.state / "logs" / f"agent-{inst.name}.log",
            pidfile=adir / "agent.pid",
            env={"AWS_ACCESS_KEY_ID": "lab", "AWS_SECRET_ACCESS_KEY": "lab"},
        )
    return f"{len(names)} agents"


def _start_onprem(lab: Lab) -> str:
    for site in lab.topo.sites:
        report = onprem.apply_tunnels(
            site, onprem.tunnel_docs(lab.plan, lab.topo, site), lab.state / "onprem" / site.name
        )
        lab.frr_for(site.name).start(onprem.frr_config(lab.plan, lab.topo, site, ssm.LAB_ONPREM_PASSWORD), timeout=30)
        lab.say(f"      {site.name}: {len(report['tunnels'])} tunnels ({report['backend']} GRE)")
    return ", ".join(s.name for s in lab.topo.sites) or "no on-prem peers"


def expected_sessions(lab: Lab) -> dict[str, int]:
    """Established sessions each BGP speaker should have: v4 + v6 per pairing, plus each
    router's one session (both address families) with the route server."""
    per = 2 if lab.plan.ipv6 else 1
    want: dict[str, int] = {}
    for p in lab.plan.pairings:
        want[p.a.name] = want.get(p.a.name, 0) + per
        want[p.b.name] = want.get(p.b.name, 0) + per
    if lab.plan.vpc_failover == "routeServer":
        for r in lab.plan.routers:
            want[r.name] = want.get(r.name, 0) + 1
        want[route_server.NAME] = len(lab.plan.routers)
    return want


def sessions(lab: Lab) -> dict[str, int]:
    out = {}
    for name in expected_sessions(lab):
        try:
            out[name] = lab.frr_for(name).bgp_established()
        except Exception:  # noqa: BLE001 - a daemon not answering counts as no sessions
            out[name] = 0
    return out


def wait_sessions(lab: Lab, timeout: float = 120) -> str:
    want = expected_sessions(lab)
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        have = sessions(lab)
        up, total = sum(min(have[n], want[n]) for n in want), sum(want.values())
        line = f"{up}/{total} BGP sessions Established"
        if line != last:
            lab.say(f"      {line}")
            last = line
        if up == total:
            return line
        if time.monotonic() > deadline:
            missing = ", ".join(f"{n} {have[n]}/{want[n]}" for n in want if have[n] < want[n])
            raise LabError(f"BGP sessions not all Established after {timeout:.0f} s: {missing}")
        time.sleep(0.5)


def up(lab: Lab) -> None:
    """Build the lab; on a lab that is up, bring it in line with the stack (instances added or removed)."""
    if (lab.state / "up.json").exists() and lab.topo.vpc_ns in lab_namespaces(lab.plan.stack):
        if lab.is_up() and not _stale_instances(lab):
            lab.say(f"lab {lab.plan.stack} is already up ({lab.state / 'up.json'}); nothing to change")
            return
        return sync(lab)
    down(lab, quiet=True)
    lab.state.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    instances = [i.name for i in lab.plan.instances]
    hosts = [h.name for h in lab.plan.hosts]
    steps = [
        (
            "underlay (namespaces, subnets, VPC route tables, IGW NAT, internet, on-prem LANs)",
            lambda: (
                build_underlay(lab.plan, lab.topo, underlay_mtu(lab.plan)) or f"{len(lab.topo.namespaces)} namespaces"
            ),
        ),
        (
            "parameter store (moto SSM in the VPC, seeded by the program's code path)",
            lambda: (ssm.start(lab.topo, lab.state), f"{len(ssm.seed(lab.plan, lab.topo, lab.stacks_dir))} parameters")[
                1
            ],
        ),
        *(
            [("VPC route server stand-in (FRR with BFD in the VPC namespace)", lambda: _start_route_server(lab))]
            if lab.plan.vpc_failover == "routeServer"
            else []
        ),
        ("FRR on every instance", lambda: _start_frr(lab, instances)),
        ("docker daemons on the hosts", lambda: _start_docker(lab, hosts)),
        ("agents (pairing sync everywhere, container wiring on hosts)", lambda: _start_agents(lab, instances)),
        ("on-prem routers (GRE to the EIPs, FRR from the stack's on-prem config)", lambda: _start_onprem(lab)),
        ("BGP sessions", lambda: wait_sessions(lab)),
        ("egress: internet server behind the IGW/NAT, S3 endpoint stand-in, host SNAT", lambda: _start_egress(lab)),
    ]
    try:
        for i, (what, fn) in enumerate(steps, 1):
            _step(lab, i, len(steps), what, fn)
    except BaseException:
        lab.say("up failed; removing what was built")
        down(lab, quiet=True)
        raise
    _mark_up(lab, time.monotonic() - t0)
    lab.say(f"lab {lab.plan.stack} is up in {time.monotonic() - t0:.1f} s")


def _mark_up(lab: Lab, seconds: float) -> None:
    (lab.state / "up.json").write_text(
        json.dumps(
            {"stack": lab.plan.stack, "up_seconds": round(seconds, 1), "namespaces": list(lab.topo.namespaces)},
            indent=1,
        )
    )


def _stale_instances(lab: Lab) -> list[str]:
    """Namespaces of instances the plan no longer has (a host or router removed from the stack)."""
    prefix = topology.ns_prefix(lab.plan.stack)
    wanted = set(lab.topo.namespaces)
    return [
        n
        for n in lab_namespaces(lab.plan.stack)
        if n not in wanted and n[len(prefix) :].startswith(("router-", "host-"))
    ]


def sync(lab: Lab) -> None:
    """A running lab follows a changed stack, as `pulumi up` would: new instances join, removed ones go.

    Existing instances are not touched: their agents see the new parameters at their next
    poll (new tunnels on the routers) and nothing else changes, so no session resets.
    """
    from lab.underlay import apply_nat, kill_namespace_processes, wire_instance

    t0 = time.monotonic()
    present = set(lab_namespaces(lab.plan.stack))
    new = [i for i in lab.topo.instances if i.ns not in present]
    stale = _stale_instances(lab)
    lab.say(f"lab {lab.plan.stack} is up; applying the stack: {len(new)} instances to add, {len(stale)} to remove")
    for name in stale:
        kill_namespace_processes(name)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
    for inst in new:
        wire_instance(lab.topo, inst, underlay_mtu(lab.plan), create=True)
    apply_nat(lab.topo)
    lab.say(f"      {len(ssm.seed(lab.plan, lab.topo, lab.stacks_dir))} parameters published")
    names = [i.name for i in new if i.role in ("router", "host")]
    if any(i.role == "router" for i in new):
        # On-prem routers learn of new routers only from their config (no SSM there).
        for site in lab.topo.sites:
            onprem.apply_tunnels(site, onprem.tunnel_docs(lab.plan, lab.topo, site), lab.state / "onprem" / site.name)
            lab.frr_for(site.name).apply(onprem.frr_config(lab.plan, lab.topo, site, ssm.LAB_ONPREM_PASSWORD))
    if names:
        _start_frr(lab, names)
        hosts = [i.name for i in new if i.role == "host"]
        if hosts:
            _start_docker(lab, hosts)
            from lab import egress

            egress.apply_host_rules(lab.plan, lab.topo)  # the new hosts' user data egress rules
        _start_agents(lab, names)
    wait_sessions(lab)
    _mark_up(lab, time.monotonic() - t0)
    lab.say(f"lab {lab.plan.stack} now matches the stack ({time.monotonic() - t0:.1f} s)")


def underlay_mtu(plan: OverlayPlan) -> int:
    # The underlay carries the tunnels' packets plus GRE's 28 bytes (outer IPv4 + key).
    return max(1500, max(plan.mtu, plan.onprem_mtu) + 28)


# -- down -----------------------------------------------------------------------------------


def down(lab: Lab, quiet: bool = False) -> None:
    """Remove everything the lab made; safe to run on a half-built or absent lab."""
    from lab.dockerd import Dockerd

    names = lab_namespaces(lab.plan.stack)
    for h in lab.plan.hosts:
        ddir = lab.state / "docker" / h.name
        if ddir.exists() and lab.topo.instance(h.name).ns in names:
            # Containers live in their own PID and network namespaces: remove them through
            # their daemon before it goes, or their processes would outlive it.
            d = Dockerd(lab.topo.instance(h.name).ns, workdir=ddir)
            d.remove_all_containers()
            d.stop(remove_containers=False)
    ssm.stop(lab.state)
    from lab.vm import machine

    machine.stop_all(lab.state)  # `up --vms`: the qemu processes (their taps go with them)
    removed = remove_namespaces(lab.plan.stack)
    # Processes started for the lab outside its namespaces (none expected) end too.
    daemon.kill_matching(str(lab.state))
    _unmount_under(lab.state)
    shutil.rmtree(lab.state, ignore_errors=True)
    if not quiet:
        lab.say(f"lab {lab.plan.stack} is down ({len(removed)} namespaces removed)")


def _unmount_under(path: Path) -> None:
    mounts = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4]
            if point == str(path) or point.startswith(str(path) + "/"):
                mounts.append(point)
    for point in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)
