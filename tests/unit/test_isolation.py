"""What a container or a local user can reach of the agent (review: security.md findings 6, 7, 10, 11, 12, 14).

Status files 0600, FRR error text without the password, metrics on loopback by default, the
userspace GRE control socket without a permission window and with bounded, non-blocking
requests, GRE accepted only from a planned (remote, key).
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import stat

import pytest

from overlay_agent import cli
from overlay_agent.containers import ContainerReconciler
from overlay_agent.errors import CommandError
from overlay_agent.frr import Frr, redact
from overlay_agent.gre import packet
from overlay_agent.gre.userspace import MAX_REQUEST, SOCKET_NAME, Daemon, _Tunnel
from tests.support.fakes import FakeBackend, FakeDocker, FakeGuard, FakeKernel, FakeNetlink, FakeSource, cfg, lockstep

SECRET = "s3cr3t-Pa55word"


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_container_status_file_is_0600_even_under_a_lax_umask(tmp_path):
    status = tmp_path / "run" / "containers.json"
    status.parent.mkdir()
    status.write_text("{}")
    os.chmod(status, 0o644)  # left by an older agent
    kernel = FakeKernel()
    docker = FakeDocker(kernel)
    docker.add("a", {"overlay.ipv4": "100.64.0.5\n" + "x" * 500})
    old = os.umask(0o000)
    try:
        rec = ContainerReconciler(cfg(), docker, kernel, status_path=status)
        assert rec.resync()
    finally:
        os.umask(old)
    assert _mode(status) == 0o600
    row = json.loads(status.read_text())["containers"][0]
    assert row["state"] == "error" and len(row["error"]) < 300


def test_pairing_status_file_is_0600(pairing_world):
    sync, src, be, frr, tmp = pairing_world
    old = os.umask(0o000)
    try:
        sync.start()
        sync.step(now=0.0)
    finally:
        os.umask(old)
    assert _mode(tmp / "pairing.json") == 0o600


def test_redact_cuts_password_values_and_the_applied_secret():
    config = f"router bgp 65000\n neighbor 169.254.64.0 password {SECRET}\n"
    out = f"line 3: % Unknown command: neighbor 169.254.64.0 password {SECRET} extra\nb'{SECRET}'"
    red = redact(out, config)
    assert SECRET not in red and "password <redacted>" in red
    assert redact("PASSWORD abc") == "PASSWORD <redacted>"


def _rejecting_frr(tmp_path) -> Frr:
    # A stand-in for frr-reload.py that rejects the password line the way vtysh reports it,
    # and dumps the whole file as frr-reload's log does (a bytes repr).
    script = tmp_path / "frr-reload.py"
    script.write_text(
        "import sys\nlines = open(sys.argv[-1]).read().splitlines()\n"
        'print("line 2: % Unknown command: " + lines[1].strip())\n'
        "print(repr(open(sys.argv[-1]).read()))\nsys.exit(1)\n"
    )
    return Frr(tmp_path / "frr-state", reload_script=str(script), bindir="/nonexistent")


def test_frr_rejection_never_carries_the_password(tmp_path):
    frr = _rejecting_frr(tmp_path)
    text = f"router bgp 65000\n neighbor 169.254.64.0 password {SECRET} bogus\n"
    for call in (lambda: frr.reload(text), lambda: frr.diff(text)):
        with pytest.raises(CommandError) as info:
            call()
        assert "<redacted>" in str(info.value)
        assert SECRET not in str(info.value) and SECRET not in info.value.stderr, str(info.value)


def test_frr_rejection_in_pairing_status_and_log_is_redacted(caplog, tmp_path):
    src, nl, tmp = FakeSource(), FakeNetlink(), tmp_path
    sync = lockstep(src, tmp, FakeBackend(nl), nl, _rejecting_frr(tmp_path))
    fetch = src.fetch
    src.fetch = lambda: dataclasses.replace(fetch(), password=SECRET)
    sync.start()
    sync.step(now=0.0)
    status = (tmp / "pairing.json").read_text()
    assert json.loads(status)["frr"]["error"]
    assert SECRET not in status and SECRET not in caplog.text
    assert "<redacted>" in json.loads(status)["frr"]["error"]


def test_metrics_listen_on_loopback_by_default():
    args = cli.parser().parse_args(["run", "--config", "x"])
    assert args.metrics_address == "127.0.0.1:9469"


# -- userspace GRE daemon ----------------------------------------------------------------------


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path / "gre")
    old = os.umask(0o000)  # the worst umask: the socket must still never be reachable by others
    try:
        d.start()
    finally:
        os.umask(old)
    yield d
    d.stop()


def _client(d: Daemon) -> socket.socket:
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(str(d.state_dir / SOCKET_NAME))
    d._accept()
    return c


def _conn(d: Daemon) -> socket.socket:
    return next(iter(d._bufs))


def test_control_socket_and_directory_are_private_from_the_start(daemon):
    assert _mode(daemon.state_dir / SOCKET_NAME) == 0o600
    assert _mode(daemon.state_dir) == 0o700


def test_control_request_line_is_bounded(daemon):
    c = _client(daemon)
    conn = _conn(daemon)
    c.sendall(b"x" * (MAX_REQUEST + 10))  # no newline, ever
    for _ in range(4):
        if conn not in daemon._bufs:
            break
        daemon._client(conn)
    assert conn not in daemon._bufs  # answered and dropped, not buffered without end
    reply = json.loads(c.recv(4096).splitlines()[0])
    assert not reply["ok"] and "longer than" in reply["error"]
    c.close()


def test_a_client_that_never_reads_is_dropped_without_blocking(daemon):
    c = _client(daemon)
    conn = _conn(daemon)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    req = b'{"op": "list"}\n' * 2000
    c.setblocking(False)
    dropped = False
    for _ in range(200):
        try:
            c.send(req)
        except (BlockingIOError, BrokenPipeError, ConnectionResetError):
            pass
        if conn not in daemon._bufs:
            dropped = True
            break
        daemon._client(conn)  # returns at once: never waits for the client
    assert dropped
    c.close()


class _FakeRaw:
    def __init__(self, datagrams):
        self.datagrams = list(datagrams)

    def recvfrom(self, size):
        if not self.datagrams:
            raise BlockingIOError
        return self.datagrams.pop(0)


def _gre(src: str, key: int | None, inner: bytes) -> tuple[bytes, tuple[str, int]]:
    outer = bytes([0x45]) + bytes(19)  # a 20-byte IPv4 header; only its length is read
    return outer + packet.header(packet.PROTO_IPV4, key) + inner, (src, 0)


def test_userspace_gre_accepts_only_the_planned_remote_and_key(tmp_path):
    d = Daemon(tmp_path)
    r, w = os.pipe()
    try:
        planned = _Tunnel.__new__(_Tunnel)
        planned.fd = w

        class C:
            rx_packets = rx_bytes = rx_errors = 0

        planned.c = C()
        d.demux["10.40.0.10"] = {("10.40.128.10", 5): planned}
        inner = bytes([0x45]) + bytes(27)
        sock = _FakeRaw(
            [
                _gre("10.40.128.10", 5, inner),  # planned
                _gre("10.40.128.11", 5, inner),  # another source, right key
                _gre("10.40.128.10", 6, inner),  # right source, another key
                _gre("10.99.0.5", 5, inner),
            ]
        )  # a container forging GRE
        d._from_wire("10.40.0.10", sock)
        assert planned.c.rx_packets == 1 and d.unknown == 3
        assert os.read(r, 100) == inner
    finally:
        os.close(r)
        os.close(w)


# -- anti-spoofing sets follow the wiring ------------------------------------------------------


def _wired_pairs(rec):
    return {(w.veth, a) for w in rec.actual.wired.values() for a in (w.ipv4, w.ipv6) if a is not None}


def test_guard_allows_a_containers_sources_before_its_route_and_forgets_them_when_it_goes():
    kernel = FakeKernel()
    docker = FakeDocker(kernel)
    rec = ContainerReconciler(cfg(), docker, kernel)
    rec.guard = guard = FakeGuard(kernel)
    a = docker.add("a", {"overlay": "auto"})
    docker.add("b", {"overlay.ipv4": "100.64.9.9"})
    assert rec.resync()
    assert guard.have == _wired_pairs(rec) and len(guard.have) == 4
    ops = kernel.ops
    first_route = next(i for i, op in enumerate(ops) if op[0] == "route_set")
    assert any(op[0] == "guard" for op in ops[:first_route]), ops
    docker.stop(a)
    assert rec.resync()
    assert guard.have == _wired_pairs(rec) and len(guard.have) == 2


def test_guard_failure_is_logged_counted_and_repaired_without_stopping_the_wiring(caplog):
    kernel = FakeKernel()
    docker = FakeDocker(kernel)
    rec = ContainerReconciler(cfg(), docker, kernel)
    rec.guard = guard = FakeGuard(kernel)
    guard.fail = 3  # the early add and both attempts at the end of the pass
    docker.add("a", {"overlay": "auto"})
    assert rec.resync()
    assert [r["state"] for r in rec.status_rows()] == ["routed"]
    assert rec.metrics.registry.get_sample_value("overlay_container_errors_total", {"reason": "guard"}) >= 1
    assert "anti-spoofing table" in caplog.text
    guard.have.add(("ovcdeadbeef0000", next(iter(_wired_pairs(rec)))[1]))  # a stray element
    assert rec.resync()
    assert guard.have == _wired_pairs(rec)


def test_guard_ruleset_judges_only_our_veths_and_drops_container_gre():
    from overlay_agent.guard import ruleset

    text = ruleset("ovc")
    assert 'iifname != "ovc*" accept' in text and "meta l4proto gre counter drop" in text
    assert text.index("flush chain") < text.index("add rule")  # one transaction: never without rules
    assert "flush set" not in text  # a restart keeps the elements
