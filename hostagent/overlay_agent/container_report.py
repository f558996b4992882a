"""Container wiring, what it tells people: problems once each, metrics, status rows and file, neighbour-table warning."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from .fsutil import atomic_write_json
from .metrics import Metrics
from .wiring import Actual, Desired, Problem, Wiring, host_prefix

log = logging.getLogger("overlay_agent.containers")

EXIT_MEMORY = 300.0  # seconds an "exited before it was wired" stays in status


def routed(w: Wiring, act: Actual) -> bool:
    """Every address of the wiring has its host route through the wiring's veth."""
    return all(w.veth in act.routes.get(host_prefix(a), ()) for a in (w.ipv4, w.ipv6) if a is not None)


class WiringReport:
    """The problems the apply found (on top of those desire() found), and everything the reconciler reports."""

    def __init__(self, metrics: Metrics, status_path: Path | None = None) -> None:
        self.metrics = metrics
        self.status_path = status_path
        self.apply_problems: dict[str, Problem] = {}
        # Containers that exited before we could wire them: gone from Docker's running set,
        # so kept here (with the time) to stay visible in `status` for EXIT_MEMORY seconds.
        self.exits: dict[str, tuple[Problem, float]] = {}
        self._reported: set[tuple[str, str]] = set()
        self._neigh_limit = 0
        self._neigh_warned = False
        self.started_ns: dict[str, int] = {}  # container id -> Docker start event time

    # -- problems found while applying -------------------------------------------------
    def fail(self, w: Wiring, reason: str, message: str) -> None:
        self.apply_problems[w.container_id] = Problem(w.container_id, w.name, reason, message)

    def exited(self, cid: str, name: str, message: str) -> None:
        self.exits[cid] = (Problem(cid, name, "exited", message), time.monotonic())

    def wired(self, cid: str) -> None:
        self.apply_problems.pop(cid, None)

    def forget_gone(self, running: set[str]) -> None:
        """A failure is the container's: it goes with the container."""
        for cid in list(self.apply_problems):
            if cid not in running:
                del self.apply_problems[cid]

    def problems(self, desired: Desired, actual: Actual | None) -> dict[str, Problem]:
        now = time.monotonic()
        for cid, (_, at) in list(self.exits.items()):
            if now - at > EXIT_MEMORY or (actual is not None and cid in actual.wired):
                del self.exits[cid]
        return {**{cid: p for cid, (p, _) in self.exits.items()}, **desired.problems, **self.apply_problems}

    # -- after every pass ----------------------------------------------------------------
    def publish(self, desired: Desired, act: Actual, instance: str, proto: int, last_resync: float) -> None:
        """Log and count new problems (once each), set the gauges and the latency, write the status file."""
        problems = self.problems(desired, act)
        current = {(cid, p.reason) for cid, p in problems.items()}
        for cid, p in problems.items():
            if (cid, p.reason) not in self._reported:
                log.warning(p.line(), extra={"container": p.name, "id": cid[:12], "reason": p.reason})
                self.metrics.errors.labels(p.reason).inc()
        self._reported = current
        self.metrics.containers_wired.set(len(act.wired))
        self._check_neighbour_table(len(act.wired))
        v4 = sum(1 for d in act.routes if d.version == 4)
        self.metrics.routes_installed.labels("ipv4").set(v4)
        self.metrics.routes_installed.labels("ipv6").set(len(act.routes) - v4)
        announced = 0
        now = time.time_ns()
        for cid, w in desired.wirings.items():
            if cid not in act.wired:
                continue
            is_routed = routed(w, act)
            announced += is_routed and w.announce
            started = self.started_ns.pop(cid, None)
            if started is not None and (is_routed or not w.announce):
                self.metrics.wiring_latency.observe(max(0, now - started) / 1e9)
        for cid in list(self.started_ns):
            if cid not in desired.wirings:
                del self.started_ns[cid]
        self.metrics.containers_announced.set(announced)
        if self.status_path is not None:
            self._write_status(self.status_rows(desired, act, problems), instance, proto, last_resync)

    def _check_neighbour_table(self, wired: int) -> None:
        # The kernel's ARP and ND tables are shared by all namespaces of the host and every
        # container costs two entries (host -> container, container -> 169.254.1.1). Beyond
        # gc_thresh3 (default 1024) new entries fail ("neighbor table overflow") and
        # containers become unreachable. The limit is host setup (user data); say it loudly.
        need = wired * 2 + 64
        if self._neigh_warned or need <= self._neigh_limit:
            return
        try:
            self._neigh_limit = int(Path("/proc/sys/net/ipv4/neigh/default/gc_thresh3").read_text())
        except (OSError, ValueError):
            self._neigh_limit = 1 << 62  # only the initial namespace has it: nothing to check
            return
        if need > self._neigh_limit:
            self._neigh_warned = True
            log.warning(
                "%d containers need about %d neighbour entries but net.ipv4.neigh.default.gc_thresh3 "
                "is %d (and likewise ipv6): raise gc_thresh1/2/3 or containers become unreachable",
                wired,
                need,
                self._neigh_limit,
                extra={"reason": "neighbour_table"},
            )

    # -- status --------------------------------------------------------------------------
    def status_rows(
        self, desired: Desired, act: Actual | None, problems: dict[str, Problem] | None = None
    ) -> list[dict[str, Any]]:
        """One row per opted-in container: what it has, and whether it is announced."""
        act = act or Actual()
        rows: list[dict[str, Any]] = []
        if problems is None:
            problems = self.problems(desired, act)
        for cid, w in sorted(desired.wirings.items(), key=lambda kv: kv[1].name):
            if cid in problems:
                continue
            wired = cid in act.wired
            is_routed = wired and routed(w, act)
            if not wired:
                state = "pending"
            elif not w.announce:
                state = f"withdrawn ({w.withdrawn_because})"
            else:
                state = "routed" if is_routed else "route missing"
            rows.append(
                {
                    "id": cid[:12],
                    "name": w.name,
                    "ipv4": str(w.ipv4 or ""),
                    "ipv6": str(w.ipv6 or ""),
                    "veth": w.veth,
                    "wired": wired,
                    "route": is_routed,
                    "announce": w.announce,
                    "anycast": w.anycast,
                    "state": state,
                    "reason": "",
                }
            )
        for cid, p in sorted(problems.items(), key=lambda kv: kv[1].name):
            rows.append(
                {
                    "id": cid[:12],
                    "name": p.name,
                    "ipv4": "",
                    "ipv6": "",
                    "veth": "",
                    "wired": False,
                    "route": False,
                    "announce": False,
                    "anycast": False,
                    "state": "error",
                    "reason": p.reason,
                    "error": p.message,
                }
            )
        return rows

    def _write_status(self, rows: list[dict[str, Any]], instance: str, proto: int, last_resync: float) -> None:
        doc = {
            "generated": time.time(),
            "instance": instance,
            "route_protocol": proto,
            "last_resync_age": round(time.monotonic() - last_resync, 3) if last_resync else None,
            "containers": rows,
        }
        assert self.status_path is not None
        try:
            atomic_write_json(self.status_path, doc, indent=1)  # `status` never reads half a file
        except OSError as exc:
            log.warning("cannot write status file %s: %s", self.status_path, exc)
