"""The pairing sync: the instance's snapshot -> GRE tunnels and FRR configuration, live, on routers and hosts."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from prometheus_client import CollectorRegistry

from .config import AgentConfig
from .documents import DocumentSource
from .errors import AgentError, CommandError
from .frr import ROUTE_SERVER_MARKER, Frr
from .frr_apply import FrrApply, FrrState
from .fsutil import atomic_write_json
from .metrics import PairingMetrics
from .rsgate import RouteServerGate, planned_peers
from .ssm import Snapshot
from .tunnels import Report, TunnelReconciler, host_filters, parse_tunnels

log = logging.getLogger("overlay_agent.pairing")

STATUS_NAME = "pairing.json"
# The loop asks to wake within a second; waking this much later than asked means the
# process (the instance) was stalled: every BGP session may be stale (rsgate).
STALL_SLACK = 1.0


def _no_parameters() -> dict[str, Any]:
    return {}


@dataclass
class PairingSync:
    """Owns the tunnels, their underlay pins (routes of our protocol outside the container pools)
    and FRR's configuration; nothing of the container wiring. Fed snapshots by offer(); one
    loop, where a new snapshot and the resync ticker mark the state dirty and apply() is the
    only writer (tunnels through the tunnel reconciler, then FRR through frr_apply.FrrApply).

    Hazards:
    - Parameters unreachable, or a malformed `agent` document: the document source keeps the
      last good ones and offers nothing new, so nothing is torn down; the `parameters` part
      of the status file says so. A malformed tunnel parameter rejects that tunnel only.
    - Order: tunnels before FRR, so a new neighbor's inner address exists when bgpd starts
      connecting (it would retry anyway, but a session up a poll sooner is worth it).
    - FRR (frr_apply.FrrApply, whose docstring lists them): reloaded only when FRR's own diff
      is non-empty, apart from the residue of lines FRR never shows; a config FRR rejects or
      a document that cannot be filled in leaves the previous config running.
    - Routers in routeServer mode: the route-server gate (rsgate) is evaluated on every turn
      from FRR's sessions; when it flips, the text is re-filled (held or planned announcement
      to the route server) and applied. Closing it goes to FRR BEFORE the tunnels: after a
      reboot bgpd starts from the last written frr.conf (which may hold the planned
      announcement), and no host session can come up before the tunnels exist. A loop that
      wakes up much later than it asked (the instance was stalled) closes the gate at once.
    """

    tunnels: TunnelReconciler
    frr: Frr | None
    state_dir: Path
    resync_interval: float = 30.0
    metrics: PairingMetrics = field(default_factory=PairingMetrics)
    status_path: Path | None = None
    # The document source's state, for the `parameters` part of the status file.
    parameters: Callable[[], dict[str, Any]] = _no_parameters

    def __post_init__(self) -> None:
        self.snapshot: Snapshot | None = None
        self.cfg: AgentConfig | None = None  # the last good agent document that came with it
        self.report: Report | None = None
        self.frr_apply = FrrApply(self.frr, self.state_dir, self.metrics.frr_reloads)
        self.dirty = False
        self.next_resync = 0.0
        self.last_apply_seconds: float | None = None
        self.gate: RouteServerGate | None = None  # routers in routeServer mode
        self.planned: set[str] = set()  # the gate's planned host peers (from the tunnels)
        self._offered: tuple[Snapshot, AgentConfig | None] | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()

    @property
    def frr_state(self) -> FrrState:
        return self.frr_apply.state

    # -- input -----------------------------------------------------------------------------
    def offer(self, snap: Snapshot, cfg: AgentConfig | None) -> None:
        """A new snapshot (from the document source's thread): applied by the loop at once."""
        with self._lock:
            self._offered = (snap, cfg)
        self._wake.set()

    def _take(self) -> None:
        with self._lock:
            offered, self._offered = self._offered, None
        if offered is not None:
            self.snapshot, self.cfg = offered
            self.dirty = True
            self.planned = planned_peers(parse_tunnels(self.snapshot.tunnels)[0].values())
            if self.cfg is not None:
                self.resync_interval = self.cfg.settings.resync_interval

    # -- loop ------------------------------------------------------------------------------
    def step(self, now: float | None = None) -> bool:
        """One turn of the loop: apply when a snapshot came or the resync is due; True if applied."""
        now = time.monotonic() if now is None else now
        self._take()
        self._gate_step(now)
        if self.snapshot is not None and (self.dirty or now >= self.next_resync):
            self.apply(resync=now >= self.next_resync)
            self.next_resync = now + self.resync_interval
            return True
        return False

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self._wake.clear()
            self.step()
            wait = min(
                1.0,  # wake at least every second to notice `stop` (and for the gate)
                max(0.0, self.next_resync - time.monotonic()) if self.snapshot else 1.0,
            )
            t0 = time.monotonic()
            self._wake.wait(timeout=wait)
            late = time.monotonic() - t0 - wait
            if late > STALL_SLACK and self.gate is not None:
                self.gate.stalled(time.monotonic(), late)
                log.warning("woke %.1f s late (stalled): route-server announcement held", late)
                self.dirty = True

    # -- route-server gate ----------------------------------------------------------------
    def _gate_step(self, now: float) -> None:
        """Routers in routeServer mode: re-evaluate the gate from FRR's sessions; dirty when it flips."""
        snap = self.snapshot
        if self.frr is None or snap is None or snap.frr is None or ROUTE_SERVER_MARKER not in snap.frr:
            self.gate = None
            return
        if self.gate is None:
            self.gate = RouteServerGate()
        before = self.gate.preferred
        try:
            sessions = self.frr.sessions()
        except (CommandError, ValueError) as exc:
            log.debug("frr sessions unreadable: %s", exc)
            sessions = None
        self.gate.evaluate(now, self.planned, sessions)
        self.metrics.route_server_preferred.set(1 if self.gate.preferred else 0)
        if self.gate.preferred != before:
            log.info(
                "route server: %s (%s)",
                "planned announcement" if self.gate.preferred else "held announcement",
                self.gate.reason,
            )
            self.dirty = True

    # -- apply -----------------------------------------------------------------------------
    def apply(self, resync: bool = False) -> None:
        snap = self.snapshot
        assert snap is not None
        t0 = time.perf_counter()
        self.dirty = False
        if self.cfg is not None:
            self.tunnels.proto = self.cfg.settings.route_protocol
            self.tunnels.pools = self.cfg.pools_ipv4
        good, rejected = parse_tunnels(snap.tunnels)
        # Holding the route server's announcement goes first (class docstring).
        frr_first = self.gate is not None and not self.gate.preferred
        if frr_first:
            self._apply_frr(snap, resync, host_filters(good.values()))
        previous = self.report.rejected if self.report else {}
        for param, err in sorted(rejected.items()):
            if previous.get(param) != err:  # once per new error, not on every resync
                log.error("%s", err, extra={"parameter": param})
        try:
            self.report = self.tunnels.apply(good, rejected)
        except AgentError as exc:
            # The backend or netlink as a whole failed (the GRE daemon would not start):
            # mark dirty so the next turn tries again.
            log.error("tunnels: %s", exc)
            self.report = Report(self.tunnels.backend.name, rejected=rejected)
            self.report.error = str(exc)
            self.dirty = True
        # A router's per-host import filters follow its host tunnels (docs/frr.md).
        if not frr_first:
            self._apply_frr(snap, resync, host_filters(good.values()))
        self.last_apply_seconds = time.perf_counter() - t0
        self.metrics.apply_seconds.observe(self.last_apply_seconds)
        self._metrics()
        self.write_status()

    def _apply_frr(self, snap: Snapshot, resync: bool, extra: str) -> None:
        self.frr_apply.apply(snap, resync, preferred=self.gate is not None and self.gate.preferred, extra=extra)

    def _metrics(self) -> None:
        rep = self.report
        counts = {"up": 0, "down": 0, "error": 0, "pending": 0}
        for t in rep.tunnels if rep else []:
            counts[t.state] = counts.get(t.state, 0) + 1
        for state, n in counts.items():
            self.metrics.tunnels.labels(state).set(n)
        self.metrics.tunnels_rejected.set(len(rep.rejected) if rep else 0)

    # -- status ----------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return {
            "generated": time.time(),
            "instance": self.cfg.instance if self.cfg else None,
            "role": self.cfg.role if self.cfg else None,
            "parameters": self.parameters(),
            "tunnels": self.report.to_json() if self.report else None,
            "frr": self.frr_apply.status() if self.frr else None,
            "last_apply_seconds": self.last_apply_seconds,
            **(
                {"route_server": {"preferred": self.gate.preferred, "reason": self.gate.reason}}
                if self.gate is not None
                else {}
            ),
        }

    def write_status(self) -> None:
        path = self.status_path or (self.state_dir / STATUS_NAME)
        try:
            atomic_write_json(path, self.status(), indent=1)  # FRR errors, topology: root only
        except OSError as exc:
            log.error("cannot write status %s: %s", path, exc)


def attach(
    source: DocumentSource,
    tunnels: TunnelReconciler,
    frr: Frr | None,
    state_dir: Path,
    metrics: PairingMetrics | None = None,
    *,
    status_path: Path | None = None,
    resync_interval: float = 30.0,
) -> PairingSync:
    """A pairing sync on these shims, fed every snapshot of `source` and reporting its state: the command's
    wiring, also used by the benches and the unit tests' fakes."""
    sync = PairingSync(
        tunnels,
        frr,
        state_dir,
        resync_interval=resync_interval,
        metrics=metrics or PairingMetrics(),
        status_path=status_path,
        parameters=source.status,
    )
    source.on_snapshot(sync.offer)
    return sync


def build(
    source: DocumentSource,
    *,
    state_dir: str,
    registry: CollectorRegistry | None = None,
    gre_backend: str = "auto",
    frr_vty_socket: str | None = None,
    frr_confdir: str = "/etc/frr",
    status_path: str | None = None,
    no_frr: bool = False,
    gre_daemon: str = "spawn",
) -> PairingSync:
    """Wire the real shims (pyroute2 in this namespace, the chosen GRE backend, frr-reload) and subscribe to `source`."""
    from pyroute2 import IPRoute

    from .gre import select_backend
    from .tunnels import PyrouteTunnels

    sdir = Path(state_dir)
    sdir.mkdir(parents=True, exist_ok=True)
    ipr = IPRoute()
    backend = select_backend(ipr, sdir, gre_backend, spawn_daemon=gre_daemon == "spawn")
    log.info("GRE backend: %s", backend.name)
    return attach(
        source,
        TunnelReconciler(backend, PyrouteTunnels(ipr)),
        None if no_frr else Frr(sdir, vty_socket=frr_vty_socket, confdir=frr_confdir),
        sdir,
        PairingMetrics(registry),
        status_path=Path(status_path) if status_path else None,
    )
