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
    gw = routes[0].get("gateway")
    if gw is None:  # IPv6 via the router's link-local address: name it by the device's neighbour
        return None
    for inst in lab.topo.instances:
        if str(inst.address) == gw or (inst.address_v6 is not None and str(inst.address_v6) == gw):
            return inst.name
    return gw


def wait_for(predicate, timeout: float, what: str, interval: float = 0.005) -> float:
    """Poll until `predicate()`; returns the time it became true (time.time())."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.time()
        time.sleep(interval)
    raise LabError(f"{what}: not within {timeout:.0f} s")


class Pinger:
    """`ping -i 0.01 -D` from a namespace, replies collected as (seq, wall-clock time)."""

    def __init__(self, ns: str, address: str):
        self.replies: dict[int, float] = {}
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, "ping", "-n", "-D", "-i", str(INTERVAL),
                                      "-W", "1", address], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, bufsize=1)
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


@dataclass
class FailoverRun:
    router: str  # the router frozen (the preferred one)
    takeover: str
    outage_s: float  # the longest gap between two replies around the freeze
    detect_s: float  # freeze -> the route server's FIB points at the takeover router
    return_s: float  # thaw -> the FIB points at the preferred router again
    lost_after_thaw: list[int] = field(default_factory=list)  # seqs unanswered after the thaw

    def to_json(self) -> dict:
        return {"router": self.router, "takeover": self.takeover, "outage_s": round(self.outage_s, 4),
                "detect_s": round(self.detect_s, 4), "return_s": round(self.return_s, 4),
                "lost_after_thaw": len(self.lost_after_thaw)}


def run_once(lab, target: str, pool: str, *, settle_replies: int = 100, timeout: float = 30) -> FailoverRun:
    """Ping `target` from the VPC-native instance, freeze the preferred router, thaw it."""
    preferred = vpc_choice(lab, pool)
    if preferred is None:
        raise LabError(f"the VPC has no route for {pool}")
    router_ns = lab.topo.instance(preferred).ns
    native = lab.topo.instance("native").ns
    pinger = Pinger(native, target)
    try:
        wait_for(lambda: len(pinger.snapshot()) >= settle_replies, timeout, f"{settle_replies} replies from {target}")
        with frozen(router_ns):
            t_freeze = time.time()
            t_switch = wait_for(lambda: vpc_choice(lab, pool) not in (preferred, None), timeout,
                                f"the route server moving {pool} off {preferred}")
            takeover = vpc_choice(lab, pool)
            wait_for(lambda: pinger.replies_after(t_switch) >= settle_replies, timeout,
                     f"replies from {target} through {takeover}")
        t_thaw = time.time()
        t_back = wait_for(lambda: vpc_choice(lab, pool) == preferred, 60,
                          f"the route server moving {pool} back to {preferred}")
        wait_for(lambda: pinger.replies_after(t_back) >= settle_replies, timeout,
                 f"replies from {target} through {preferred} again")
    finally:
        replies = pinger.stop()
    times = sorted(replies.values())
    around = [t for t in times if t_freeze - 1 <= t <= t_switch + 5]
    outage = max((b - a for a, b in zip(around, around[1:])), default=float("inf"))
    # Every echo sent after the thaw must be answered: from the first reply after the thaw
    # to the last reply, no sequence number is missing.
    after = sorted(seq for seq, ts in replies.items() if ts > t_thaw)
    lost = [s for s in range(after[0], after[-1] + 1) if s not in replies] if after else []
    return FailoverRun(preferred, takeover or "?", outage, t_switch - t_freeze, t_back - t_thaw, lost)
