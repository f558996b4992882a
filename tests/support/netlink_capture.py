"""Capture the netlink dumps the agent's raw reader parses, as test data (tests/unit/data/netlink/).

    flock /tmp/overlay-heavy.lock .venv/bin/python -m tests.support.netlink_capture

As root: builds a scratch network namespace holding the cases the reader must get right
(veths with and without an alias, links of another name, single-path and multipath host
routes in both families, IPv6 next hops with a gateway, routes it must skip: wider
prefixes, other tables, blackholes, the local table; and enough routes that each dump spans
several datagrams), sends the exact requests `Netlink.snapshot` sends (LINK_REQUEST,
route_request) and writes every datagram the kernel returned, as returned. The namespace
is removed afterwards, also on failure. tests/unit/test_netlink_dumps.py parses the files
with the agent's reader and with pyroute2's own parser and compares.
"""

from __future__ import annotations

import json
import platform
import socket
import struct
import subprocess
import sys
from pathlib import Path

from overlay_agent import rtnl_dump as nl
from lab import netns

DATA = Path(__file__).resolve().parents[1] / "unit" / "data" / "netlink"
SEQ = {"links": 4001, "routes4": 4002, "routes6": 4003}
MANY = 700  # per family: well past one datagram (the kernel fills about 32 KB per dump datagram)
ALIAS = "overlay-agent 0123456789ab 100.64.0.1 fd00:64::1 4242"


def setup_commands() -> list[str]:
    """`ip -batch` lines for the scratch namespace."""
    cmds = [
        "link add ovcaaaaaaaaaaa1 type veth peer name xpeer1",
        "link add ovcaaaaaaaaaaa2 type veth peer name xpeer2",
        "link add other0 type veth peer name xpeer3",
        f'link set ovcaaaaaaaaaaa1 alias "{ALIAS}"',
    ]
    cmds += [f"link set {n} up" for n in ("ovcaaaaaaaaaaa1", "ovcaaaaaaaaaaa2", "other0", "xpeer1", "xpeer2", "xpeer3")]
    cmds += [
        "address add 10.9.0.1/24 dev other0",  # a local-table /32 (10.9.0.1) and a /24 connected route
        # single path, with a metric; multipath (two veths, device-only next hops)
        "route add 100.64.0.1/32 dev ovcaaaaaaaaaaa1 proto 149 scope link metric 7",
        "route add 100.64.0.2/32 proto 149 nexthop dev ovcaaaaaaaaaaa1 nexthop dev ovcaaaaaaaaaaa2",
        # to be skipped: a wider prefix, another table, a blackhole, another protocol is kept (the
        # reconciler decides what is its own), so a boot route stays in the expected set
        "route add 100.64.0.0/24 dev other0 proto 149",
        "route add 100.64.9.9/32 dev other0 proto 149 table 100",
        "route add blackhole 100.64.0.3/32",
        "route add 100.64.0.4/32 dev other0 proto boot",
        # IPv6: a gateway per next hop (device-only IPv6 multipath is refused by the kernel)
        "route add fd00:64::1/128 via fe80::2 dev ovcaaaaaaaaaaa1 proto 149",
        "route add fd00:64::2/128 proto 149 nexthop via fe80::2 dev ovcaaaaaaaaaaa1 "
        "nexthop via fe80::2 dev ovcaaaaaaaaaaa2",
        "route add fd00:64::/64 dev other0 proto 149",
        "route add fd00:64::9/128 dev other0 proto 149 table 100",
    ]
    cmds += [f"route add 100.65.{i // 250}.{i % 250 + 1}/32 dev ovcaaaaaaaaaaa2 proto 149" for i in range(MANY)]
    cmds += [
        f"route add fd00:65::{i + 1:x}/128 via fe80::2 dev ovcaaaaaaaaaaa2 proto 149 metric {i + 1}"
        for i in range(MANY)
    ]
    return cmds


def capture_inside(outdir: Path) -> None:
    """Run inside the namespace: send the snapshot's requests, write the datagrams."""
    requests = {
        "links": nl.LINK_REQUEST,
        "routes4": nl.route_request(socket.AF_INET),
        "routes6": nl.route_request(socket.AF_INET6),
    }
    for name, (msg_type, header, extra) in requests.items():
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, nl.NETLINK_ROUTE) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            if name != "links":
                sock.setsockopt(nl.SOL_NETLINK, nl.NETLINK_GET_STRICT_CHK, 1)
            payload = header + extra
            sock.sendto(
                nl._NLMSGHDR.pack(
                    nl._NLMSGHDR.size + len(payload), msg_type, nl.NLM_F_REQUEST | nl.NLM_F_DUMP, SEQ[name], 0
                )
                + payload,
                (0, 0),
            )
            datagrams = []
            while True:
                buf = sock.recv(1 << 20)
                datagrams.append(buf)
                done = any(
                    struct.unpack_from("=H", buf, off + 4)[0] in (nl.NLMSG_DONE, nl.NLMSG_ERROR)
                    for off in _offsets(buf)
                )
                if done:
                    break
        (outdir / f"{name}.bin").write_bytes(b"".join(struct.pack("<I", len(d)) + d for d in datagrams))


def _offsets(buf: bytes):
    offset = 0
    while offset + 16 <= len(buf):
        length = struct.unpack_from("=I", buf, offset)[0]
        if length < 16:
            return
        yield offset
        offset += (length + 3) & ~3


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--inside":
        capture_inside(Path(sys.argv[2]))
        return 0
    if not netns.have_root_netns():
        print("netlink_capture: needs root and ip(8)", file=sys.stderr)
        return 2
    DATA.mkdir(parents=True, exist_ok=True)
    ns = netns.create(netns.unique_name("nlcap"))
    try:
        # One `ip` per line (1,400 routes): a batch takes a second, separate commands a minute.
        done = subprocess.run(
            ["ip", "-n", ns, "-batch", "-"], input="\n".join(setup_commands()) + "\n", text=True, capture_output=True
        )
        if done.returncode != 0:
            print(f"netlink_capture: ip -batch: {done.stderr.strip()}", file=sys.stderr)
            return 1
        links = json.loads(netns.run("ip", "-j", "link", "show", ns=ns).stdout)
        netns.run(sys.executable, "-m", "tests.support.netlink_capture", "--inside", str(DATA), ns=ns, timeout=60)
    finally:
        netns.destroy(ns)
    meta = {
        "kernel": platform.release(),
        "seq": SEQ,
        "many": MANY,
        "alias": ALIAS,
        "ifindex": {link["ifname"]: link["ifindex"] for link in links},
    }
    (DATA / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    print(f"wrote {', '.join(sorted(p.name for p in DATA.iterdir()))} in {DATA}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
