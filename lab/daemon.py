"""Long-running lab processes inside a namespace: started detached, logged to the state dir, stopped by pidfile."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from lab.underlay import LabError, ns


def start(ns_name: str, argv: list[str], *, log: Path, pidfile: Path, env: dict | None = None) -> int:
    """Start `argv` in the namespace, in its own session (it outlives the lab command)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns_name, *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    pidfile.write_text(f"{proc.pid}\n")
    return proc.pid


def alive(pidfile: Path) -> bool:
    try:
        pid = int(pidfile.read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    # a zombie still answers kill(0); it is not serving
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            return False
    return True


def stop(pidfile: Path, grace: float = 5.0) -> None:
    """SIGTERM the process group, then SIGKILL; never raises."""
    try:
        pid = int(pidfile.read_text())
    except (OSError, ValueError):
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.05)
        else:
            continue
        break
    pidfile.unlink(missing_ok=True)


def wait_tcp(ns_name: str, host: str, port: int, timeout: float, what: str) -> None:
    """Wait until a TCP port answers inside the namespace (setns for this thread only)."""
    from pyroute2 import netns as pr_netns

    deadline = time.monotonic() + timeout
    while True:
        pr_netns.pushns(ns_name)
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            pass
        finally:
            pr_netns.popns()
        if time.monotonic() > deadline:
            raise LabError(f"{what}: nothing answered on {host}:{port} in namespace {ns_name} after {timeout:.0f} s")
        time.sleep(0.1)


def matching_pids(needle: bytes, file: str = "cmdline") -> list[int]:
    """Every process but this one whose /proc/PID/`file` (cmdline, environ) contains `needle`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if needle in (entry / file).read_bytes():
                    found.append(int(entry.name))
    return found


def kill_matching(mark: str, rounds: int = 3) -> None:
    """SIGKILL every process (but this one) whose command line contains `mark` (a lab path)."""
    for _ in range(rounds):
        found = matching_pids(mark.encode())
        if not found:
            return
        for pid in found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)


def unwind_on_sigterm(exc: Callable[[int], BaseException]) -> None:
    """SIGTERM (a CI timeout, a test session stopping a background `up`) raises `exc(signum)`
    in this process, so clean-up code runs as on ^C instead of the process dying on the spot.
    A forked child (pyroute2's netns helpers are forks, stopped with SIGTERM) inherits the
    handler: unwinding there would run the parent's clean-up from the child's copy of its
    stack, so the child just exits."""
    pid = os.getpid()

    def handler(signum: int, _frame: object) -> None:
        if os.getpid() != pid:
            os._exit(128 + signum)
        raise exc(signum)

    signal.signal(signal.SIGTERM, handler)


__all__ = ["start", "alive", "stop", "wait_tcp", "matching_pids", "kill_matching", "unwind_on_sigterm", "ns"]
