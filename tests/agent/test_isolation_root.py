"""Hostile containers against the real kernel, dockerd and FRR (review: security.md findings 3, 6, 7).

- a zone-id label is refused and the agent keeps running and wiring other containers;
- a Router Advertisement sent by a container into its veth changes nothing on the host;
- a container's packets with a forged source address, and GRE it originates, are dropped
  at its veth; its real source passes.
Each check has a control that shows the same packet does get through when the protection
is taken away, so the test cannot pass by sending nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from overlay_agent.guard import TABLE
from lab import agentsite_frr as frrconf
from lab.poll import wait_until
from lab import netns as ns

pytestmark = [pytest.mark.root, pytest.mark.docker, pytest.mark.frr]


def _row(agent, name):
    doc = json.loads(agent.status().stdout)
    return next((r for r in doc["containers"] if r["name"] == name), None)


def _routed(agent, name, timeout=20):
    return wait_until(lambda: (r := _row(agent, name)) and r["route"] and r, timeout, what=f"{name} routed")


def _in_container(c, code: str, timeout: float = 10) -> subprocess.CompletedProcess:
    """Run Python in the container's network namespace (root, as a container with NET_RAW/NET_ADMIN could)."""
    c.reload()
    pid = c.attrs["State"]["Pid"]
    r = subprocess.run(
        ["nsenter", "-t", str(pid), "-n", sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout
    )
    assert r.returncode == 0, r.stderr
    return r


def test_zone_id_label_is_refused_and_the_agent_keeps_wiring(site, agent):
    site.run(labels={"overlay.ipv6": "fd00:64::5%eth0"}, name="zoned")
    site.run(labels={"overlay.ipv6": "fd00:64::6%25"}, name="zoned2")
    site.run(labels={"overlay": "auto"}, name="beside")
    for name in ("zoned", "zoned2"):
        r = wait_until(
            lambda name=name: (r := _row(agent, name)) and r["state"] == "error" and r, 20, what=f"{name} refused"
        )
        assert r["reason"] == "bad_label" and "zone id" in r["error"]
    _routed(agent, "beside")
    time.sleep(1.5)  # a pass or two later: the agent still runs, nothing crashed
    assert agent.proc.poll() is None and "Traceback" not in agent.log_text()
    site.run(labels={"overlay": "auto"}, name="later")
    _routed(agent, "later")
    assert "fd00:64::5/128" not in site.host_routes()


RA = """
import socket, struct
idx = socket.if_nametoindex("eth0")
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
s.bind(("fe80::2", 0, 0, idx))
# Router Advertisement: hop limit 64, high preference (0x08), lifetime 1800 s, plus a
# prefix option (L+A) for SLAAC of 2001:db8:77::/64. The kernel fills in the checksum.
ra = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0x08, 1800, 0, 0)
pio = struct.pack("!BBBBIII16s", 3, 4, 64, 0xC0, 86400, 14400, 0, socket.inet_pton(socket.AF_INET6, "2001:db8:77::"))
for _ in range(3):
    s.sendto(ra + pio, ("ff02::1", 0, 0, idx))
"""


def _ra_took_effect(site, veth: str) -> bool:
    routes = ns.run("ip", "-j", "-6", "route", "show", "default", ns=site.host).stdout
    addrs = ns.run("ip", "-j", "-6", "addr", "show", "dev", veth, ns=site.host).stdout
    via_veth = any(
        r.get("dev") == veth or any(h.get("dev") == veth for h in r.get("nexthops", []))
        for r in json.loads(routes or "[]")
    )
    return via_veth or "2001:db8:77:" in addrs


def test_router_advertisement_from_a_container_is_ignored(site, agent):
    c = site.run(labels={"overlay": "auto"}, name="ra")
    _routed(agent, "ra")
    veth = "ovc" + c.id[:12]
    for knob in ("accept_ra", "autoconf"):
        assert ns.run("cat", f"/proc/sys/net/ipv6/conf/{veth}/{knob}", ns=site.host).stdout.strip() == "0"
    # The agent's protections one at a time, then none (the control).
    _in_container(c, RA)
    time.sleep(0.5)
    assert not _ra_took_effect(site, veth)
    agent.stop()  # the wiring stays; nothing re-creates the table during the controls
    ns.run("nft", "delete", "table", "inet", TABLE, ns=site.host)  # accept_ra=0 alone
    _in_container(c, RA)
    time.sleep(0.5)
    assert not _ra_took_effect(site, veth)
    ns.run("sysctl", "-qw", f"net.ipv6.conf.{veth}.accept_ra=2", f"net.ipv6.conf.{veth}.autoconf=1", ns=site.host)
    _in_container(c, RA)
    wait_until(lambda: _ra_took_effect(site, veth), 5, what="the control: an RA accepted without the protections")


SEND = """
import socket, sys
fam, src, dst, port, transparent = {fam!r}, {src!r}, {dst!r}, {port}, {transparent}
s = socket.socket(socket.AF_INET if fam == "4" else socket.AF_INET6, socket.SOCK_DGRAM)
if transparent:  # bind to an address that is not ours, as a raw-socket forger would send it
    if fam == "4":
        s.setsockopt(socket.IPPROTO_IP, 19, 1)  # IP_TRANSPARENT
    else:
        s.setsockopt(socket.IPPROTO_IPV6, 75, 1)  # IPV6_TRANSPARENT
s.bind((src, 0))
for _ in range(3):
    s.sendto(b"from " + src.encode(), (dst, port))
"""

LISTEN = """
import socket, sys, time
fam, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET if fam == "4" else socket.AF_INET6, socket.SOCK_DGRAM)
s.bind(("0.0.0.0" if fam == "4" else "::", port))
s.settimeout(0.2)
got, end = set(), time.monotonic() + float(sys.argv[3])
print("ready", flush=True)
while time.monotonic() < end:
    try:
        data, addr = s.recvfrom(2048)
        got.add(addr[0])
    except OSError:
        pass
print(" ".join(sorted(got)), flush=True)
"""


def _listen_while(site, listener_code: str, args: list[str], send) -> str:
    """What a listener script printed in the router namespace after "ready", while `send()` ran."""
    listener = subprocess.Popen(
        ["ip", "netns", "exec", site.router, sys.executable, "-c", listener_code, *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert listener.stdout.readline().strip() == "ready"
        send()
        out, _ = listener.communicate(timeout=10)
    finally:
        if listener.poll() is None:
            listener.kill()
    return out


def _send_and_listen(site, c, fam: str, dst: str, sources: list[tuple[str, bool]], port: int) -> set[str]:
    """Sources (as the router namespace saw them) of UDP sent from the container with each source."""

    def send() -> None:
        for src, transparent in sources:
            _in_container(c, SEND.format(fam=fam, src=src, dst=dst, port=port, transparent=transparent))

    return set(_listen_while(site, LISTEN, [fam, str(port), "3"], send).split())


def test_forged_sources_are_dropped_at_the_veth_and_the_real_one_passes(site, agent):
    site.run(labels={"overlay": "auto"}, name="victim")
    forger = site.run(labels={"overlay": "auto"}, name="forger")
    v, f = _routed(agent, "victim"), _routed(agent, "forger")
    wait_until(lambda: {f"{f['ipv4']}/32", f"{v['ipv4']}/32"} <= site.router_fib(), 30, what="router routes")
    cases = [
        ("4", frrconf.ROUTER_V4, f["ipv4"], v["ipv4"], 40001),
        ("6", frrconf.ROUTER_V6, f["ipv6"], v["ipv6"], 40002),
    ]
    for fam, dst, real, forged, port in cases:
        seen = _send_and_listen(site, forger, fam, dst, [(real, False), (forged, True)], port)
        assert seen == {real}, (fam, seen)
    # The control: without the agent's table the forged packets do arrive.
    agent.stop()  # the wiring stays; nothing re-creates the table during the control
    ns.run("nft", "delete", "table", "inet", TABLE, ns=site.host)
    for fam, dst, _real, forged, port in cases:
        seen = _send_and_listen(site, forger, fam, dst, [(forged, True)], port + 10)
        assert seen == {forged}, (fam, seen)


GRE_SEND = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 47)
# A GRE header with key 1 (K bit) around an inner IPv4 header: what a forger injects into a tunnel.
s.sendto(bytes([0x20, 0, 0x08, 0, 0, 0, 0, 1]) + bytes([0x45]) + bytes(19), ({dst!r}, 0))
"""

GRE_LISTEN = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 47)
s.settimeout(0.2)
print("ready", flush=True)
n, end = 0, time.monotonic() + 2.5
while time.monotonic() < end:
    try:
        s.recv(2048)
        n += 1
    except OSError:
        pass
print(n, flush=True)
"""


def _gre_seen(site, c) -> int:
    return int(
        _listen_while(site, GRE_LISTEN, [], lambda: _in_container(c, GRE_SEND.format(dst=frrconf.ROUTER_V4))).strip()
    )


def test_gre_from_a_container_is_dropped(site, agent):
    c = site.run(labels={"overlay": "auto"}, name="gre")
    _routed(agent, "gre")
    assert _gre_seen(site, c) == 0
    agent.stop()  # the wiring stays; nothing re-creates the table during the control
    ns.run("nft", "delete", "table", "inet", TABLE, ns=site.host)
    assert _gre_seen(site, c) == 1  # the control: the same packet, without the table, arrives
