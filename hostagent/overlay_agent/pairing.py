"""Pairing sync: the instance's SSM parameters -> GRE tunnels and FRR configuration, live, on routers and hosts.

One loop: a poll timer (the `revision` parameter, jittered), SIGHUP (poll now) and a
resync ticker mark the state dirty; `apply()` is the only writer (tunnels through the
tunnel reconciler, then FRR through frr-reload).

Hazards:
- Parameters unreachable: the last applied snapshot stays in force (in memory, and on
  disk for a restart); polls back off exponentially; `status` and the
  `overlay_parameters_ok` metric say so. Nothing is torn down for lack of news.
- A malformed `agent` document: the previous settings stay (route protocol, pools);
  the error is reported. A malformed tunnel parameter rejects that tunnel only.
- Order: tunnels before FRR, so a new neighbor's inner address exists when bgpd starts
  connecting (it would retry anyway, but a session up a poll sooner is worth it).
- FRR is touched only when the rendered text changed or on the resync ticker, and then
  only when FRR's own diff is non-empty. Lines FRR accepts but never shows in its running
  config (8.4 keeps the system hostname whatever `hostname` says) are remembered after a
  reload as residue and do not count as a difference, so a resync does not reload forever.
- A config FRR rejects: the previous config stays (frr.Frr.reload restores it), the
  error is in the log, the metric and `status`; the next changed text is tried again.
- Routers in routeServer mode: the route-server gate (rsgate) is evaluated on every turn
  from FRR's sessions; when it flips, the text is re-filled (held or planned announcement
  to the route server) and applied. Closing it goes to FRR BEFORE the tunnels: after a
  reboot bgpd starts from the last written frr.conf (which may hold the planned
  announcement), and no host session can come up before the tunnels exist. A loop that
  wakes up much later than it asked (the instance was stalled) closes the gate at once.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from . import config as config_mod
from .errors import AgentError, CommandError, ConfigError, ParameterError
from .frr import ROUTE_SERVER_MARKER, Frr, fill_bogons, fill_password, fill_route_server
from .rsgate import RouteServerGate, planned_peers
from .ssm import Cache, Poller, Snapshot
from .fsutil import atomic_write_json
from .texttable import text_table
from .tunnels import Report, TunnelReconciler, host_filters, parse_tunnels

log = logging.getLogger("overlay_agent.pairing")

STATUS_NAME = "pairing.json"
# The loop asks to wake within a second; waking this much later than asked means the
# process (the instance) was stalled: every BGP session may be stale (rsgate).
STALL_SLACK = 1.0


class PairingMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        r = registry or CollectorRegistry()
        self.parameters_ok = Gauge(
            "overlay_parameters_ok", "1 while the last read of the SSM parameters succeeded", registry=r
        )
        self.parameter_failures = Counter(
            "overlay_parameter_failures", "Failed reads of the SSM parameters", registry=r
        )
        self.parameter_fetches = Counter(
            "overlay_parameter_fetches", "Full reads of the parameter set (the revision moved)", registry=r
        )
        self.parameters_age = Gauge(
            "overlay_parameters_last_success_timestamp", "Unix time of the last successful parameter read", registry=r
        )
        self.tunnels = Gauge("overlay_tunnels", "Tunnels by state", ["state"], registry=r)
        self.tunnels_rejected = Gauge(
            "overlay_tunnel_parameters_rejected", "Tunnel parameters refused as malformed", registry=r
        )
        self.frr_reloads = Counter("overlay_frr_reloads", "frr-reload runs, by result", ["result"], registry=r)
        self.agent_refused = Counter(
            "overlay_agent_document_refused", "Agent documents refused as invalid (the last good one stays)", registry=r
        )
        self.route_server_preferred = Gauge(
            "overlay_route_server_preferred",
            "1 while this router announces its planned route to the VPC route server (its hosts are back), "
            "0 while it announces the held one",
            registry=r,
        )
        self.apply_seconds = Histogram(
            "overlay_pairing_apply_seconds",
            "Duration of one pairing apply",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
            registry=r,
        )


@dataclass
class FrrState:
    applied: str | None = None  # the filled-in text last applied (or found already running)
    residue: frozenset = frozenset()  # diff lines FRR accepts but never shows
    checked: float = 0.0  # monotonic time of the last diff against the running config
    error: str | None = None
    reloads: int = 0


@dataclass
class PairingSync:
    poller: Poller
    tunnels: TunnelReconciler
    frr: Frr | None
    cache: Cache
    state_dir: Path
    resync_interval: float = 30.0
    metrics: PairingMetrics = field(default_factory=PairingMetrics)
    status_path: Path | None = None
    # Told of every new valid `agent` document (the container wiring follows pools/blocks).
    on_config: Callable[[config_mod.AgentConfig], None] | None = None

    def __post_init__(self):
        self.snapshot: Snapshot | None = None
        self.cfg: config_mod.AgentConfig | None = None
        self.agent_error: str | None = None
        self.report: Report | None = None
        self.frr_state = FrrState()
        self.dirty = False
        self._wake = threading.Event()
        self._hup = False
        self.next_poll: float | None = None  # set by the first step(), relative to its clock
        self.next_resync = 0.0
        self.last_apply_seconds: float | None = None
        self.gate: RouteServerGate | None = None  # routers in routeServer mode
        self.planned: set[str] = set()  # the gate's planned host peers (from the tunnels)

    # -- events ---------------------------------------------------------------------------
    def hup(self) -> None:
        """SIGHUP: poll now (safe from a signal handler: only sets flags)."""
        self._hup = True
        self._wake.set()

    def start(self) -> Snapshot | None:
        """First read (SSM, else the disk cache); the snapshot is applied by the first step()."""
        snap = self.poller.start()
        self._account()
        if snap is not None:
            self._accept(snap)
        return snap

    def _account(self) -> None:
        st = self.poller.state
        self.metrics.parameters_ok.set(1 if st.ok else 0)
        if st.last_success:
            self.metrics.parameters_age.set(st.last_success)

    def _accept(self, snap: Snapshot) -> None:
        self.snapshot = snap
        self.dirty = True
        self.planned = planned_peers(parse_tunnels(snap.tunnels)[0].values())
        if snap.agent is not None:
            try:
                cfg = config_mod.parse(config_mod.loads(snap.agent, "agent"), "agent")
                changed, self.cfg = cfg != self.cfg, cfg
                self.agent_error = None
                if changed and self.on_config is not None:
                    self.on_config(cfg)
                # The program may change the intervals (docs/contracts.md settings).
                self.poller.interval = self.cfg.settings.poll_interval
                self.resync_interval = self.cfg.settings.resync_interval
            except Exception as exc:  # any bad document is a refused update, never a crash
                # Keep the previous (last good) document; a bad one must not reset the route
                # protocol, nor stop the pairing thread (tunnels and FRR keep being applied).
                if isinstance(exc, ConfigError):
                    self.agent_error = f"{exc} (keeping the last good agent document)"
                else:
                    log.exception("agent document refused")
                    self.agent_error = (
                        f"agent: refused ({type(exc).__name__}: {str(exc)[:200]}); keeping the last good one"
                    )
                self.metrics.agent_refused.inc()
                log.error("%s", self.agent_error)

    def poll_now(self) -> None:
        try:
            snap = self.poller.poll()
        except ParameterError as exc:
            self.metrics.parameter_failures.inc()
            log.error(
                "parameters: %s (keeping revision %s; retry in %.0f s)",
                exc,
                self.poller.state.revision,
                self.poller.next_delay(),
            )
            snap = None
        else:
            if snap is not None:
                self.metrics.parameter_fetches.inc()
                log.info("parameters: revision %s", snap.revision, extra={"revision": snap.revision})
        self._account()
        if snap is not None:
            self._accept(snap)

    def step(self, now: float | None = None) -> bool:
        """One turn of the loop: poll when due (or on SIGHUP), apply when dirty or resync due; True if applied."""
        now = time.monotonic() if now is None else now
        if self.next_poll is None:  # start() has just read everything
            self.next_poll = now + self.poller.next_delay()
        if self._hup or now >= self.next_poll:
            self._hup = False
            self.poll_now()
            self.next_poll = now + self.poller.next_delay()
        self._gate_step(now)
        if self.snapshot is not None and (self.dirty or now >= self.next_resync):
            self.apply(resync=now >= self.next_resync)
            self.next_resync = now + self.resync_interval
            return True
        return False

    def run(self, stop: threading.Event) -> None:
        if self.snapshot is None and self.poller.state.polls == 0:
            self.start()
        while not stop.is_set():
            self.step()
            wait = min(
                1.0,  # wake at least every second to notice `stop` (and for the gate)
                max(0.0, min(self.next_poll, self.next_resync if self.snapshot else self.next_poll) - time.monotonic()),
            )
            t0 = time.monotonic()
            self._wake.wait(timeout=wait)
            self._wake.clear()
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
        # Holding the route server's announcement goes first (module docstring).
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
        if self.poller.state.source == "ssm":
            try:
                self.cache.save(snap)
            except OSError as exc:
                log.error("cannot write parameter cache %s: %s", self.cache.path, exc)
        self.write_status()

    def _frr_state_path(self) -> Path:
        return self.state_dir / "frr-state.json"

    def _load_frr_state(self) -> None:
        """After a restart: what we applied last and FRR's residue, so an unchanged config is not reloaded."""
        try:
            doc = json.loads(self._frr_state_path().read_text())
            self.frr_state.applied = doc["applied"]
            self.frr_state.residue = frozenset(doc["residue"])
        except (OSError, ValueError, KeyError, TypeError):
            pass

    def _save_frr_state(self) -> None:
        st = self.frr_state
        try:  # root-only: the applied text holds the password
            atomic_write_json(self._frr_state_path(), {"applied": st.applied, "residue": sorted(st.residue)})
        except OSError as exc:
            log.error("cannot write %s: %s", self._frr_state_path(), exc)

    def _apply_frr(self, snap: Snapshot, resync: bool, extra: str = "") -> None:
        if self.frr is None or snap.frr is None:
            return
        st = self.frr_state
        if st.applied is None and st.reloads == 0:
            self._load_frr_state()
        try:
            text = fill_bogons(
                fill_route_server(
                    fill_password(snap.frr, snap.password, onprem_password=snap.onprem_password),
                    snap.route_server,
                    preferred=self.gate is not None and self.gate.preferred,
                ),
                snap.vpc,
            )
            if extra:
                text = text.rstrip("\n") + "\n" + extra
        except ConfigError as exc:
            st.error = str(exc)
            log.error("%s", exc)
            return
        if text == st.applied and not resync:
            return
        if st.applied is not None and st.error is None and _gate_flip_only(st.applied, text):
            # Only the route-server announcement flips: one frr-reload, no diff before or
            # after (each frr-reload run costs seconds on a busy instance, and holding the
            # announcement after a stall races bgpd's first UPDATE to the route server).
            try:
                self.frr.reload(text, previous=st.applied)
            except (CommandError, ConfigError) as exc:
                st.error = str(exc)
                self.metrics.frr_reloads.labels("error").inc()
                log.error("frr: %s", exc)
                return
            st.reloads += 1
            self.metrics.frr_reloads.labels("ok").inc()
            st.applied = text
            self._save_frr_state()
            log.info("frr: route-server announcement %s", "planned" if ROUTE_SERVER_PLANNED in text else "held")
            return
        try:
            delete, add = self.frr.diff(text)
            st.checked = time.monotonic()
            if text == st.applied and not (set(delete) | set(add)) - st.residue:
                return  # in sync, apart from lines FRR never shows
            if text != st.applied and not (delete or add):
                st.applied, st.error = text, None  # already running (started with it)
                self._save_frr_state()
                return
            warning = self.frr.reload(text, previous=st.applied)
            if warning:
                log.warning("frr: %s", warning)
            st.reloads += 1
            self.metrics.frr_reloads.labels("ok").inc()
            delete, add = self.frr.diff(text)
            st.residue = frozenset(delete) | frozenset(add)
            if st.residue:
                log.info("frr: applied; FRR keeps no trace of: %s", "; ".join(sorted(st.residue)))
            st.applied, st.error = text, None
            self._save_frr_state()
            log.info("frr: configuration reloaded", extra={"revision": snap.revision})
        except (CommandError, ConfigError) as exc:
            st.error = str(exc)
            self.metrics.frr_reloads.labels("error").inc()
            log.error("frr: %s", exc)

    def _metrics(self) -> None:
        rep = self.report
        counts = {"up": 0, "down": 0, "error": 0, "pending": 0}
        for t in rep.tunnels if rep else []:
            counts[t.state] = counts.get(t.state, 0) + 1
        for state, n in counts.items():
            self.metrics.tunnels.labels(state).set(n)
        self.metrics.tunnels_rejected.set(len(rep.rejected) if rep else 0)

    # -- status ----------------------------------------------------------------------------
    def status(self) -> dict:
        st = self.poller.state
        return {
            "generated": time.time(),
            "instance": self.cfg.instance if self.cfg else None,
            "role": self.cfg.role if self.cfg else None,
            "parameters": {
                "ok": st.ok,
                "source": st.source,
                "revision": st.revision,
                "failures": st.failures,
                "error": st.last_error,
                "last_success": st.last_success,
                "agent_error": self.agent_error,
            },
            "tunnels": self.report.to_json() if self.report else None,
            "frr": {
                "error": self.frr_state.error,
                "reloads": self.frr_state.reloads,
                "applied": self.frr_state.applied is not None,
            }
            if self.frr
            else None,
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


ROUTE_SERVER_PLANNED = "neighbor ROUTE-SERVER route-map RS-OUT out"


def _gate_flip_only(applied: str, text: str) -> bool:
    """True when `text` differs from `applied` only in the route-server outbound route-map lines."""
    a, b = applied.splitlines(), text.splitlines()
    if len(a) != len(b):
        return False
    changed = [(x, y) for x, y in zip(a, b) if x != y]
    return bool(changed) and all(
        x.split()[:3] == y.split()[:3] == ["neighbor", "ROUTE-SERVER", "route-map"] for x, y in changed
    )


def build(
    bootstrap_path: str,
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
    """Wire the real shims: boto3, pyroute2 in this namespace, the chosen GRE backend, frr-reload."""
    from pyroute2 import IPRoute

    from .gre import select_backend
    from .ssm import ParameterSource, load_bootstrap, make_client
    from .tunnels import PyrouteTunnels

    boot = load_bootstrap(bootstrap_path)
    sdir = Path(state_dir)
    sdir.mkdir(parents=True, exist_ok=True)
    ipr = IPRoute()
    backend = select_backend(ipr, sdir, gre_backend, spawn_daemon=gre_daemon == "spawn")
    log.info("GRE backend: %s", backend.name)
    source = ParameterSource(make_client(boot), boot.parameter_path, boot.password_name, boot.onprem_password_name)
    cache = Cache(sdir)
    poller = Poller(source, cache)
    frr = None if no_frr else Frr(sdir, vty_socket=frr_vty_socket, confdir=frr_confdir)
    sync = PairingSync(
        poller,
        TunnelReconciler(backend, PyrouteTunnels(ipr)),
        frr,
        cache,
        sdir,
        metrics=PairingMetrics(registry),
        status_path=Path(status_path) if status_path else None,
    )
    return sync


def wait_config(sync: PairingSync, stop: threading.Event) -> config_mod.AgentConfig | None:
    """Block until the agent document is known (SSM or cache), retrying with backoff; None if stopped."""
    sync.start()
    while sync.cfg is None and not stop.is_set():
        delay = sync.poller.next_delay()
        log.error(
            "no usable agent parameter yet (%s); retry in %.0f s",
            sync.agent_error or sync.poller.state.last_error or "not published",
            delay,
        )
        if stop.wait(delay):
            return None
        sync.poll_now()
    return sync.cfg


# -- `overlay-agent status` ----------------------------------------------------------------

DEFAULT_STATE_DIR = "/var/lib/overlay-agent"


def live_status(path: str | Path, *, vty_socket: str | None = None, live: bool = True) -> dict | None:
    """The running agent's pairing status file, with live link counters and BGP sessions; None if absent."""
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise AgentError(f"{path}: unreadable pairing status ({exc})") from exc
    if not live:
        return doc
    tunnels = (doc.get("tunnels") or {}).get("tunnels") or []
    try:
        from pyroute2 import IPRoute

        from .tunnels import PyrouteTunnels

        with IPRoute() as ipr:
            links = PyrouteTunnels(ipr).view().links
        for t in tunnels:
            link = links.get(t["name"])
            if link is not None:
                t["rx_bytes"], t["tx_bytes"] = link.rx_bytes, link.tx_bytes
                if t["state"] != "error":
                    t["state"] = "up" if link.up else "down"
            elif t["state"] != "error":
                t["state"] = "missing"
    except (OSError, AgentError) as exc:
        doc["live_error"] = f"kernel: {exc}"
    try:
        doc["sessions"] = [vars(s) for s in Frr(DEFAULT_STATE_DIR, vty_socket=vty_socket).sessions()]
    except (CommandError, ValueError) as exc:
        doc["sessions"] = None
        doc["sessions_error"] = str(exc)
    return doc


def table(doc: dict) -> str:
    lines = []
    p = doc.get("parameters") or {}
    src = "ok" if p.get("ok") else f"FAILING ({p.get('failures')}x: {p.get('error')}), using {p.get('source')}"
    lines.append(f"parameters: revision {p.get('revision')} from {p.get('source')}: {src}")
    if p.get("agent_error"):
        lines.append(f"agent parameter: {p['agent_error']}")
    tun = doc.get("tunnels") or {}
    lines.append(f"tunnels ({tun.get('backend', '?')} GRE):" + (f" {tun['error']}" if tun.get("error") else ""))
    rows = [
        (
            t["name"],
            t["peer"],
            t["kind"],
            t["remote"],
            t["key"],
            t["state"],
            t["rx_bytes"],
            t["tx_bytes"],
            t.get("error") or "",
        )
        for t in tun.get("tunnels") or []
    ]
    lines += text_table(("TUNNEL", "PEER", "KIND", "REMOTE", "KEY", "STATE", "RX BYTES", "TX BYTES", "ERROR"), rows)
    for r in tun.get("rejected") or []:
        lines.append(f"rejected: {r['error']}")
    frr = doc.get("frr") or {}
    if frr.get("error"):
        lines.append(f"frr: {frr['error']}")
    rs = doc.get("route_server")
    if rs is not None:
        lines.append(f"route server: {'planned' if rs.get('preferred') else 'held'} announcement ({rs.get('reason')})")
    sessions = doc.get("sessions")
    if sessions is None:
        lines.append(f"bgp sessions: unknown ({doc.get('sessions_error', 'not checked')})")
    else:
        rows = [
            (
                s["peer"],
                s["afi"],
                s["remote_as"],
                s["state"],
                f"{(s['uptime_ms'] or 0) // 1000}s",
                s["prefixes_in"],
                s["prefixes_out"],
            )
            for s in sessions
        ]
        lines += text_table(("BGP PEER", "AFI", "AS", "STATE", "UP", "PFX IN", "PFX OUT"), rows)
    return "\n".join(lines)


def unhealthy(doc: dict | None) -> bool:
    if not doc:
        return False
    tun = doc.get("tunnels") or {}
    return (
        not (doc.get("parameters") or {}).get("ok")
        or bool(tun.get("rejected"))
        or bool(tun.get("error"))
        or any(t["state"] == "error" for t in tun.get("tunnels") or [])
        or bool((doc.get("frr") or {}).get("error"))
    )
