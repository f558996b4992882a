"""A docker host for the agent tests and benchmarks: host and router namespaces, FRR in both, dockerd, the agent.

    host namespace  (dockerd, FRR, overlay-agent)  uplink 169.254.64.9/31  fd00:7e::9/127
        |  veth
    router namespace (FRR)                          169.254.64.8/31        fd00:7e::8/127

Everything made here is removed by stop(), which never raises and is safe to call twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from lab import image as image_mod
from lab.dockerd import Dockerd
from lab.frr import FRR
from lab.poll import wait_until
from lab import agentsite_frr as frrconf
from lab import netns as ns

if TYPE_CHECKING:
    import docker

REPO = Path(__file__).resolve().parents[1]
AGENT = [sys.executable, "-m", "overlay_agent.cli"]
BLOCK4, BLOCK6 = "100.64.0.0/26", "fd00:64::/112"
POOLS4, POOLS6 = ["100.64.0.0/16"], ["fd00:64::/48"]
# The shared ranges beside the block: 100.64.1.0-100.64.63.255 and fd00:64::1:0-fd00:64::3f:ffff,
# where the tests' and benchmarks' explicit labels live (a host may announce only these and its block).
SHARED4 = ["100.64.1.0/24", "100.64.2.0/23", "100.64.4.0/22", "100.64.8.0/21", "100.64.16.0/20", "100.64.32.0/19"]
SHARED6 = [
    "fd00:64::1:0/112",
    "fd00:64::2:0/111",
    "fd00:64::4:0/110",
    "fd00:64::8:0/109",
    "fd00:64::10:0/108",
    "fd00:64::20:0/107",
]


def agent_doc(resync_interval: float = 30) -> dict:
    return {
        "schema": 1,
        "project": "overlay",
        "stack": "test",
        "instance": "host-1",
        "role": "host",
        "asn": frrconf.HOST_ASN,
        "underlay": {"address": "10.20.0.10"},
        "blocks": {"ipv4": BLOCK4, "ipv6": BLOCK6},
        "pools": {"ipv4": POOLS4, "ipv6": POOLS6},
        "shared": {"ipv4": SHARED4, "ipv6": SHARED6},
        "settings": {
            "route_protocol": 149,
            "route_protocol_name": "overlay",
            "poll_interval": 15,
            "resync_interval": resync_interval,
        },
    }


class Agent:
    """`overlay-agent run` as a process in the host namespace."""

    def __init__(self, site: "Site", extra: tuple[str, ...] = ()):
        self.site = site
        self.extra = tuple(extra)  # further `overlay-agent run` options (e.g. --no-guard)
        self.proc: subprocess.Popen | None = None
        self.log_path = site.dir / "agent.log"
        self.status_file = site.dir / "status.json"

    def start(self) -> "Agent":
        s = self.site
        env = dict(os.environ, PYTHONPATH=str(REPO / "hostagent"))
        cmd = (
            ["ip", "netns", "exec", s.host]
            + AGENT
            + [
                "run",
                "--config",
                str(s.config_path),
                "--docker-url",
                s.dockerd.url,
                "--status-file",
                str(self.status_file),
                "--metrics-address",
                "127.0.0.1:9469",
                *self.extra,
            ]
        )
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log, env=env, start_new_session=True)
        return self

    def wait_ready(self, since: float | None = None, timeout: float = 20) -> dict:
        """Wait for a status file written after `since` (default: now) by this agent."""
        since = time.time() if since is None else since

        def fresh():
            assert self.proc is not None and self.proc.poll() is None, f"agent died: {self.log_text()[-2000:]}"
            try:
                doc = json.loads(self.status_file.read_text())
            except (OSError, ValueError):
                return None
            return doc if doc.get("generated", 0) >= since else None

        return wait_until(fresh, timeout, what="agent status file")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_records(self) -> list[dict]:
        out = []
        for line in self.log_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def status(self, json_out: bool = True) -> subprocess.CompletedProcess:
        s = self.site
        env = dict(os.environ, PYTHONPATH=str(REPO / "hostagent"))
        cmd = ["ip", "netns", "exec", s.host] + AGENT + ["status", "--status-file", str(self.status_file)]
        if s.frr_host is not None:
            cmd += ["--vty-socket", str(s.frr_host.vty_dir)]
        if json_out:
            cmd.append("--json")
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=30)

    def metrics(self) -> str:
        code = "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:9469/metrics').read().decode())"
        return ns.run(sys.executable, "-c", code, ns=self.site.host).stdout

    def rss_kb(self) -> int:
        """Resident memory of the agent's Python process (the child of `ip netns exec`)."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0


class Site:
    def __init__(self, with_frr: bool = True, resync_interval: float = 30):
        self.with_frr = with_frr
        self.resync_interval = resync_interval
        self.dir = Path(tempfile.mkdtemp(prefix="ovt-site-"))
        self.host = ns.unique_name("host")
        self.router = ns.unique_name("rtr")
        self.made: list[str] = []
        self.frr_host: FRR | None = None
        self.frr_router: FRR | None = None
        self.dockerd: Dockerd | None = None
        self.docker: docker.DockerClient | None = None
        self.image = ""
        self.config_path = self.dir / "agent.json"
        self.agents: list[Agent] = []

    def start(self) -> "Site":
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        for name in (self.host, self.router):
            ns.create(name)
            self.made.append(name)
        ns.veth(self.host, "uplink", self.router, "down0")
        h, r = self.host, self.router
        ns.run("ip", "addr", "add", f"{frrconf.HOST_V4}/31", "dev", "uplink", ns=h)
        ns.run("ip", "addr", "add", f"{frrconf.HOST_V6}/127", "dev", "uplink", "nodad", ns=h)
        ns.run("ip", "addr", "add", f"{frrconf.ROUTER_V4}/31", "dev", "down0", ns=r)
        ns.run("ip", "addr", "add", f"{frrconf.ROUTER_V6}/127", "dev", "down0", "nodad", ns=r)
        for name in (h, r):
            ns.run("sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1", ns=name)
        # The host's default route points at the router, as on EC2 (where it points at the
        # VPC router). Proxy ARP for 169.254.1.1 needs a route to it that is not the veth.
        ns.run("ip", "route", "add", "default", "via", frrconf.ROUTER_V4, ns=h)
        ns.run("ip", "-6", "route", "add", "default", "via", frrconf.ROUTER_V6, ns=h)
        self.config_path.write_text(json.dumps(agent_doc(self.resync_interval)))
        if self.with_frr:
            self.frr_host = FRR(h, "host")
            self.frr_host.start(frrconf.host_config(POOLS4, POOLS6))
            self.frr_router = FRR(r, "router")
            self.frr_router.start(frrconf.router_config())
        self.dockerd = Dockerd(h, workdir=self.dir / "docker")
        self.dockerd.start()
        self.docker = self.dockerd.client()
        self.image = image_mod.ensure(self.docker)
        if self.with_frr:
            assert self.frr_router is not None
            self.frr_router.wait(lambda: self.frr_router.bgp_established() == 2, 60, what="both BGP sessions")

    def stop(self) -> None:
        for agent in self.agents:
            agent.stop()
        if self.docker is not None:
            try:
                self.docker.close()
            except Exception:  # noqa: BLE001 - teardown must go on
                pass
        if self.dockerd is not None:
            self.dockerd.stop()
        for frr in (self.frr_host, self.frr_router):
            if frr is not None:
                frr.stop()
        for name in reversed(self.made):
            ns.destroy(name)
        self.made.clear()
        subprocess.run(["rm", "-rf", str(self.dir)], check=False)

    # -- helpers -------------------------------------------------------------------------
    def agent(self, *extra: str) -> Agent:
        a = Agent(self, extra)
        self.agents.append(a)
        return a

    def run(self, *cmd: str, labels: dict | None = None, name: str | None = None, **kw):
        """Start a container of the test image with --network none (HTTP on port 80 by default)."""
        return self.docker.containers.run(
            self.image,
            list(cmd) or image_mod.HTTPD,
            labels=labels or {},
            name=name,
            network_mode=kw.pop("network_mode", "none"),
            detach=True,
            **kw,
        )

    def remove_all(self) -> None:
        for c in self.docker.containers.list(all=True, sparse=True):
            try:
                c.remove(force=True)
            except Exception:  # noqa: BLE001 - already gone
                pass

    def host_routes(self, families: tuple[str, ...] = ("-4", "-6")) -> dict[str, str]:
        """Our routes (protocol 149) in the host's kernel: prefix -> dev."""
        out = {}
        for fam in families:
            text = ns.run("ip", "-j", fam, "route", "show", "proto", "149", ns=self.host).stdout
            for r in json.loads(text or "[]"):
                dst = r["dst"] if "/" in r["dst"] else r["dst"] + ("/128" if ":" in r["dst"] else "/32")
                out[dst] = r.get("dev", "multipath")
        return out

    def host_links(self) -> list[str]:
        text = ns.run("ip", "-j", "link", "show", ns=self.host).stdout
        return [link["ifname"] for link in json.loads(text)]

    def router_fib(self) -> set[str]:
        """Prefixes the router's kernel got from BGP (zebra installs them with proto bgp)."""
        found = set()
        for fam in ("-4", "-6"):
            text = ns.run("ip", "-j", fam, "route", "show", "proto", "bgp", ns=self.router).stdout
            for r in json.loads(text or "[]"):
                found.add(r["dst"] if "/" in r["dst"] else r["dst"] + ("/128" if ":" in r["dst"] else "/32"))
        return found

    def fetch(self, addr: str, timeout: int = 5) -> str:
        """HTTP GET from the router namespace to a container address; "" on failure."""
        host = f"[{addr}]" if ":" in addr else addr
        code = (
            "import sys, urllib.request\n"
            f"sys.stdout.write(urllib.request.urlopen('http://{host}/', timeout={timeout}).read().decode())"
        )
        out = ns.run(sys.executable, "-c", code, ns=self.router, check=False, timeout=timeout + 10)
        return out.stdout
