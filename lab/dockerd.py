"""Run a Docker daemon (Debian's docker.io) inside a network namespace, with its own directories, and always clean up.

Why it is started this way:
- `nsenter --net=/run/netns/NAME`, not `ip netns exec`: the latter remounts /sys in a new
  mount namespace, which hides the cgroup v1 mounts under /sys/fs/cgroup and dockerd then
  fails with "Devices cgroup isn't mounted".
- inside `unshare --mount --propagation private`: containerd's bundle rootfs mounts and
  Docker's netns bind mounts stay in a private mount namespace that disappears with the
  daemon, so nothing leaks into the machine's mount table even after a crash.
- `--iptables=false --ip6tables=false --bridge=none --storage-driver=vfs`: no NAT rules,
  no docker0, and a storage driver that works on any filesystem; containers run with
  `--network none` and the agent adds their veth.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import docker
import docker.errors
import requests.exceptions

from lab.daemon import kill_matching


class DockerdError(RuntimeError):
    """dockerd did not come up; the message carries the end of its log."""


class Dockerd:
    """One dockerd in `netns`; `url` is its unix socket for the docker SDK / CLI (`-H`)."""

    def __init__(self, netns: str | None, workdir: str | Path | None = None, live_restore: bool = False):
        self.netns = netns
        self._own_dir = workdir is None
        self.dir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="ovt-dockerd-"))
        self.live_restore = live_restore
        self.proc: subprocess.Popen | None = None
        self.sock = self.dir / "docker.sock"
        self.url = f"unix://{self.sock}"

    @property
    def data_root(self) -> Path:
        return self.dir / "data"

    @property
    def exec_root(self) -> Path:
        # containerd's socket path lives under exec-root and must stay under 108 bytes.
        return self.dir / "x"

    def command(self) -> list[str]:
        ns = ["nsenter", f"--net=/run/netns/{self.netns}"] if self.netns else []
        cmd = (
            ["unshare", "--mount", "--propagation", "private"]
            + ns
            + [
                "dockerd",
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                "--storage-driver=vfs",
                "--data-root",
                str(self.data_root),
                "--exec-root",
                str(self.exec_root),
                "--pidfile",
                str(self.dir / "dockerd.pid"),
                "-H",
                self.url,
                "--userland-proxy=false",
                "--shutdown-timeout",
                "2",
            ]
        )
        if self.live_restore:
            cmd.append("--live-restore")
        return cmd

    def start(self, timeout: float = 30.0) -> "Dockerd":
        """Start dockerd and wait until it answers a ping; clean up and raise DockerdError otherwise."""
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            self._start(timeout)
        except BaseException:
            self.stop(keep_dir=not self._own_dir)
            raise
        return self

    def _start(self, timeout: float) -> None:
        with open(self.dir / "dockerd.log", "ab") as log:
            self.proc = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                raise DockerdError(f"dockerd exited with {code}: {self.log_tail()}")
            if self.sock.exists():
                c = self.client(timeout=5)
                try:
                    c.ping()
                    return
                except (docker.errors.DockerException, requests.exceptions.RequestException):
                    pass
                finally:
                    c.close()
            time.sleep(0.1)
        raise DockerdError(f"dockerd did not answer within {timeout}s: {self.log_tail()}")

    def client(self, timeout: float = 60) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.url, timeout=timeout, version="1.41")

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = (self.dir / "dockerd.log").read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])

    def remove_all_containers(self) -> None:
        """Force-remove every container (kills them at once; faster than dockerd's shutdown)."""
        try:
            c = self.client()
        except (docker.errors.DockerException, requests.exceptions.RequestException):
            return
        try:
            for ctr in c.containers.list(all=True, sparse=True):
                try:
                    ctr.remove(force=True)
                except docker.errors.NotFound:
                    pass
        except (docker.errors.DockerException, requests.exceptions.RequestException):
            pass
        finally:
            c.close()

    def stop(self, remove_containers: bool = True, keep_dir: bool = False) -> None:
        """Stop dockerd, its containerd and shims; never raises.

        `remove_containers=False, keep_dir=True` leaves the containers running when the daemon
        runs with live-restore, for a daemon-restart test (`start()` again afterwards).
        """
        if remove_containers and self.proc is not None and self.proc.poll() is None:
            self.remove_all_containers()
        if self.proc is not None and self.proc.poll() is None:
            try:
                # Only dockerd: it stops its own containerd (and, without live-restore, the
                # containers) the way a `systemctl restart docker` does.
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout=30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        if self.proc is not None:
            self._kill_group(self.proc.pid)
        if not (keep_dir and not remove_containers):
            # Leftovers (containerd, shims, container processes) named after our directory.
            self._kill_leftovers()
        self.proc = None
        if not keep_dir and self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL dockerd only (a daemon crash); containerd and the containers live on."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    @staticmethod
    def _kill_group(pgid: int) -> None:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def _kill_leftovers(self) -> None:
        # containerd and its shims name the exec-root in their command lines. Not the whole
        # work directory: clients (the agent under test) name our socket in theirs.
        kill_matching(str(self.exec_root) + "/")

    def __enter__(self) -> "Dockerd":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
