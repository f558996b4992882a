"""The container wiring reconciler: Docker's containers -> veths, addresses and host routes, by events and full resyncs."""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Protocol

from . import labels as labels_mod
from .config import AgentConfig
from .container_report import WiringReport
from .docker_shim import ContainerInfo, Event
from .errors import AgentError, DockerError, NetlinkError
from .guard import Element, GuardShim, GuardSync
from .metrics import Metrics
from .netlink import ContainerGone, KernelView, WireSpec
from .wiring import (
    VETH_PREFIX,
    Action,
    Actual,
    Desired,
    Prefix,
    RouteDel,
    RouteDrop,
    RouteSet,
    Unwire,
    Wire,
    Wired,
    Wiring,
    actual_from_kernel,
    desire,
    diff,
    encode_alias,
)

log = logging.getLogger("overlay_agent.containers")

# Items of the reconciler's queue: Docker events, a new agent document, or docker_shim.RESYNC.
Item = Event | AgentConfig | str


# -- shims (injected; the unit tests use in-memory fakes) ---------------------------------


class NetlinkShim(Protocol):
    def snapshot(self, prefix: str) -> KernelView: ...
    def link_index(self, name: str) -> int | None: ...
    def wire(self, spec: WireSpec, pid: int) -> int: ...
    def unwire(self, veth: str) -> bool: ...
    def route_set(self, dst: Prefix, veths: Iterable[str], proto: int, metric: int = 0) -> None: ...
    def route_del(self, dst: Prefix, proto: int, metric: int | None = None) -> bool: ...


class DockerShimLike(Protocol):
    def list_running(self) -> list[ContainerInfo]: ...
    def inspect(self, container_id: str) -> ContainerInfo | None: ...


# -- the reconciler ----------------------------------------------------------------------


class ContainerReconciler:
    """Owns the host's container veths and the routes of our protocol inside the pools (the
    tunnel pins outside them are the pairing sync's); nothing of the pairing sync. One thread
    runs run(): Docker events and full resyncs -> desire() -> diff() -> apply; other threads
    talk to it only through `events` (docker_shim.pump_events, update_config).

    Hazards (each handled below, and why):
    - Docker unreachable (daemon restart, live-restore or not): an empty or failed listing
      must not read as "no containers", or every route would be withdrawn. A failed listing
      skips the pass; only a successful listing is the truth.
    - Agent restart with containers running: the kernel is the state. Every finished wiring
      carries an alias on its host veth ("overlay-agent <id> <ipv4> <ipv6>") and every route
      carries our protocol, so a new process computes the same desired state and changes
      nothing: no withdraw, no flap.
    - Ownership: we delete only routes carrying our route protocol and only veths with our
      name prefix. A route of another protocol on one of our prefixes is left alone (and its
      address is never allocated).
    - A container's namespace dies with its last process; the kernel then deletes the veth
      and every route through it. Our cached view can go stale that way: events re-check the
      container's veth in the kernel, and the periodic full resync re-reads everything.
    - A container can exit between its start event and our wiring (its pid is gone): that is
      reported as "exited" and the half-made veth is removed.
    - Bad input (labels, addresses outside the pools, duplicates without anycast, host or
      shared network namespaces) is refused for that container only, with one log line, a
      metric and a status entry; all other containers are reconciled as usual.
    - Duplicates: when two containers on this host claim the same address, the one already
      wired keeps it (then the older one); with overlay.anycast=true on both, the host route
      gets both veths as ECMP next hops.
    - Health-gated routes (overlay.health=withdraw): the veth and addresses stay, only the
      host route follows Docker's health status, so FRR withdraws and re-announces.
    - Moves: the newest location wins. A host route's metric (kernel priority) becomes its
      MED in FRR's redistribution, and the routers prefer the lower MED across hosts, so an
      explicit, non-anycast address gets a metric that falls with its container's creation
      time (route_metric); anycast and block addresses get one fixed metric and stay ECMP.
      The metric comes from Docker's state only, so a restarted agent computes the same one.
    """

    name = "containers"

    def __init__(
        self,
        cfg: AgentConfig,
        docker: DockerShimLike,
        netlink: NetlinkShim | None,
        metrics: Metrics | None = None,
        status_path: str | Path | None = None,
    ) -> None:
        self.cfg = cfg
        self.docker = docker
        self._netlink = netlink  # None: opened later, in the thread that runs the loop
        self.metrics = metrics or Metrics()
        self.report = WiringReport(self.metrics, Path(status_path) if status_path else None)
        self.proto = cfg.settings.route_protocol
        self.containers: dict[str, ContainerInfo] = {}  # the running containers, as last inspected or listed
        self.actual: Actual | None = None
        self.desired = Desired()
        self.last_resync: float = 0.0
        self.events: queue.Queue[Item] = queue.Queue()
        # Anti-spoofing (the shim is guard.NftGuard, or None to leave it off).
        self._guard = GuardSync(self.metrics)

    @property
    def netlink(self) -> NetlinkShim:
        assert self._netlink is not None, "no netlink shim yet"
        return self._netlink

    @netlink.setter
    def netlink(self, shim: NetlinkShim) -> None:
        self._netlink = shim

    @property
    def guard(self) -> GuardShim | None:
        return self._guard.shim

    @guard.setter
    def guard(self, shim: GuardShim | None) -> None:
        self._guard.shim = shim

    # -- passes ----------------------------------------------------------------------
    def resync(self) -> bool:
        """Full pass: list Docker, read the kernel, apply. False (and nothing changed) if Docker failed."""
        t0 = time.perf_counter()
        try:
            listing = self.docker.list_running()
        except DockerError as exc:
            # Never treat "cannot ask" as "nothing runs": that would withdraw every route.
            log.warning("resync skipped: %s", exc, extra={"reason": "docker_unavailable"})
            self.metrics.resyncs.labels("docker_unavailable").inc()
            return False
        try:
            view = self.netlink.snapshot(VETH_PREFIX)
        except NetlinkError as exc:
            log.error("resync skipped: %s", exc, extra={"reason": "netlink"})
            self.metrics.resyncs.labels("netlink_error").inc()
            return False
        self.containers = {c.id: c for c in listing if c.running}
        self.actual = actual_from_kernel(view, self.proto, self.cfg.in_pools)
        self._guard.full_pass()  # re-read (and re-assert the table); after a failure, retry nft
        self._reconcile()
        self.last_resync = time.monotonic()
        self.metrics.resync_seconds.observe(time.perf_counter() - t0)
        self.metrics.resyncs.labels("ok").inc()
        return True

    def handle_events(self, events: Iterable[Event]) -> None:
        """Fast path: refresh the named containers from Docker and the kernel, then reconcile."""
        if self.actual is None:
            # No full picture yet; an event-driven pass could mistake unknown for absent.
            if not self.resync():
                return
        touched = False
        for ev in events:
            touched |= self._refresh(ev)
        if touched:
            self._reconcile()

    def _refresh(self, ev: Event) -> bool:
        assert self.actual is not None  # handle_events() made the full picture first
        cid = ev.container_id
        known = cid in self.containers or (self.actual is not None and cid in self.actual.wired)
        if not known and not labels_mod.opted_in(ev.labels):
            # Event attributes carry the container's labels: skip others without asking Docker.
            return False
        if ev.action in ("die", "destroy"):
            # The process is gone: withdraw now, without a round trip to Docker.
            self.containers.pop(cid, None)
        else:
            try:
                info = self.docker.inspect(cid)
            except DockerError as exc:
                log.warning("event %s for %s not handled: %s", ev.action, cid[:12], exc)
                return False
            if info is None or not info.running:
                self.containers.pop(cid, None)
                if ev.action == "start" and cid not in self.actual.wired:
                    name = info.name if info else ev.labels.get("name", cid[:12])
                    self.report.exited(cid, name, "exited before it was wired")
            else:
                self.containers[cid] = info
                if ev.action == "start":
                    self.report.started_ns[cid] = ev.time_ns or time.time_ns()
        assert self.actual is not None
        wired = self.actual.wired.get(cid)
        if wired is not None and self.netlink.link_index(wired.veth) is None:
            # The namespace died and took the veth and its routes (docker restart, kill).
            self.actual.drop_veth(wired.veth)
        return True

    # -- reconcile and apply -----------------------------------------------------------
    def _reconcile(self) -> None:
        assert self.actual is not None
        self.report.forget_gone(set(self.containers))
        self.desired = desire(self.containers.values(), self.actual, self.cfg)
        self._apply(diff(self.desired, self.actual))
        self._publish()

    def _apply(self, actions: list[Action]) -> None:
        act = self.actual
        assert act is not None
        failed: set[str] = set()
        # A new container may send only once its sources are allowed: allow them before its
        # host route brings traffic (its replies would be dropped otherwise). The nft run is
        # started before the wiring and awaited at the first route, so its cost (a process
        # start, milliseconds to tens of them on a loaded host) overlaps the netlink work.
        wirings = [a.wiring for a in actions if isinstance(a, Wire)]
        pending = self._guard.begin(_sources(wirings)) if wirings else None
        for a in actions:
            if pending is not None and isinstance(a, RouteSet):
                self._guard.end(pending)
                pending = None
            try:
                if isinstance(a, RouteDel):
                    self.netlink.route_del(a.dst, self.proto, act.metrics.get(a.dst))
                    act.routes.pop(a.dst, None)
                    act.metrics.pop(a.dst, None)
                    self.metrics.netlink_changes.labels("route_del").inc()
                elif isinstance(a, RouteDrop):
                    # Only once the route at the new metric is in place (the set may have
                    # been skipped: its veth failed to wire), never the one in use.
                    if (a.dst, a.metric) in act.superseded and act.metrics.get(a.dst) != a.metric:
                        self.netlink.route_del(a.dst, self.proto, a.metric)
                        del act.superseded[(a.dst, a.metric)]
                        self.metrics.netlink_changes.labels("route_del").inc()
                elif isinstance(a, Unwire):
                    # Removing the veth takes the peer and every route through it with it.
                    self.netlink.unwire(a.veth)
                    act.drop_veth(a.veth)
                    self.metrics.netlink_changes.labels("unwire").inc()
                    if a.container_id:
                        log.info(
                            "unwired container %s",
                            a.container_id[:12],
                            extra={"container": a.container_id[:12], "veth": a.veth},
                        )
                elif isinstance(a, Wire):
                    if not self._wire(a.wiring):
                        failed.add(a.wiring.veth)
                elif isinstance(a, RouteSet):
                    veths = a.veths - failed
                    veths = frozenset(v for v in veths if v in {w.veth for w in act.wired.values()})
                    if not veths:
                        continue
                    old = act.metrics.get(a.dst)
                    if act.routes.get(a.dst) == veths and old == a.metric and not (a.veths & failed):
                        continue
                    self.netlink.route_set(a.dst, veths, self.proto, a.metric)
                    if old is not None and old != a.metric:
                        act.superseded[(a.dst, old)] = act.routes[a.dst]
                    act.routes[a.dst] = veths
                    act.metrics[a.dst] = a.metric
                    self.metrics.netlink_changes.labels("route_set").inc()
            except NetlinkError as exc:
                # One failed change must not stop the others; the next resync retries.
                log.error(
                    "netlink change %s failed: %s",
                    type(a).__name__,
                    exc,
                    extra={"reason": "netlink", "errno": exc.errno},
                )
                self.metrics.errors.labels("netlink").inc()
            except Exception:  # one change must not stop the pass (see _wire)
                log.exception("netlink change %s failed unexpectedly", a)
                self.metrics.errors.labels("netlink").inc()
        if pending is not None:
            self._guard.end(pending)
        # Removals, and elements of wirings that failed.
        self._guard.sync(_sources(act.wired.values()))

    def _wire(self, w: Wiring) -> bool:
        info = self.containers.get(w.container_id)
        pid = info.pid if info else 0
        if not pid:
            try:
                fresh = self.docker.inspect(w.container_id)
            except DockerError as exc:
                log.warning("cannot wire %s yet: %s", w.name, exc)
                return False
            if fresh is None or not fresh.running or not fresh.pid:
                self.report.exited(w.container_id, w.name, "exited before it was wired")
                self.containers.pop(w.container_id, None)
                return False
            self.containers[w.container_id] = fresh
            pid = fresh.pid
        cfg = self.cfg
        spec = WireSpec(
            veth=w.veth,
            ifname=w.ifname,
            ipv4=w.ipv4,
            ipv6=w.ipv6,
            via4=("0.0.0.0/0",) if w.default_routes else tuple(map(str, cfg.pools_ipv4)),
            via6=("::/0",) if w.default_routes else tuple(map(str, cfg.pools_ipv6)),
            alias=encode_alias(w.container_id, w.ipv4, w.ipv6, pid),
        )
        try:
            self.netlink.wire(spec, pid)
        except ContainerGone as exc:
            self.report.exited(w.container_id, w.name, f"exited before it was wired ({exc})")
            return False
        except NetlinkError as exc:
            self.report.fail(w, "wiring_failed", f"wiring failed: {exc}")
            return False
        except Exception as exc:  # see below
            # Anything else (an encoding error in pyroute2, an OSError from a sysctl) is this
            # container's failure, never the reconciler's: a crash here would restart the
            # agent into the same container, in a loop, and no other container would be wired.
            log.exception("wiring %s (%s) raised", w.name, w.container_id[:12])
            self.report.fail(w, "wiring_failed", f"wiring failed: {type(exc).__name__}: {labels_mod.show(str(exc))}")
            return False
        assert self.actual is not None
        self.actual.wired[w.container_id] = Wired(w.container_id, w.veth, w.ipv4, w.ipv6, pid)
        self.report.wired(w.container_id)
        self.metrics.netlink_changes.labels("wire").inc()
        log.info(
            "wired container %s: %s %s via %s",
            w.name,
            w.ipv4 or "-",
            w.ipv6 or "-",
            w.veth,
            extra={
                "container": w.name,
                "id": w.container_id[:12],
                "ipv4": str(w.ipv4 or ""),
                "ipv6": str(w.ipv6 or ""),
                "veth": w.veth,
                "announce": w.announce,
            },
        )
        return True

    def _publish(self) -> None:
        assert self.actual is not None
        self.report.publish(self.desired, self.actual, self.cfg.instance, self.proto, self.last_resync)

    def status_rows(self) -> list[dict[str, Any]]:
        """One row per opted-in container: what it has, and whether it is announced."""
        return self.report.status_rows(self.desired, self.actual)

    def update_config(self, cfg: AgentConfig) -> None:
        """A new `agent` document (from the document source's thread): applied by the loop at its next pass."""
        self.events.put(cfg)

    def _take_config(self, cfg: AgentConfig) -> None:
        if cfg.settings.route_protocol != self.proto:
            # Our routes are found by their protocol: switching it live would orphan every
            # route installed so far. A restart adopts the new number (and a resync then
            # removes nothing it does not own).
            log.error(
                "agent parameter changes the route protocol %d -> %d: restart the agent to apply it",
                self.proto,
                cfg.settings.route_protocol,
            )
            cfg = replace(cfg, settings=replace(cfg.settings, route_protocol=self.proto))
        if cfg != self.cfg:
            log.info("agent configuration changed (pools, block or settings): full resync")
            self.cfg = cfg

    # -- loop ------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Event fast path plus a periodic full resync, until `stop` is set."""
        interval = self.cfg.settings.resync_interval
        self.resync()
        while not stop.is_set():
            wait = max(0.0, self.last_resync + interval - time.monotonic()) if self.last_resync else 1.0
            batch: list[Event] = []
            want_resync = False
            try:
                item = self.events.get(timeout=min(wait, 1.0))
                # Drain what is queued: a burst of starts becomes one pass.
                while True:
                    if isinstance(item, Event):
                        batch.append(item)
                    elif isinstance(item, AgentConfig):
                        self._take_config(item)
                        want_resync = True
                    else:
                        want_resync = True  # RESYNC: the event stream (re)connected
                    item = self.events.get_nowait()
            except queue.Empty:
                pass
            try:
                if batch:
                    self.handle_events(batch)
                if (
                    want_resync
                    or (self.last_resync == 0.0 and not batch)
                    or time.monotonic() >= self.last_resync + interval
                ):
                    if not self.resync() and not want_resync:
                        # Docker is down: try again soon rather than after a full interval.
                        self.last_resync = time.monotonic() - interval + 2.0
            except AgentError as exc:
                log.error("container pass failed: %s", exc)


def _sources(wired: Iterable[Wired | Wiring]) -> set[Element]:
    """The (veth, address) pairs the guard lets these containers send from."""
    return {(w.veth, a) for w in wired for a in (w.ipv4, w.ipv6) if a is not None}
