"""A VM lab brought up in the background at idle CPU priority, then raised to normal priority when it is needed.

Under software emulation (no KVM here) a first boot is CPU-bound for minutes, while the test
tiers that run before the VM tests leave cores idle much of the time (waiting on BGP timers,
FRR, Docker). `start()` runs `python -m lab up --vms STACK` (image build included, when the
cache has none) under SCHED_IDLE, so it gets only the CPU nothing else wants, and the lowest
best-effort I/O priority (not the idle class, which a busy disk starves outright);
`foreground()` puts every process it started back to normal priority and waits for it to
finish.

Hazards:
- Daemons leave the launcher's process tree (qemu and the lab's daemons start new sessions
  and are reparented). Every process started from the launcher carries MARK in its
  environment, and that is how `foreground()` finds them: qemu, moto, on-prem FRR, the GRE
  daemon.
- SCHED_IDLE is per thread and inherited at fork: each thread (qemu's vCPU and I/O threads)
  is raised, and the scan runs twice, so a process forked during the first pass is caught.
- A starved VM misses its BFD and BGP timers: sessions may drop while the lab waits in the
  background. The caller waits for them again once the lab runs at normal priority.
- While starved, waits inside `lab up` would time out: the launcher gets a long boot timeout
  (OVERLAY_VM_BOOT_TIMEOUT), and the caller bounds the wait after raising the priority.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lab import daemon

MARK = "OVERLAY_LAB_BACKGROUND"
# s: a starved boot may take most of a test session; the foreground wait bounds it.
BACKGROUND_BOOT_TIMEOUT = 7200
_REPO = Path(__file__).resolve().parents[2]


@dataclass
class Launch:
    proc: subprocess.Popen[bytes]
    token: str
    log: Path
    started: float  # time.time()
    claimed: bool = False  # a fixture took it over (and takes it down)


_CURRENT: dict[str, Launch] = {}


def start(stack: str, stacks_dir: Path, log: Path) -> Launch:
    """`python -m lab up --vms STACK` at idle CPU and I/O priority, output to `log`."""
    token = f"{stack}-{os.getpid()}-{time.monotonic_ns()}"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        MARK: token,
        "OVERLAY_VM_BOOT_TIMEOUT": str(BACKGROUND_BOOT_TIMEOUT),
        "OVERLAY_VM_SESSIONS_TIMEOUT": str(BACKGROUND_BOOT_TIMEOUT),
    }
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["chrt", "--idle", "0", "ionice", "-c", "2", "-n", "7", sys.executable, "-m", "lab", "up", "--vms", stack]
            + ["--stacks-dir", str(stacks_dir)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=_REPO,
            env=env,
        )
    launch = Launch(proc, token, log, time.time())
    _CURRENT[stack] = launch
    return launch


def current(stack: str) -> Launch | None:
    return _CURRENT.get(stack)


def raise_priority(token: str) -> int:
    """Every thread of every marked process to SCHED_OTHER and the best-effort I/O class;
    returns how many processes were raised."""
    pids = daemon.matching_pids(f"{MARK}={token}\0".encode(), "environ")
    tids = []
    for pid in pids:
        with contextlib.suppress(OSError):
            tids += [int(task.name) for task in Path(f"/proc/{pid}/task").iterdir()]
    for tid in tids:
        with contextlib.suppress(OSError):  # a thread that has ended meanwhile
            os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
    if tids:
        # ionice per thread: Linux keeps an I/O priority per task.
        subprocess.run(["ionice", "-c", "2", "-n", "4", "-p", *map(str, tids)], capture_output=True, timeout=30)
    return len(pids)


def foreground(launch: Launch, timeout: float) -> tuple[int | None, float]:
    """Raise the launch to normal priority and wait up to `timeout` s for it to end.
    Returns its exit code (None: still running, stopped here) and the seconds waited."""
    t0 = time.monotonic()
    raise_priority(launch.token)
    raise_priority(launch.token)  # a process forked during the first pass
    try:
        rc: int | None = launch.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop(launch)
        rc = None
    return rc, time.monotonic() - t0


def stop(launch: Launch) -> None:
    """SIGTERM to the launcher's process group (`lab up` removes what it built on the way
    out), SIGKILL if it does not end."""
    if launch.proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(launch.proc.pid, signal.SIGTERM)
    try:
        launch.proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(launch.proc.pid, signal.SIGKILL)
        launch.proc.wait(timeout=30)


def tail(launch: Launch, lines: int = 8) -> str:
    with contextlib.suppress(OSError):
        return " / ".join(launch.log.read_text(errors="replace").strip().splitlines()[-lines:])
    return ""
