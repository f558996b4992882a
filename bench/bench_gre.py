"""Userspace GRE throughput: TCP bulk and ping RTT between two namespaces, over the tunnel vs the bare veth (root)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pyroute2 import IPRoute

from overlay_agent.gre.userspace import UserspaceBackend
from overlay_agent.tunnels import PyrouteTunnels, TunnelReconciler, parse_tunnels

SECONDS = 5
# A TCP sink and source in plain Python: the figure is the tunnel's, the endpoints are cheap
# (large writes, the kernel does the segmentation before the TUN).
SINK = """
import socket, sys
s = socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 5001)); s.listen(1); print('ready', flush=True)
c, _ = s.accept(); n = 0
while True:
    b = c.recv(1 << 20)
    if not b: break
    n += len(b)
print(n, flush=True)
"""
SOURCE = """
import socket, sys, time
s = socket.create_connection((sys.argv[1], 5001)); buf = b'x' * (1 << 18)
end = time.monotonic() + float(sys.argv[2]); n = 0; t0 = time.monotonic()
while time.monotonic() < end:
    s.sendall(buf); n += len(buf)
s.shutdown(socket.SHUT_WR); s.recv(1); print(n / (time.monotonic() - t0), flush=True)
"""


def sh(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


def tcp_rate(a: str, b: str, addr: str) -> float:
    sink = subprocess.Popen(
        ["ip", "netns", "exec", b, sys.executable, "-c", SINK, addr], stdout=subprocess.PIPE, text=True
    )
    try:
        assert sink.stdout is not None
        sink.stdout.readline()
        out = sh(sys.executable, "-c", SOURCE, addr, str(SECONDS), ns=a)
        sink.wait(timeout=30)
        return float(out.stdout.strip()) * 8 / 1e6
    finally:
        if sink.poll() is None:
            sink.kill()


def rtt(a: str, addr: str) -> str:
    out = sh("ping", "-c", "50", "-i", "0.01", "-q", addr, ns=a).stdout
    return out.strip().splitlines()[-1].split("=")[1].strip()


def main() -> None:
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cpu(s), kernel {platform.release()}, "
        f"python {platform.python_version()}"
    )
    tag = f"ovtb{os.getpid() % 100000}"
    a, b = f"{tag}-a", f"{tag}-b"
    tmp = Path(tempfile.mkdtemp(prefix="bench-gre-"))
    made: list[str] = []
    try:
        for n in (a, b):
            sh("ip", "netns", "add", n)
            made.append(n)
            sh("ip", "link", "set", "lo", "up", ns=n)
        sh("ip", "link", "add", f"{tag}x", "type", "veth", "peer", "name", f"{tag}y")
        sh("ip", "link", "set", f"{tag}x", "netns", a, "name", "eth0")
        sh("ip", "link", "set", f"{tag}y", "netns", b, "name", "eth0")
        for n, addr in ((a, "10.20.0.1"), (b, "10.20.0.2")):
            sh("ip", "addr", "add", f"{addr}/24", "dev", "eth0", ns=n)
            sh("ip", "link", "set", "eth0", "up", ns=n)
        for n, (loc, rem, i4l, i4r, i6l, i6r) in (
            (a, ("10.20.0.1", "10.20.0.2", "169.254.64.0", "169.254.64.1", "fd00:7e::", "fd00:7e::1")),
            (b, ("10.20.0.2", "10.20.0.1", "169.254.64.1", "169.254.64.0", "fd00:7e::1", "fd00:7e::")),
        ):
            doc = {
                "schema": 1,
                "name": "gre-1",
                "peer": "p",
                "kind": "host",
                "local": loc,
                "remote": rem,
                "key": 1,
                "ttl": 64,
                "mtu": 1472,
                "peer_asn": 65000,
                "inner_ipv4": {"local": i4l, "remote": i4r, "prefixlen": 31},
                "inner_ipv6": {"local": i6l, "remote": i6r, "prefixlen": 127},
            }
            with IPRoute(netns=n) as ipr:
                be = UserspaceBackend(tmp / n, netns=n)
                good, _ = parse_tunnels({"tunnels/p": json.dumps(doc)})
                TunnelReconciler(be, PyrouteTunnels(ipr)).apply(good)
                be.close()
        time.sleep(0.5)
        print(
            f"bare veth    TCP {tcp_rate(a, b, '10.20.0.2'):8.0f} Mbit/s   ping rtt min/avg/max/mdev "
            f"{rtt(a, '10.20.0.2')}"
        )
        print(
            f"gre  IPv4in  TCP {tcp_rate(a, b, '169.254.64.1'):8.0f} Mbit/s   ping rtt min/avg/max/mdev "
            f"{rtt(a, '169.254.64.1')}"
        )
        print(f"gre  IPv6in  TCP {tcp_rate(a, b, 'fd00:7e::1'):8.0f} Mbit/s")
    finally:
        for n in made:
            for pid in sh("ip", "netns", "pids", n, check=False).stdout.split():
                try:
                    os.kill(int(pid), 15)
                except ProcessLookupError:
                    pass
            time.sleep(0.5)
            sh("ip", "netns", "del", n, check=False)


if __name__ == "__main__":
    main()
