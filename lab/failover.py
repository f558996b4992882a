"""VPC-side failover in the lab (routeServer mode): freeze a router as a dead instance, measure what a VPC-native client sees.

Used by tests/lab/test_vpc_failover.py and bench/bench_vpc_failover.py. Every wait is on
a condition (the route server's choice in the VPC namespace's main table, replies seen),
never a fixed sleep.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field

from lab.poll import wait_until
from lab.underlay import LabError, sh

# ping -D -O: "[1733085123.123456] 64 bytes from ...: icmp_seq=12 ttl=62 time=0.2 ms"
_REPLY = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from .*icmp_seq=(\d+)")
INTERVAL = 0.01  # 10 ms, as the issue asks


def vpc_choice(lab, prefix: str) -> str | None:
    """The router the VPC's tables send `prefix` to now (the route server's FIB), or None."""
    fam = "-6" if ":" in prefix else "-4"
    out = sh(lab.topo.vpc_ns, "ip", "-j", fam, "route", "show", "exact", prefix, "table", "main", check=False)
    routes = json.loads(out or "[]")
    if not routes:
        return None
    gw = routes[0].get("gateway")  # the route server takes global IPv6 next hops (prefer-global)
    if gw is None:
        return None
    for inst in lab.topo.instances:
        if str(inst.address) == gw or (inst.address_v6 is not None and str(inst.address_v6) == gw):
            return inst.name
    return gw


def wait_for(predicate, timeout: float, what: str, interval: float = 0.005) -> float:
    """Poll until `predicate()` (lab.poll.wait_until); returns the time it became true (time.time())."""
    wait_until(predicate, timeout, interval, what, error=LabError)
    return time.time()


class Pinger:
    """`ping -i 0.01 -D` from a namespace (or a container's, by `enter`), replies as (seq, wall-clock time)."""

    def __init__(self, ns: str | None, address: str, enter: list[str] | None = None):
        self.replies: dict[int, float] = {}
        prefix = enter if enter is not None else ["ip", "netns", "exec", ns]
        self.proc = subprocess.Popen(
            [*prefix, "ping", "-n", "-D", "-i", str(INTERVAL), "-W", "1", address],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            m = _REPLY.match(line)
            if m:
                with self._lock:
                    self.replies.setdefault(int(m.group(2)), float(m.group(1)))

    def snapshot(self) -> dict[int, float]:
        with self._lock:
            return dict(self.replies)

    def replies_after(self, t: float) -> int:
        return sum(1 for ts in self.snapshot().values() if ts > t)

    def stop(self) -> dict[int, float]:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self._reader.join(timeout=5)
        return self.snapshot()


def namespace_pids(ns: str) -> list[int]:
    return [int(p) for p in sh(None, "ip", "netns", "pids", ns, check=False).split()]


@contextlib.contextmanager
def frozen(ns: str):
    """SIGSTOP every process in the namespace (a dead instance: no BFD, no BGP, no forwarding
    by the userspace GRE daemon); SIGCONT them on the way out, also on failure."""
    pids = namespace_pids(ns)
    if not pids:
        raise LabError(f"no process runs in {ns}")
    stopped = []
    try:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
        yield pids
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def container_enter(lab, host: str, name: str) -> list[str]:
    """Run a command in a container's network namespace (the host's ping binary, by PID)."""
    from lab import demo

    client = demo.docker_client(lab, host)
    try:
        pid = client.containers.get(name).attrs["State"]["Pid"]
    finally:
        client.close()
    return ["nsenter", "-t", str(pid), "-n"]


def _gap(replies: dict[int, float], start: float, end: float) -> float:
    times = sorted(t for t in replies.values() if start <= t <= end)
    return max((b - a for a, b in zip(times, times[1:])), default=float("inf"))


def _lost_after(replies: dict[int, float], t: float) -> list[int]:
    after = sorted(seq for seq, ts in replies.items() if ts > t)
    return [s for s in range(after[0], after[-1] + 1) if s not in replies] if after else []


@dataclass
class FailoverRun:
    router: str  # the router frozen (the preferred one)
    takeover: str
    outage_s: float  # the longest gap between two replies around the freeze
    detect_s: float  # freeze -> the route server's FIB points at the takeover router
    return_s: float  # thaw -> the FIB points at the preferred router again
    lost_after_thaw: list[int] = field(default_factory=list)  # seqs unanswered after the thaw
    # Each lost seq's send time (estimated from the replies around it), seconds after the thaw
    lost_at_s: list[float] = field(default_factory=list)
    # Other traffic classes pinged through the same freeze: label -> (longest gap, lost after thaw)
    others: dict[str, tuple[float, int]] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "router": self.router,
            "takeover": self.takeover,
            "outage_s": round(self.outage_s, 4),
            "detect_s": round(self.detect_s, 4),
            "return_s": round(self.return_s, 4),
            "lost_after_thaw": len(self.lost_after_thaw),
            **({"lost_at_s": self.lost_at_s[:20]} if self.lost_at_s else {}),
            **{f"{k}_gap_s": round(v[0], 4) for k, v in self.others.items()},
            **{f"{k}_lost_after_thaw": v[1] for k, v in self.others.items()},
        }


def run_once(
    lab,
    target: str,
    pool: str,
    *,
    settle_replies: int = 100,
    timeout: float = 30,
    others: dict[str, tuple[list[str] | None, str | None, str]] | None = None,
) -> FailoverRun:
    """Ping `target` from the VPC-native instance, freeze the preferred router, thaw it.

    `others`: label -> (enter prefix or None, namespace or None, address): more pingers run
    through the same freeze (on-prem, host-to-host, egress), each reported by its longest
    gap and its losses after the thaw.
    """
    preferred = vpc_choice(lab, pool)
    if preferred is None:
        raise LabError(f"the VPC has no route for {pool}")
    router_ns = lab.topo.instance(preferred).ns
    native = lab.topo.instance("native").ns
    pinger = Pinger(native, target)
    extra = {label: Pinger(ns, addr, enter) for label, (enter, ns, addr) in (others or {}).items()}
    try:
        for label, p in extra.items():
            wait_for(lambda p=p: len(p.snapshot()) >= settle_replies, timeout, f"{settle_replies} replies ({label})")
        wait_for(lambda: len(pinger.snapshot()) >= settle_replies, timeout, f"{settle_replies} replies from {target}")
        with frozen(router_ns):
            t_freeze = time.time()
            t_switch = wait_for(
                lambda: vpc_choice(lab, pool) not in (preferred, None),
                timeout,
                f"the route server moving {pool} off {preferred}",
            )
            takeover = vpc_choice(lab, pool)
            wait_for(
                lambda: pinger.replies_after(t_switch) >= settle_replies,
                timeout,
                f"replies from {target} through {takeover}",
            )
        t_thaw = time.time()
        t_back = wait_for(
            lambda: vpc_choice(lab, pool) == preferred, 60, f"the route server moving {pool} back to {preferred}"
        )
        wait_for(
            lambda: pinger.replies_after(t_back) >= settle_replies,
            timeout,
            f"replies from {target} through {preferred} again",
        )
    finally:
        replies = pinger.stop()
        extra_replies = {label: p.stop() for label, p in extra.items()}
    # The freeze's cost: the longest gap from before the freeze to the thaw (the replies
    # through the takeover router came back well before it); the return is counted apart.
    outage = _gap(replies, t_freeze - 1, t_thaw)
    # The return's cost: echoes unanswered from the first reply after the thaw to the last.
    lost = _lost_after(replies, t_thaw)
    others_out = {
        label: (_gap(r, t_freeze - 1, t_thaw), len(_lost_after(r, t_thaw))) for label, r in extra_replies.items()
    }
    return FailoverRun(
        preferred,
        takeover or "?",
        outage,
        t_switch - t_freeze,
        t_back - t_thaw,
        lost,
        _sent_at(replies, lost, t_thaw),
        others_out,
    )


def _sent_at(replies: dict[int, float], seqs: list[int], t0: float) -> list[float]:
    """When each (unanswered) seq was sent, seconds after t0: the last answered seq's reply time plus the interval steps."""
    out = []
    for s in seqs:
        before = [q for q in replies if q < s]
        if before:
            prev = max(before)
            out.append(round(replies[prev] + (s - prev) * INTERVAL - t0, 3))
    return out
