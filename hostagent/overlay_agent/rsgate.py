"""Route-server gate: a router attracts the VPC's pool traffic only once it can deliver it.

In routeServer mode (docs/vpc-failover.md) a router announces the pools to VPC Route
Server, which installs ONE best path in every route table. FRR originates a pool's
aggregate as soon as ONE host route contributes to it, so a router coming back (rebooted,
bgpd restarted, or stalled and resumed) would win the tables back with its planned MED
while only some of its hosts' sessions are up: traffic for the other hosts' containers
then hits the aggregate's blackhole until their sessions return. The gate decides which
announcement the router makes: the rendered default is the held one (RS-HOLD-OUT, worse
than any router's planned announcement); the agent swaps in the planned one (RS-OUT) once
the gate opens, through the same frr-reload path as any change (frr.fill_route_server).

Hazards:
- "Back" means every planned host's session (its tunnel's inner IPv4 and IPv6 addresses,
  from the tunnels/<host> parameters) is Established and has sent its routes: prefixes
  received, or up for SETTLE seconds (a host without containers sends none).
- One dead host must not hold a router forever: a planned session not ready for
  HOLD_TIMEOUT seconds is excused until it comes back (it is then missing behind every
  router alike, so holding gains nothing).
- Stale state after a stall (instance paused, every process stopped and resumed): bgpd
  still lists sessions its peers dropped long ago until BFD tells it, and it runs with the
  planned route-maps in place. The agent's loop sees that it woke up late (`stalled()`),
  closes the gate at once and keeps it closed for SETTLE seconds, by which time BFD has
  taken the dead sessions down; then the usual condition applies.
- bgpd unreachable (restarting): not ready; the rendered (held) text is what it starts with.
- Closing the gate while preferred moves the tables to the next router, which has the
  hosts this one lost (a host lost behind every router closes every gate: held routers
  keep their planned order, so the tables stay where they are).

Pure: no I/O. The pairing sync feeds it FRR's session list and the planned peers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from .frr import Session
from .tunnels import Tunnel

# Seconds a planned host session may stay down before it no longer holds the router.
HOLD_TIMEOUT = 60.0
# Seconds an Established session without prefixes must have been up to count as back; and
# how long the gate stays closed after a stall (longer than any BFD detection time).
SETTLE = 3.0
ESTABLISHED = "Established"


@dataclass
class RouteServerGate:
    hold_timeout: float = HOLD_TIMEOUT
    settle: float = SETTLE
    preferred: bool = False
    reason: str = "starting: hosts not seen yet"
    # planned peer address -> monotonic time it was first seen not ready (absent when ready)
    down_since: dict[str, float] = field(default_factory=dict)
    stalled_until: float = 0.0
    changes: int = 0

    def stalled(self, now: float, seconds: float) -> None:
        """The agent's loop woke `seconds` late: every session may be stale; close the gate for SETTLE."""
        self.stalled_until = now + self.settle
        self.down_since.clear()
        self._set(False, f"stalled {seconds:.1f} s: waiting {self.settle:.0f} s for BFD to judge the sessions", now)

    def evaluate(self, now: float, planned: Iterable[str], sessions: list[Session] | None) -> bool:
        """Open (True) when every planned host session is back or excused; returns the new state."""
        peers = sorted(set(planned))
        if now < self.stalled_until:
            return self.preferred
        if sessions is None:
            for p in peers:
                self.down_since.setdefault(p, now)
            return self._set(False, "FRR's sessions unreadable", now)
        by_peer = {s.peer: s for s in sessions}
        waiting: list[str] = []
        excused: list[str] = []
        for p in peers:
            if _ready(by_peer.get(p), self.settle):
                self.down_since.pop(p, None)
                continue
            since = self.down_since.setdefault(p, now)
            (excused if now - since >= self.hold_timeout else waiting).append(p)
        for gone in set(self.down_since) - set(peers):
            del self.down_since[gone]
        if waiting:
            return self._set(False, f"waiting for {len(waiting)} host session(s): {', '.join(waiting[:4])}", now)
        if excused:
            return self._set(
                True, f"{len(excused)} host session(s) down > {self.hold_timeout:.0f} s, not waited for", now
            )
        return self._set(True, f"all {len(peers)} host session(s) up", now)

    def _set(self, preferred: bool, reason: str, now: float) -> bool:
        if preferred != self.preferred:
            self.changes += 1
        self.preferred, self.reason = preferred, reason
        return preferred


def _ready(s: Session | None, settle: float) -> bool:
    if s is None or s.state != ESTABLISHED:
        return False
    return bool(s.prefixes_in) or (s.uptime_ms or 0) >= settle * 1000


def planned_peers(tunnels: Iterable[Tunnel]) -> set[str]:
    """The BGP peer addresses of a router's hosts: each host tunnel's remote inner IPv4 and IPv6."""
    out: set[str] = set()
    for t in tunnels:
        if t.kind == "host":
            out.add(str(t.remote4))
            if t.remote6 is not None:
                out.add(str(t.remote6))
    return out
