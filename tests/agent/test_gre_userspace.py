"""Userspace GRE between two namespaces: real GRE on the wire, IPv4 and IPv6 inside, changes, crash and clean stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
from pyroute2 import IPRoute

from overlay_agent.gre.userspace import UserspaceBackend
from overlay_agent.tunnels import PyrouteTunnels, TunnelReconciler, parse_tunnels
from lab import netns as nsup

pytestmark = pytest.mark.root

A_ADDR, B_ADDR = "10.20.0.1", "10.20.0.2"


def tunnel(name, key, local, remote, in_local, in_remote, v6_local, v6_remote, mtu=1400):
    return json.dumps(
        {
            "schema": 1,
            "name": name,
            "peer": "p",
            "kind": "host",
            "local": local,
            "remote": remote,
            "key": key,
            "ttl": 64,
            "mtu": mtu,
            "inner_ipv4": {"local": in_local, "remote": in_remote, "prefixlen": 31},
            "inner_ipv6": {"local": v6_local, "remote": v6_remote, "prefixlen": 127},
            "peer_asn": 65000,
        }
    )


def side_a(key=5, name="gre-5", o4=0):
    return tunnel(
        name,
        key,
        A_ADDR,
        B_ADDR,
        f"169.254.64.{o4}",
        f"169.254.64.{o4 + 1}",
        f"fd00:7e::{o4:x}",
        f"fd00:7e::{o4 + 1:x}",
    )


def side_b(key=5, name="gre-5", o4=0):
    return tunnel(
        name,
        key,
        B_ADDR,
        A_ADDR,
        f"169.254.64.{o4 + 1}",
        f"169.254.64.{o4}",
        f"fd00:7e::{o4 + 1:x}",
        f"fd00:7e::{o4:x}",
    )


class Side:
    def __init__(self, ns, state_dir):
        self.ns = ns
        self.ipr = IPRoute(netns=ns)
        self.backend = UserspaceBackend(state_dir, netns=ns)
        self.rec = TunnelReconciler(self.backend, PyrouteTunnels(self.ipr), proto=149)

    def apply(self, **raw):
        good, errors = parse_tunnels({f"tunnels/{k}": v for k, v in raw.items()})
        return self.rec.apply(good, errors)

    def links(self):
        return {link.get("ifname") for link in self.ipr.get_links()}

    def close(self):
        self.backend.close()
        self.ipr.close()


@pytest.fixture
def pair(netns_factory, tmp_path):
    a, b = netns_factory("ga"), netns_factory("gb")
    nsup.veth(a, "eth0", b, "eth0")
    nsup.run("ip", "addr", "add", f"{A_ADDR}/24", "dev", "eth0", ns=a)
    nsup.run("ip", "addr", "add", f"{B_ADDR}/24", "dev", "eth0", ns=b)
    sa, sb = Side(a, tmp_path / "a"), Side(b, tmp_path / "b")
    try:
        yield sa, sb
    finally:
        sa.close()
        sb.close()


def ping(ns, addr, count=2):
    fam = "-6" if ":" in addr else "-4"
    return nsup.run("ping", fam, "-c", str(count), "-i", "0.2", "-W", "2", addr, ns=ns, check=False)


def daemon_pid(side):
    return side.backend.request({"op": "list"})["pid"]


def test_ipv4_and_ipv6_over_real_gre_on_the_wire(pair):
    a, b = pair
    ra = a.apply(peer=side_a())
    rb = b.apply(peer=side_b())
    assert ra.backend == "userspace" and [t.state for t in ra.tunnels] == ["up"]
    assert [t.state for t in rb.tunnels] == ["up"]
    cap = subprocess.Popen(
        ["ip", "netns", "exec", a.ns, "tcpdump", "-l", "-n", "-v", "-i", "eth0", "-c", "4", "ip proto 47"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in cap.stderr:  # tcpdump says "listening on" once its filter is attached
            if "listening on" in line:
                break
        assert ping(a.ns, "169.254.64.1").returncode == 0
        assert ping(a.ns, "fd00:7e::1").returncode == 0
        out, _ = cap.communicate(timeout=10)
    finally:
        if cap.poll() is None:
            cap.kill()
            cap.wait()
    # tcpdump decodes the outer IPv4, the GRE header with its key, and the inner packet.
    assert f"{A_ADDR} > {B_ADDR}: GREv0, Flags [key present], key=0x5" in out, out
    assert "169.254.64.0 > 169.254.64.1: ICMP echo request" in out or "fd00:7e:: > fd00:7e::1" in out, out
    counters = a.backend.counters()
    assert counters["gre-5"].tx_packets >= 2 and counters["gre-5"].rx_packets >= 2


def test_tunnels_added_and_removed_while_running(pair):
    a, b = pair
    a.apply(peer=side_a())
    b.apply(peer=side_b())
    pid = daemon_pid(a)
    a.apply(peer=side_a(), other=side_a(key=9, name="gre-9", o4=8))
    b.apply(peer=side_b(), other=side_b(key=9, name="gre-9", o4=8))
    assert ping(a.ns, "169.254.64.9").returncode == 0
    assert ping(a.ns, "169.254.64.1").returncode == 0
    a.apply(other=side_a(key=9, name="gre-9", o4=8))
    assert "gre-5" not in a.links() and "gre-9" in a.links()
    assert ping(a.ns, "169.254.64.9").returncode == 0
    assert daemon_pid(a) == pid  # one process served every change


def test_unknown_key_is_dropped_not_delivered(pair):
    a, b = pair
    a.apply(peer=side_a())
    b.apply(peer=side_b(key=6))  # B sends key 6; A only knows key 5 from B
    assert ping(b.ns, "169.254.64.0", count=2).returncode != 0
    reply = a.backend.request({"op": "list"})
    assert reply["unknown"] >= 2
    assert reply["tunnels"][0]["counters"]["rx_packets"] == 0


def test_gre_from_an_unplanned_source_is_dropped_even_with_the_right_key(pair):
    """Only the planned peer's address delivers (review finding 6): a forger on the underlay with the right key does not."""
    a, b = pair
    a.apply(peer=side_a())  # A takes key 5 from 10.20.0.2 only
    nsup.run("ip", "addr", "add", "10.20.0.3/24", "dev", "eth0", ns=b.ns)
    # B sends from another of its addresses, with the key A expects (keys are guessable)
    forged = tunnel("gre-5", 5, "10.20.0.3", A_ADDR, "169.254.64.1", "169.254.64.0", "fd00:7e::1", "fd00:7e::")
    assert [t.state for t in b.apply(peer=forged).tunnels] == ["up"]
    before = a.backend.request({"op": "list"})["unknown"]
    assert ping(b.ns, "169.254.64.0", count=2).returncode != 0
    reply = a.backend.request({"op": "list"})
    assert reply["unknown"] >= before + 2
    assert reply["tunnels"][0]["counters"]["rx_packets"] == 0
    # control: the same packets from the planned address are delivered
    b.apply(peer=side_b())
    assert ping(b.ns, "169.254.64.0").returncode == 0


def test_crash_keeps_devices_and_restart_resumes(pair):
    a, b = pair
    a.apply(peer=side_a())
    b.apply(peer=side_b())
    pid = daemon_pid(a)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
        time.sleep(0.05)
    # TUNSETPERSIST: the device, its addresses and routes outlive the process.
    assert "gre-5" in a.links()
    a.backend.close()
    report = a.apply(peer=side_a())  # the backend finds no daemon, starts one; it re-attaches
    assert daemon_pid(a) != pid
    assert report.changes == 0  # nothing had to be re-created: same link, same addresses
    assert ping(a.ns, "169.254.64.1").returncode == 0


def test_clean_stop_removes_devices(pair, tmp_path):
    a, b = pair
    a.apply(peer=side_a(), other=side_a(key=9, name="gre-9", o4=8))
    pid = daemon_pid(a)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
        time.sleep(0.05)
    assert not {"gre-5", "gre-9"} & a.links()
    assert not (tmp_path / "a" / "gre-userspace.json").exists()


def test_name_taken_by_foreign_link_is_that_tunnels_error(pair):
    a, b = pair
    nsup.run("ip", "link", "add", "gre-5", "type", "veth", "peer", "name", "x-peer", ns=a.ns)
    report = a.apply(peer=side_a(), other=side_a(key=9, name="gre-9", o4=8))
    by = {t.name: t for t in report.tunnels}
    assert by["gre-5"].state == "error" and "tunnels/peer" in by["gre-5"].error
    assert by["gre-9"].state in ("up", "down") and by["gre-9"].error is None


def test_probe_chooses_userspace_without_ip_gre(netns, tmp_path):
    from overlay_agent.gre import select_backend
    from overlay_agent.gre.kernel import kernel_gre_available

    if os.path.isdir("/sys/module/ip_gre"):
        pytest.skip("this kernel has ip_gre: the probe picks kernel GRE")
    with IPRoute(netns=netns) as ipr:
        assert kernel_gre_available(ipr) is False
        assert select_backend(ipr, tmp_path).name == "userspace"
        assert [link.get("ifname") for link in ipr.get_links()] == ["lo"]  # the probe left nothing behind
