"""The `overlay-agent` command: `run` (the reconcilers, one thread each) and `status`."""

from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import signal
import sys
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from . import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, EXIT_STATUS, __version__
from . import config as config_mod
from . import logsetup
from . import status as status_mod
from .errors import AgentError, ConfigError

if TYPE_CHECKING:
    from .containers import ContainerReconciler
    from .metrics import Metrics

log = logging.getLogger("overlay_agent")

# The agent's state (parameter cache, GRE daemon socket, FRR work files, status files), for
# `run` and `status` alike.
STATE_DIR = "/var/lib/overlay-agent"


@dataclass
class Task:
    """One long-running loop of the agent; `target(stop)` returns when `stop` is set."""

    name: str
    target: Callable[[threading.Event], None]


def container_tasks(
    cfg: config_mod.AgentConfig, args: argparse.Namespace, metrics: Metrics
) -> tuple[ContainerReconciler, list[Task]]:
    """The container-wiring reconciler and the tasks running it and its Docker event pump (docker hosts only)."""
    from .containers import ContainerReconciler
    from .docker_shim import DockerShim, pump_events
    from .netlink import Netlink

    docker = DockerShim(args.docker_url)
    events_docker = DockerShim(args.docker_url)  # the event stream blocks its own connection
    rec = ContainerReconciler(cfg, docker, None, metrics=metrics, status_path=args.status_file)
    if not args.no_guard:
        from .guard import NftGuard
        from .wiring import VETH_PREFIX

        rec.guard = NftGuard(VETH_PREFIX)

    def run(stop: threading.Event) -> None:
        # pyroute2 keeps an event loop per thread: open the socket in the thread that uses it.
        nl = Netlink()
        rec.netlink = nl
        try:
            rec.run(stop)
        finally:
            nl.close()

    return rec, [
        Task("docker-events", lambda stop: pump_events(events_docker, rec.events, stop, metrics)),
        Task("containers", run),
    ]


def cmd_run(args: argparse.Namespace) -> int:
    from .metrics import Metrics

    if not args.config and not args.bootstrap:
        raise ConfigError("run: give --bootstrap (parameters from SSM) or --config (an agent JSON file)")
    metrics = Metrics()
    if args.metrics_address:
        metrics.serve(args.metrics_address)
    stop = threading.Event()
    # `kill -USR1 <pid>` writes every thread's stack to the log: for a stuck loop in the field.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    # The instance's documents: one source (SSM with --bootstrap, else a file) feeding two
    # sibling reconcilers, each owning its own route class and loop: the pairing sync
    # (tunnels, their underlay pins, FRR) and the container wiring (veths, host routes
    # inside the pools). Neither calls the other.
    tasks: list[Task] = []
    source = None
    if args.bootstrap:
        from . import documents

        source = src = documents.build(args.bootstrap, state_dir=args.state_dir, registry=metrics.registry)
        signal.signal(signal.SIGHUP, lambda *_: src.hup())  # poll the parameters now
        cfg = src.wait_config(stop)
        if cfg is None:
            return EXIT_OK
    else:
        cfg = config_mod.load(args.config)
    if source is not None:
        from . import pairing

        sync = pairing.build(
            source,
            state_dir=args.state_dir,
            registry=metrics.registry,
            gre_backend=args.gre_backend,
            gre_daemon=args.gre_daemon,
            frr_vty_socket=args.frr_vty_socket,
            frr_confdir=args.frr_confdir,
            status_path=args.pairing_status,
            no_frr=args.no_frr,
        )
        tasks += [Task("documents", source.run), Task("pairing", sync.run)]
    if cfg.role == "host" and not args.no_containers:
        rec, wiring_tasks = container_tasks(cfg, args, metrics)
        if source is not None:
            source.on_config(rec.update_config)  # the wiring follows new pools and blocks live
        tasks += wiring_tasks
    if not tasks:
        log.warning("nothing to do for role %s", cfg.role)
    failed: list[str] = []

    def guard(task: Task) -> None:
        try:
            task.target(stop)
        except Exception:  # a dead loop must take the process down (systemd restarts it)
            log.exception("task %s crashed", task.name)
            failed.append(task.name)
            stop.set()

    threads = [threading.Thread(target=guard, args=(t,), name=t.name, daemon=True) for t in tasks]
    log.info(
        "agent started", extra={"instance": cfg.instance, "role": cfg.role, "tasks": ",".join(t.name for t in tasks)}
    )
    for t in threads:
        t.start()
    while not stop.wait(1.0):
        pass
    # Leaving the kernel as it is: routes stay announced while the agent is away, so a
    # restart or upgrade never withdraws anything.
    for t in threads:
        if t.name != "docker-events":  # blocked in a socket read; a daemon thread, dies with us
            t.join(timeout=5)
    log.info("agent stopped")
    return EXIT_FAILED if failed else EXIT_OK


def install_state(state_dir: str) -> dict[str, Any] | None:
    """What overlay-agent-install (user data) last recorded in <state-dir>/install.json, if anything."""
    from pathlib import Path

    try:
        doc = json.loads(Path(state_dir, "install.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def cmd_status(args: argparse.Namespace) -> int:
    from . import pairing_status as pairing

    install = install_state(args.state_dir)

    # Routers have no container wiring (no containers file); hosts show both parts.
    pair = pairing.live_status(
        args.pairing_status or f"{args.state_dir}/pairing.json",
        state_dir=args.state_dir,
        vty_socket=args.vty_socket,
        live=not args.no_live,
    )
    try:
        doc = status_mod.collect(args.status_file, live=not args.no_live, vty_socket=args.vty_socket)
    except AgentError:
        if pair is None and install is None:
            raise
        doc = None
    if args.json:
        print(json.dumps({**(doc or {}), "pairing": pair, "install": install}, indent=1))
    else:
        line = ""
        if install is not None:
            line = (
                f"install: {install.get('state')} ({install.get('detail')}) at {install.get('at')}, "
                f"attempt {install.get('attempt')}"
            )
        print(
            "\n\n".join(
                t for t in (line, status_mod.table(doc) if doc else "", pairing.table(pair) if pair else "") if t
            )
        )
    bad = doc is not None and any(r["state"] == "error" for r in doc.get("containers", []))
    not_installed = install is not None and install.get("state") != "installed"
    return EXIT_FAILED if bad or not_installed or pairing.unhealthy(pair) else EXIT_OK


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="overlay-agent", description=__doc__, epilog=EXIT_STATUS)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run",
        help="run the agent's reconcilers until SIGTERM",
        description=(
            "Run the agent's reconcilers until SIGTERM: the pairing sync (tunnels, FRR) from SSM with "
            "--bootstrap, and on docker hosts the container wiring."
        ),
        epilog=EXIT_STATUS,
    )
    run.add_argument("--config", help="the instance's agent JSON document (without --bootstrap)")
    run.add_argument("--bootstrap", help="bootstrap JSON (user data): read parameters from SSM, run the pairing sync")
    run.add_argument(
        "--state-dir",
        default=STATE_DIR,
        help="pairing sync: parameter cache, GRE daemon socket, FRR work files",
    )
    run.add_argument("--pairing-status", default=None, help="pairing status file (default: <state-dir>/pairing.json)")
    run.add_argument("--gre-backend", choices=("auto", "kernel", "userspace"), default="auto")
    run.add_argument(
        "--gre-daemon",
        choices=("spawn", "systemd"),
        default="spawn",
        help="userspace GRE: start its daemon when none answers (spawn), or wait for the "
        "one systemd runs (overlay-gre.service), so agent restarts never touch it",
    )
    run.add_argument("--frr-vty-socket", default=None, help="FRR vty socket directory (default: FRR's own)")
    run.add_argument("--frr-confdir", default="/etc/frr", help="FRR config directory (frr-reload --confdir)")
    run.add_argument("--no-frr", action="store_true", help="tunnels only; leave FRR alone")
    run.add_argument("--docker-url", default="unix:///var/run/docker.sock")
    run.add_argument("--status-file", default=status_mod.DEFAULT_STATUS_FILE)
    # Loopback by default: the VPC security group lets every VPC workload reach every port
    # of the instances, and containers reach the host's addresses (security review,
    # finding 11). A Prometheus elsewhere needs --metrics-address <private-ip>:9469.
    run.add_argument(
        "--metrics-address",
        default="127.0.0.1:9469",
        help="host:port for Prometheus /metrics (default loopback only); empty to disable",
    )
    run.add_argument(
        "--log-level", default="info", type=str.lower, choices=("debug", "info", "warning", "error", "critical")
    )
    run.add_argument("--log-format", choices=("json", "text"), default="json")
    run.add_argument("--no-containers", action="store_true", help="do not wire containers")
    run.add_argument(
        "--no-guard", action="store_true", help="no anti-spoofing table (nftables) for container source addresses"
    )
    run.set_defaults(func=cmd_run)

    st = sub.add_parser(
        "status",
        help="containers, addresses, veths, routes, BGP announcement",
        description=(
            "Show the install state, the containers (addresses, veths, routes, BGP announcement) and the "
            "pairings (tunnels, BGP sessions)."
        ),
        epilog=EXIT_STATUS,
    )
    st.add_argument("--json", action="store_true")
    st.add_argument("--status-file", default=status_mod.DEFAULT_STATUS_FILE)
    st.add_argument("--vty-socket", default=None, help="FRR vty socket directory (vtysh --vty_socket)")
    st.add_argument("--no-live", action="store_true", help="do not check the kernel and FRR")
    st.add_argument("--state-dir", default=STATE_DIR, help="the agent's --state-dir")
    st.add_argument("--pairing-status", default=None, help="pairing status file (default: <state-dir>/pairing.json)")
    st.set_defaults(func=cmd_status)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logsetup.setup(getattr(args, "log_level", "warning"), getattr(args, "log_format", "text"))
    try:
        rc: int = args.func(args)
        return rc
    except AgentError as exc:
        # Bad input and unreachable dependencies: one line, no traceback.
        print(f"overlay-agent: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
