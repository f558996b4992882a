"""FRR's configuration from the `frr` document: the agent's parts filled in, applied with frr-reload only when FRR's own diff says so."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import Counter

from .errors import CommandError, ConfigError
from .frr import Frr, fill_bogons, fill_password, fill_route_server
from .fsutil import atomic_write_json
from .ssm import Snapshot

log = logging.getLogger("overlay_agent.pairing")

STATE_NAME = "frr-state.json"
ROUTE_SERVER_PLANNED = "neighbor ROUTE-SERVER route-map RS-OUT out"


@dataclass
class FrrState:
    applied: str | None = None  # the filled-in text last applied (or found already running)
    residue: frozenset[str] = frozenset()  # diff lines FRR accepts but never shows
    checked: float = 0.0  # monotonic time of the last diff against the running config
    error: str | None = None
    reloads: int = 0


class FrrApply:
    """Fills in the `frr` document (passwords, the route server's neighbors and announcement, the
    bogon and VPC import filters, the router's per-host filters) and brings FRR to it; the pairing
    sync calls apply() after (or, holding the route server's announcement, before) its tunnels.

    Hazards:
    - FRR is touched only when the filled-in text changed or on the resync ticker, and then
      only when FRR's own diff (frr-reload --test) is non-empty: a reload for nothing costs
      seconds on a busy instance.
    - Lines FRR accepts but never shows in its running config (8.4 keeps the system hostname
      whatever `hostname` says) are remembered after a reload as residue and do not count as
      a difference, so a resync does not reload forever. The applied text and the residue
      survive a restart (<state-dir>/frr-state.json, 0600: the text holds the password), so an
      unchanged config is not reloaded after one.
    - A document that cannot be filled in (a password FRR would misread, a marker the agent
      cannot fill): nothing is applied, the previous config stays, the error is in the log
      and `status`.
    - A config FRR rejects: the previous config stays (frr.Frr.reload restores it), the
      error is in the log, the metric and `status`; the next changed text is tried again.
    - Only the route-server announcement flips (the gate, rsgate): one frr-reload and no diff
      before or after, since holding the announcement after a stall races bgpd's first UPDATE
      to the route server.
    """

    def __init__(self, frr: Frr | None, state_dir: Path, reloads: Counter) -> None:
        self.frr = frr
        self.state = FrrState()
        self.path = state_dir / STATE_NAME
        self.reloads = reloads  # the overlay_frr_reloads counter, by result

    def _load(self) -> None:
        """After a restart: what we applied last and FRR's residue, so an unchanged config is not reloaded."""
        try:
            doc = json.loads(self.path.read_text())
            self.state.applied = doc["applied"]
            self.state.residue = frozenset(doc["residue"])
        except (OSError, ValueError, KeyError, TypeError):
            pass

    def _save(self) -> None:
        st = self.state
        try:  # root-only: the applied text holds the password
            atomic_write_json(self.path, {"applied": st.applied, "residue": sorted(st.residue)})
        except OSError as exc:
            log.error("cannot write %s: %s", self.path, exc)

    def apply(self, snap: Snapshot, resync: bool, *, preferred: bool, extra: str = "") -> None:
        """Bring FRR to `snap`'s `frr` document: the route server's announcement planned when `preferred`,
        `extra` (the router's per-host filters) appended."""
        if self.frr is None or snap.frr is None:
            return
        st = self.state
        if st.applied is None and st.reloads == 0:
            self._load()
        try:
            text = fill_bogons(
                fill_route_server(
                    fill_password(snap.frr, snap.password, onprem_password=snap.onprem_password),
                    snap.route_server,
                    preferred=preferred,
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
                self._failed(exc)
                return
            st.reloads += 1
            self.reloads.labels("ok").inc()
            st.applied = text
            self._save()
            log.info("frr: route-server announcement %s", "planned" if ROUTE_SERVER_PLANNED in text else "held")
            return
        try:
            delete, add = self.frr.diff(text)
            st.checked = time.monotonic()
            if text == st.applied and not (set(delete) | set(add)) - st.residue:
                return  # in sync, apart from lines FRR never shows
            if text != st.applied and not (delete or add):
                st.applied, st.error = text, None  # already running (started with it)
                self._save()
                return
            warning = self.frr.reload(text, previous=st.applied)
            if warning:
                log.warning("frr: %s", warning)
            st.reloads += 1
            self.reloads.labels("ok").inc()
            delete, add = self.frr.diff(text)
            st.residue = frozenset(delete) | frozenset(add)
            if st.residue:
                log.info("frr: applied; FRR keeps no trace of: %s", "; ".join(sorted(st.residue)))
            st.applied, st.error = text, None
            self._save()
            log.info("frr: configuration reloaded", extra={"revision": snap.revision})
        except (CommandError, ConfigError) as exc:
            self._failed(exc)

    def _failed(self, exc: CommandError | ConfigError) -> None:
        """FRR refused (or could not be asked): the previous config stays; the error goes to status, metric, log."""
        self.state.error = str(exc)
        self.reloads.labels("error").inc()
        log.error("frr: %s", exc)

    def status(self) -> dict[str, object]:
        """The `frr` part of the pairing status file."""
        st = self.state
        return {"error": st.error, "reloads": st.reloads, "applied": st.applied is not None}


def _gate_flip_only(applied: str, text: str) -> bool:
    """True when `text` differs from `applied` only in the route-server outbound route-map lines."""
    a, b = applied.splitlines(), text.splitlines()
    if len(a) != len(b):
        return False
    changed = [(x, y) for x, y in zip(a, b) if x != y]
    return bool(changed) and all(
        x.split()[:3] == y.split()[:3] == ["neighbor", "ROUTE-SERVER", "route-map"] for x, y in changed
    )
