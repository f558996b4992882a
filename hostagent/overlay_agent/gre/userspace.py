"""Userspace GRE: one process per network namespace serving all its tunnels (TUN devices + raw IP protocol 47).

For kernels without ip_gre. Real GRE on the wire (RFC 2784, key per RFC 2890), IPv4 and
IPv6 inside, interoperable with kernel GRE on the other end.

Control: a unix stream socket `<state_dir>/gre.sock`, one JSON request per line, one JSON
reply per line: {"op": "put", "tunnel": {...}}, {"op": "delete", "name": ...},
{"op": "list"}. The daemon persists its tunnel set to `<state_dir>/gre-userspace.json`
*before* it creates a device, so every device it may have made is on record.

Hazards, and what this module does about them:
- A crash must not flap the tunnels: TUN devices are made persistent (TUNSETPERSIST), so
  the device, its addresses and the routes through it outlive the process; a restart
  re-attaches by name (TUNSETIFF on an existing persistent device) and traffic resumes.
  While no process is attached the kernel drops what is routed into the device.
- A clean stop (SIGTERM/SIGINT) removes every device and the state file.
- Two daemons for one state dir would steal each other's devices: an flock on
  `<state_dir>/gre-userspace.lock` keeps one; TUNSETIFF on a device already attached
  fails with EBUSY anyway.
- A name taken by a non-TUN link (a veth, say): TUNSETIFF fails (EINVAL), reported per tunnel.
- Outer fragmentation: the raw socket uses IP_PMTUDISC_DONT, so an inner packet larger
  than the underlay path is fragmented by the kernel rather than dropped (we cannot send
  ICMP "fragmentation needed" back into the TUN the way ip_gre does). Size the underlay
  MTU for the tunnel MTU (9001 vs 8973 in a VPC) to avoid fragments.
- Received GRE is demultiplexed by (our address, peer address, key); anything else is
  counted and dropped, never delivered to the wrong device.
"""

from __future__ import annotations

import argparse
import fcntl
import io
import json
import logging
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any, cast

from ..errors import AgentError, ConfigError
from ..fsutil import atomic_write_json
from . import packet
from .base import LinkCounters, LinkSpec

log = logging.getLogger("overlay_agent.gre.userspace")

# include/uapi/linux/if_tun.h and if.h
TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
SIOCSIFMTU = 0x8922
IP_MTU_DISCOVER = getattr(socket, "IP_MTU_DISCOVER", 10)
IP_PMTUDISC_DONT = 0
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
GRE_PROTO = 47

SOCKET_NAME = "gre.sock"
STATE_NAME = "gre-userspace.json"
LOCK_NAME = "gre-userspace.lock"
# Packets handled per readiness event before yielding to the other descriptors (fairness).
BUDGET = 64
RECV_SIZE = 65535


# A control request is one JSON line of a few hundred bytes (a tunnel spec); the limit keeps
# a stuck or hostile local client from growing the daemon's buffers without bound.
MAX_REQUEST = 64 * 1024


class _Tunnel:
    __slots__ = ("spec", "fd", "sock", "dest", "hdr4", "hdr6", "ttl_cmsg", "c")

    def __init__(self, spec: LinkSpec, fd: int, sock: socket.socket):
        self.spec = spec
        self.fd = fd
        self.sock = sock
        self.dest = (spec.remote, 0)
        self.hdr4 = packet.header(packet.PROTO_IPV4, spec.key)
        self.hdr6 = packet.header(packet.PROTO_IPV6, spec.key)
        # TTL 0 means "inherit" for ip_gre; a userspace path has nothing to inherit from, use 64.
        ttl = spec.ttl or 64
        self.ttl_cmsg = [(socket.IPPROTO_IP, socket.IP_TTL, struct.pack("i", ttl))]
        self.c = LinkCounters()


def _open_tun(name: str) -> int:
    """Create (or re-attach to) the persistent TUN device `name`; returns its non-blocking fd."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
        fcntl.ioctl(fd, TUNSETPERSIST, 1)
    except OSError:
        os.close(fd)
        raise
    return fd


def _close_tun(fd: int) -> None:
    """Drop persistence and close: the kernel then unregisters the device (and its addresses, routes)."""
    try:
        fcntl.ioctl(fd, TUNSETPERSIST, 0)
    finally:
        os.close(fd)


def _set_mtu(name: str, mtu: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s, SIOCSIFMTU, struct.pack("16si", name.encode(), mtu))


class Daemon:
    """The data path. Single-threaded: one selector over TUN fds, raw sockets and the control socket."""

    def __init__(self, state_dir: Path):
        self.state_dir = Path(state_dir)
        self.sel = selectors.DefaultSelector()
        self.tunnels: dict[str, _Tunnel] = {}
        self.sockets: dict[str, socket.socket] = {}  # by local address
        self.demux: dict[str, dict[tuple[str, int | None], _Tunnel]] = {}  # local -> (remote, key) -> tunnel
        self.unknown = 0
        self.malformed = 0
        self.running = True
        self._lock_fd: int | None = None
        self._ctl: socket.socket | None = None
        self._bufs: dict[socket.socket, bytes] = {}

    # ---- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock_fd = os.open(self.state_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AgentError(f"userspace GRE: another daemon holds {self.state_dir / LOCK_NAME}") from None
        path = self.state_dir / SOCKET_NAME
        path.unlink(missing_ok=True)  # stale after a crash; the lock proves no live owner
        self._ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # bind() creates the socket file with 0777 & ~umask; a later chmod leaves a window
        # in which another local user could connect. Bind under umask 077 instead (the
        # process umask is shared by threads: the daemon is single-threaded at start).
        old_umask = os.umask(0o077)
        try:
            self._ctl.bind(str(path))
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        self._ctl.listen(16)
        self._ctl.setblocking(False)
        self.sel.register(self._ctl, selectors.EVENT_READ, ("accept", None))
        for spec in self._load_state():
            try:
                self.put(spec, persist=False)
            except OSError as exc:
                log.error("userspace GRE: cannot restore tunnel %s: %s", spec.name, exc)
        self._save_state()

    def stop(self) -> None:
        """Clean shutdown: every device removed, the state file with them."""
        for name in list(self.tunnels):
            self.delete(name, persist=False)
        (self.state_dir / STATE_NAME).unlink(missing_ok=True)
        if self._ctl is not None:
            (self.state_dir / SOCKET_NAME).unlink(missing_ok=True)
            self._ctl.close()
        for s in self.sockets.values():
            s.close()
        self.sel.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)

    def run(self) -> None:
        r, w = socket.socketpair()
        r.setblocking(False)
        w.setblocking(False)
        signal.set_wakeup_fd(w.fileno())

        def _stop(signum: int, frame: FrameType | None) -> None:
            self.running = False

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        self.sel.register(r, selectors.EVENT_READ, ("wakeup", None))
        try:
            while self.running:
                for key, _ in self.sel.select(timeout=5.0):
                    kind, obj = key.data
                    # Every file object registered here is a socket (or the tun fd, by number).
                    sock = cast(socket.socket, key.fileobj)
                    if kind == "tun":
                        self._from_tun(obj)
                    elif kind == "raw":
                        self._from_wire(obj, sock)
                    elif kind == "accept":
                        self._accept()
                    elif kind == "client":
                        self._client(sock)
                    elif kind == "wakeup":
                        try:
                            r.recv(64)
                        except BlockingIOError:
                            pass
        finally:
            signal.set_wakeup_fd(-1)
            self.sel.unregister(r)
            r.close()
            w.close()

    # ---- state file ------------------------------------------------------------------
    def _load_state(self) -> list[LinkSpec]:
        path = self.state_dir / STATE_NAME
        try:
            data = json.loads(path.read_text())
            return [LinkSpec.from_json(t, where=f"{path}") for t in data["tunnels"]]
        except FileNotFoundError:
            return []
        except (ValueError, KeyError, TypeError, ConfigError) as exc:
            log.error("userspace GRE: ignoring unreadable state %s: %s", path, exc)
            return []

    def _save_state(self, extra: LinkSpec | None = None) -> None:
        specs = {n: t.spec for n, t in self.tunnels.items()}
        if extra is not None:
            specs[extra.name] = extra
        # atomic: a crash leaves the old or the new file, never half of one
        atomic_write_json(self.state_dir / STATE_NAME, {"tunnels": [s.to_json() for s in specs.values()]}, indent=1)

    # ---- tunnels ---------------------------------------------------------------------
    def _raw_socket(self, local: str) -> socket.socket:
        s = self.sockets.get(local)
        if s is not None:
            return s
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, GRE_PROTO)
        s.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT)
        # FREEBIND: the local address may not be configured yet at boot (ENI still attaching).
        s.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        # Bound to our tunnel address: the socket then only sees GRE sent to that address,
        # and what we send leaves with it as source, whatever the route's preferred source.
        s.bind((local, 0))
        s.setblocking(False)
        self.sockets[local] = s
        self.demux[local] = {}
        self.sel.register(s, selectors.EVENT_READ, ("raw", local))
        return s

    def put(self, spec: LinkSpec, *, persist: bool = True) -> None:
        old = self.tunnels.get(spec.name)
        if old is not None and old.spec == spec:
            return
        clash = self.demux.get(spec.local, {}).get((spec.remote, spec.key))
        if clash is not None and clash.spec.name != spec.name:
            raise ConfigError(
                f"tunnel {spec.name}: remote {spec.remote} key {spec.key} already used by "
                f"{clash.spec.name}; received GRE could not be told apart"
            )
        if persist:
            self._save_state(extra=spec)  # intent first: a crash after _open_tun leaves no unknown device
        try:
            fd = old.fd if old is not None else _open_tun(spec.name)
            try:
                sock = self._raw_socket(spec.local)
                if old is None or old.spec.mtu != spec.mtu:
                    _set_mtu(spec.name, spec.mtu)
            except OSError:
                if old is None:
                    _close_tun(fd)
                raise
        except OSError:
            if persist:
                self._save_state()
            raise
        t = _Tunnel(spec, fd, sock)
        if old is not None:
            # Same device, new parameters: the fd stays (no flap), the encapsulation changes.
            t.c = old.c
            self.demux[old.spec.local].pop((old.spec.remote, old.spec.key), None)
            self.sel.unregister(fd)
        self.tunnels[spec.name] = t
        self.demux[spec.local][(spec.remote, spec.key)] = t
        self.sel.register(fd, selectors.EVENT_READ, ("tun", t))
        self._drop_unused_sockets()
        if persist:
            self._save_state()

    def delete(self, name: str, *, persist: bool = True) -> None:
        t = self.tunnels.pop(name, None)
        if t is None:
            return
        self.demux[t.spec.local].pop((t.spec.remote, t.spec.key), None)
        self.sel.unregister(t.fd)
        _close_tun(t.fd)
        self._drop_unused_sockets()
        if persist:
            self._save_state()

    def _drop_unused_sockets(self) -> None:
        used = {t.spec.local for t in self.tunnels.values()}
        for local in [a for a in self.sockets if a not in used]:
            s = self.sockets.pop(local)
            self.demux.pop(local, None)
            self.sel.unregister(s)
            s.close()

    # ---- data path -------------------------------------------------------------------
    def _from_tun(self, t: _Tunnel) -> None:
        fd, sendmsg, dest, c = t.fd, t.sock.sendmsg, t.dest, t.c
        for _ in range(BUDGET):
            try:
                pkt = os.read(fd, RECV_SIZE)
            except BlockingIOError:
                return
            except OSError:  # EIO once the device is going away
                return
            version = pkt[0] >> 4 if pkt else 0
            if version == 4:
                hdr = t.hdr4
            elif version == 6:
                hdr = t.hdr6
            else:
                c.tx_errors += 1
                continue
            try:
                # Scatter-gather: header and payload go out without being joined in Python.
                sendmsg((hdr, pkt), t.ttl_cmsg, 0, dest)
            except OSError:
                # ENOBUFS, EHOSTUNREACH, ...: the inner sender (TCP) retransmits, as with ip_gre.
                c.tx_errors += 1
                continue
            c.tx_packets += 1
            c.tx_bytes += len(pkt)

    def _from_wire(self, local: str, sock: socket.socket) -> None:
        demux = self.demux.get(local)
        if demux is None:
            return
        recvfrom, decode = sock.recvfrom, packet.decode
        for _ in range(BUDGET):
            try:
                data, (src, _) = recvfrom(RECV_SIZE)
            except BlockingIOError:
                return
            # AF_INET raw sockets deliver the outer IPv4 header too (raw(7)).
            ihl = (data[0] & 0x0F) * 4
            parsed = decode(data, ihl)
            if parsed is None:
                self.malformed += 1
                continue
            key, proto, pos = parsed
            t = demux.get((src, key))
            if t is None:
                self.unknown += 1
                continue
            if proto != packet.PROTO_IPV4 and proto != packet.PROTO_IPV6:
                t.c.rx_errors += 1  # keepalives, ERSPAN, MPLS...: not ours to deliver
                continue
            try:
                os.write(t.fd, memoryview(data)[pos:])
            except OSError:
                t.c.rx_errors += 1
                continue
            t.c.rx_packets += 1
            t.c.rx_bytes += len(data) - pos

    # ---- control ---------------------------------------------------------------------
    def _accept(self) -> None:
        try:
            assert self._ctl is not None  # "accept" is registered only once listening
            conn, _ = self._ctl.accept()
        except BlockingIOError:
            return
        conn.setblocking(False)
        self._bufs[conn] = b""
        self.sel.register(conn, selectors.EVENT_READ, ("client", None))

    def _client(self, conn: socket.socket) -> None:
        try:
            chunk = conn.recv(1 << 16)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._drop_client(conn)
            return
        buf = self._bufs[conn] + chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            reply = (
                self.handle(line)
                if len(line) <= MAX_REQUEST
                else {"ok": False, "error": f"request longer than {MAX_REQUEST} bytes"}
            )
            if not self._reply(conn, reply):
                return
        if len(buf) > MAX_REQUEST:
            # A request line without end: answer once and hang up rather than buffer it all.
            self._reply(conn, {"ok": False, "error": f"request longer than {MAX_REQUEST} bytes"})
            self._drop_client(conn)
            return
        self._bufs[conn] = buf

    def _reply(self, conn: socket.socket, reply: dict[str, Any]) -> bool:
        """Send one reply without blocking the data path; a client that does not read is dropped."""
        data = json.dumps(reply).encode() + b"\n"
        try:
            sent = conn.send(data)  # non-blocking: replies are far smaller than the socket buffer
        except OSError:
            sent = -1
        if sent != len(data):
            # Blocking here (the old sendall with a 5 s timeout) stalled every tunnel.
            self._drop_client(conn)
            return False
        return True

    def _drop_client(self, conn: socket.socket) -> None:
        self._bufs.pop(conn, None)
        self.sel.unregister(conn)
        conn.close()

    def handle(self, line: bytes) -> dict[str, Any]:
        """One control request -> one reply; errors are one line for a person, never a traceback."""
        try:
            req = json.loads(line)
            op = req["op"]
            if op == "put":
                self.put(LinkSpec.from_json(req["tunnel"]))
                return {"ok": True}
            if op == "delete":
                self.delete(req["name"])
                return {"ok": True}
            if op == "list":
                return {
                    "ok": True,
                    "pid": os.getpid(),
                    "unknown": self.unknown,
                    "malformed": self.malformed,
                    "tunnels": [dict(t.spec.to_json(), counters=vars(t.c)) for t in self.tunnels.values()],
                }
            return {"ok": False, "error": f"unknown op {op!r}"}
        except ConfigError as exc:
            return {"ok": False, "error": str(exc)}
        except OSError as exc:
            return {"ok": False, "error": f"{exc.strerror or exc} (errno {exc.errno})", "errno": exc.errno}
        except (ValueError, KeyError, TypeError) as exc:
            return {"ok": False, "error": f"bad request: {exc!r}"}


class UserspaceBackend:
    """The agent's side: a client of the daemon, starting it when none answers."""

    name = "userspace"

    def __init__(self, state_dir: str | Path, *, netns: str | None = None, spawn: bool = True, timeout: float = 5.0):
        self.state_dir = Path(state_dir)
        self.netns = netns
        self.spawn = spawn
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._rfile: io.BufferedReader | None = None

    @property
    def socket_path(self) -> Path:
        return self.state_dir / SOCKET_NAME

    def daemon_command(self) -> list[str]:
        cmd = [sys.executable, "-m", "overlay_agent.gre", "--state-dir", str(self.state_dir)]
        # The daemon must live in the namespace whose TUN devices and GRE traffic it serves.
        return (["ip", "netns", "exec", self.netns] if self.netns else []) + cmd

    def _start_daemon(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        logf = open(self.state_dir / "gre-userspace.log", "ab")
        # Its own session: the data path outlives an agent restart, so tunnels do not flap.
        subprocess.Popen(
            self.daemon_command(),
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=logf,
            start_new_session=True,
            close_fds=True,
        )
        logf.close()

    def _connect(self) -> None:
        deadline = time.monotonic() + self.timeout
        started = False
        while True:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(self.timeout)
            try:
                s.connect(str(self.socket_path))
                self._sock, self._rfile = s, s.makefile("rb")
                return
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                s.close()
                if not self.spawn:
                    # Its own unit (overlay-gre.service) may still be starting: wait, then give up.
                    if time.monotonic() > deadline:
                        raise AgentError(
                            f"userspace GRE daemon not running at {self.socket_path} (systemctl status overlay-gre)"
                        ) from exc
                    time.sleep(0.1)
                    continue
                if not started:
                    self._start_daemon()
                    started = True
                if time.monotonic() > deadline:
                    raise AgentError(
                        f"userspace GRE daemon did not start (see {self.state_dir / 'gre-userspace.log'})"
                    ) from exc
                time.sleep(0.05)

    def request(self, req: dict[str, Any]) -> dict[str, Any]:
        for _attempt in (0, 1):
            if self._sock is None:
                self._connect()
            assert self._sock is not None and self._rfile is not None  # _connect() sets both or raises
            try:
                self._sock.sendall(json.dumps(req).encode() + b"\n")
                line = self._rfile.readline()
                if line:
                    reply: dict[str, Any] = json.loads(line)
                    return reply
            except OSError:
                pass
            self.close()  # the daemon restarted under us: reconnect once
        raise AgentError(f"userspace GRE daemon at {self.socket_path} closed the connection")

    def close(self) -> None:
        if self._sock is not None and self._rfile is not None:  # set together (_connect)
            self._rfile.close()
            self._sock.close()
        self._sock = self._rfile = None

    def _checked(self, req: dict[str, Any]) -> dict[str, Any]:
        reply = self.request(req)
        if not reply.get("ok"):
            raise AgentError(reply.get("error", "userspace GRE daemon: unknown error"))
        return reply

    def list(self) -> dict[str, LinkSpec]:
        reply = self._checked({"op": "list"})
        return {
            t["name"]: LinkSpec.from_json({k: v for k, v in t.items() if k != "counters"}) for t in reply["tunnels"]
        }

    def put(self, spec: LinkSpec) -> None:
        self._checked({"op": "put", "tunnel": spec.to_json()})

    def delete(self, name: str) -> None:
        self._checked({"op": "delete", "name": name})

    def counters(self) -> dict[str, LinkCounters]:
        reply = self._checked({"op": "list"})
        return {t["name"]: LinkCounters(**t["counters"]) for t in reply["tunnels"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m overlay_agent.gre", description="Userspace GRE data path for one network namespace."
    )
    ap.add_argument("--state-dir", required=True, help="directory for the control socket, state and lock")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    d = Daemon(Path(args.state_dir))
    try:
        d.start()
    except (AgentError, OSError) as exc:
        print(f"overlay_agent.gre: {exc}", file=sys.stderr)
        return 1
    log.info("userspace GRE serving %d tunnel(s) from %s", len(d.tunnels), args.state_dir)
    try:
        d.run()
    finally:
        d.stop()
    return 0
