"""Run one FRR instance (zebra + bgpd, optionally staticd/bfdd) inside a network namespace, with its own files.

Every instance gets a private work directory holding its config, pid files, logs, the
zserv socket and the vty sockets (`--vty_socket`), so any number of instances run side by
side on one machine without FRR pathspaces or /etc/frr. FRR 8.4 (Debian 12) verified:

- daemons start with `-f /dev/null` and `-P 0` (no vty TCP port); the configuration is then
  pushed with `vtysh --vty_socket DIR -f FILE`, which dispatches every line to the daemon
  that knows it (the integrated-config way, as `vtysh -b` does at boot);
- `vtysh -C -f FILE` is the syntax check (bgpd -C exits 0 whatever the file says);
- daemons run as user frr, so the work directory belongs to frr.

Usage:

    with FRR("ovt123-0-host", "host") as frr:
        frr.start(config_text)
        frr.wait(lambda: frr.bgp_established() == 2)
        print(frr.vtysh("show ip route"))
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable

from lab.poll import wait_until

FRR_BIN = Path("/usr/lib/frr")
VTYSH = shutil.which("vtysh") or "/usr/bin/vtysh"
DAEMONS = ("zebra", "bgpd")


class FRRError(RuntimeError):
    """An FRR daemon would not start, or vtysh failed; the message names the instance and command."""


def available() -> bool:
    """True when zebra, bgpd and vtysh are installed."""
    return all((FRR_BIN / d).exists() for d in DAEMONS) and Path(VTYSH).exists()


class FRR:
    """One FRR instance in `netns` (None: the current namespace)."""

    def __init__(
        self, netns: str | None, name: str, daemons: Iterable[str] = DAEMONS, workdir: str | Path | None = None
    ):
        self.netns = netns
        self.name = name
        self.daemons = tuple(daemons)
        if "zebra" not in self.daemons:
            raise ValueError("zebra is required")
        self._own_dir = workdir is None
        self.dir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix=f"frr-{name}-"))
        self.procs: dict[str, subprocess.Popen] = {}
        self.config_path = self.dir / "frr.conf"

    # -- paths ---------------------------------------------------------------------------
    @property
    def vty_dir(self) -> Path:
        return self.dir / "run"

    @property
    def zserv(self) -> Path:
        return self.vty_dir / "zserv.api"

    def log_path(self, daemon: str) -> Path:
        return self.dir / f"{daemon}.log"

    def _prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.netns] if self.netns else []

    # -- lifecycle -----------------------------------------------------------------------
    def start(self, config_text: str, timeout: float = 15.0) -> None:
        """Start the daemons, wait for their vty sockets, push `config_text`. Cleans up on failure."""
        uid, gid = pwd.getpwnam("frr").pw_uid, grp.getgrnam("frr").gr_gid
        self.vty_dir.mkdir(parents=True, exist_ok=True)
        for path in (self.dir, self.vty_dir):
            os.chown(path, uid, gid)
        self.config_path.write_text(config_text)
        try:
            for daemon in self.daemons:
                # A socket left by an earlier run would make _wait_socket return at once.
                for stale in (self.vty_dir / f"{daemon}.vty", self.vty_dir / f"{daemon}.pid"):
                    stale.unlink(missing_ok=True)
                if daemon == "zebra":
                    self.zserv.unlink(missing_ok=True)
                cmd = self._prefix() + [
                    str(FRR_BIN / daemon),
                    "-f",
                    "/dev/null",  # config comes from vtysh below
                    "-i",
                    str(self.vty_dir / f"{daemon}.pid"),
                    "-z",
                    str(self.zserv),
                    "--vty_socket",
                    str(self.vty_dir),
                    "-P",
                    "0",
                    "--log",
                    f"file:{self.log_path(daemon)}",
                    "--limit-fds",
                    "4096",  # zebra sizes tables by RLIMIT_NOFILE; keep it small
                ]
                if daemon == "bgpd":
                    cmd += ["-p", "179"]
                if daemon == "bfdd":
                    # Its control socket defaults to /var/run/frr/bfdd.sock, shared by every
                    # instance on the machine; each instance gets its own.
                    cmd += ["--bfdctl", str(self.vty_dir / "bfdd.sock")]
                self.procs[daemon] = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=open(self.dir / f"{daemon}.stderr", "wb"),
                    start_new_session=True,
                )
                # bgpd connects to zebra's zserv socket; starting it first only costs retries.
                self._wait_socket(daemon, timeout)
            self.apply(config_text)
        except BaseException:
            self.stop()
            raise

    def _wait_socket(self, daemon: str, timeout: float) -> None:
        sock = self.vty_dir / f"{daemon}.vty"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.procs[daemon]
            if proc.poll() is not None:
                raise FRRError(f"frr {self.name}: {daemon} exited with {proc.returncode}: {self._tail(daemon)}")
            if sock.exists():
                return
            time.sleep(0.05)
        raise FRRError(f"frr {self.name}: {daemon} vty socket {sock} did not appear within {timeout}s")

    def _tail(self, daemon: str) -> str:
        text = ""
        for path in (self.dir / f"{daemon}.stderr", self.log_path(daemon)):
            try:
                text += path.read_text(errors="replace")
            except OSError:
                pass
        return " | ".join(text.strip().splitlines()[-5:])

    def check(self, config_text: str) -> None:
        """Syntax-check a configuration with `vtysh -C -f` (non-zero exit on unknown commands)."""
        with tempfile.NamedTemporaryFile("w", suffix=".conf", dir=self.dir, delete=False) as fh:
            fh.write(config_text)
        try:
            out = subprocess.run(
                [VTYSH, "--vty_socket", str(self.vty_dir), "-C", "-f", fh.name],
                capture_output=True,
                text=True,
                timeout=30,
            )
            if out.returncode != 0:
                raise FRRError(f"frr {self.name}: config check failed: {(out.stdout + out.stderr).strip()}")
        finally:
            os.unlink(fh.name)

    def apply(self, config_text: str) -> None:
        """Push configuration lines into the running daemons (additive, like typing them in)."""
        path = self.dir / "apply.conf"
        path.write_text(config_text)
        out = subprocess.run(
            self._prefix() + [VTYSH, "--vty_socket", str(self.vty_dir), "-f", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if out.returncode != 0:
            raise FRRError(
                f"frr {self.name}: applying config failed ({out.returncode}): "
                f"{(out.stdout + out.stderr).strip()[-800:]}"
            )

    def stop(self) -> None:
        """Stop every daemon (TERM, then KILL) and remove the work directory; never raises."""
        for daemon in reversed(list(self.procs)):
            proc = self.procs[daemon]
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for proc in self.procs.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=5)
        self.procs.clear()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def restart(self, daemons: Iterable[str] | None = None) -> None:
        """Kill and restart the daemons with the last configuration (an FRR restart)."""
        config = self.config_path.read_text()
        for daemon in list(self.procs):
            proc = self.procs.pop(daemon)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=10)
        self.start(config)

    def running(self) -> bool:
        return bool(self.procs) and all(p.poll() is None for p in self.procs.values())

    def __enter__(self) -> "FRR":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- queries -------------------------------------------------------------------------
    def vtysh(self, *commands: str, timeout: float = 30) -> str:
        """Run show (or other) commands through vtysh; raise FRRError on failure."""
        cmd = [VTYSH, "--vty_socket", str(self.vty_dir)]
        for c in commands:
            cmd += ["-c", c]
        out = subprocess.run(self._prefix() + cmd, capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0:
            raise FRRError(
                f"frr {self.name}: vtysh {' / '.join(commands)} failed ({out.returncode}): "
                f"{(out.stdout + out.stderr).strip()[-400:]}"
            )
        return out.stdout

    def vtysh_json(self, command: str) -> dict:
        text = self.vtysh(command)
        try:
            return json.loads(text or "{}")
        except json.JSONDecodeError as exc:
            raise FRRError(f"frr {self.name}: {command!r} did not return JSON: {text[:200]!r}") from exc

    def bgp_summary(self) -> dict:
        """`show bgp summary json`: {"ipv4Unicast": {"peers": {...}}, "ipv6Unicast": ...}."""
        return self.vtysh_json("show bgp summary json")

    def bgp_established(self) -> int:
        """Number of distinct BGP neighbors in state Established (over all address families)."""
        peers: set[str] = set()
        for afi in self.bgp_summary().values():
            for peer, info in (afi.get("peers") or {}).items():
                if info.get("state") == "Established":
                    peers.add(peer)
        return len(peers)

    def routes(self, family: int = 4) -> dict:
        """`show ip route json` (or `show ipv6 route json`): prefix -> list of route entries."""
        return self.vtysh_json("show ip route json" if family == 4 else "show ipv6 route json")

    def bgp_routes(self, family: int = 4) -> dict:
        """The BGP table: prefix -> paths (`show bgp ipv4|ipv6 unicast json` 'routes')."""
        doc = self.vtysh_json(f"show bgp ipv{family} unicast json")
        return doc.get("routes") or {}

    def has_route(self, prefix: str, protocol: str | None = None) -> bool:
        """True when zebra has `prefix` selected (optionally from `protocol`, e.g. "bgp")."""
        table = self.routes(6 if ":" in prefix else 4)
        for entry in table.get(prefix, []):
            if entry.get("selected") and (protocol is None or entry.get("protocol") == protocol):
                return True
        return False

    def wait(
        self, predicate: Callable[[], bool], timeout: float = 30.0, interval: float = 0.1, what: str = "condition"
    ) -> None:
        """Poll `predicate` until true (an FRR not answering yet counts as false); raise
        FRRError naming `what` on timeout."""
        wait_until(
            predicate,
            timeout,
            interval,
            what,
            error=lambda msg: FRRError(f"frr {self.name}: {msg}"),
            ignore=(FRRError,),
        )
