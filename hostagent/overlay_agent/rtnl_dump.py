"""The raw rtnetlink dump reader: links and host routes from RTM_GET* dumps, without pyroute2's decoder."""

from __future__ import annotations

import ipaddress
import itertools
import os
import socket
import struct
from dataclasses import dataclass
from typing import Iterable, Iterator

from .rtnl import MAIN_TABLE

# Why not pyroute2 here: the full resync dumps thousands of links and routes every interval,
# and pyroute2 decodes every attribute of every message (about 0.5 ms per link or IPv6
# route, over a second at 1,000 containers); this reader looks only at the few it needs.


@dataclass(frozen=True)
class LinkInfo:
    name: str
    index: int
    alias: str | None


@dataclass(frozen=True)
class RouteInfo:
    dst: ipaddress.IPv4Network | ipaddress.IPv6Network
    oifs: tuple[int, ...]
    proto: int
    metric: int = 0  # RTA_PRIORITY; IPv6 reports 1024 when none was given


NETLINK_ROUTE = 0
NETLINK_GET_STRICT_CHK = 12
SOL_NETLINK = 270
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_GETLINK, RTM_GETROUTE = 18, 26
IFLA_IFNAME, IFLA_IFALIAS, IFLA_EXT_MASK = 3, 20, 29
RTEXT_FILTER_SKIP_STATS = 1 << 3
RTA_DST, RTA_OIF, RTA_PRIORITY, RTA_MULTIPATH, RTA_TABLE = 1, 4, 6, 9, 15
_NLMSGHDR = struct.Struct("=IHHII")
_IFINFOMSG = struct.Struct("=BxHiII")
_RTMSG = struct.Struct("=BBBBBBBBI")
_RTATTR = struct.Struct("=HH")
_RTNEXTHOP = struct.Struct("=HBBi")
_seq = itertools.count(1)


def _align(n: int) -> int:
    return (n + 3) & ~3


def _rtattr(kind: int, data: bytes) -> bytes:
    length = _RTATTR.size + len(data)
    return _RTATTR.pack(length, kind) + data + b"\0" * (_align(length) - length)


def _attrs(buf: bytes, offset: int, end: int) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    while offset + _RTATTR.size <= end:
        length, kind = _RTATTR.unpack_from(buf, offset)
        if length < _RTATTR.size:
            break
        out[kind & 0x3FFF] = buf[offset + _RTATTR.size : offset + length]
        offset += _align(length)
    return out


def _cstr(data: bytes | None) -> str:
    return (data or b"").split(b"\0", 1)[0].decode(errors="replace")


def _multipath_oifs(data: bytes) -> tuple[int, ...]:
    oifs, offset = [], 0
    while offset + _RTNEXTHOP.size <= len(data):
        length, _, _, ifindex = _RTNEXTHOP.unpack_from(data, offset)
        if length < _RTNEXTHOP.size:
            break
        oifs.append(ifindex)
        offset += _align(length)
    return tuple(oifs)


Message = tuple[int, bytes, dict[int, bytes]]  # (nlmsg type, body after the header, attributes)


def _messages(datagrams: Iterable[bytes], seq: int, fixed: int) -> Iterator[Message]:
    """The answers to dump request `seq` in the datagrams a netlink socket returned, up to
    NLMSG_DONE; `fixed` is the size of the family header (ifinfomsg, rtmsg) before the
    attributes. A dump spans many datagrams; a datagram holds whole messages (netlink
    never splits one). An NLMSG_ERROR answer raises OSError with its errno."""
    for buf in datagrams:
        offset = 0
        while offset + _NLMSGHDR.size <= len(buf):
            length, kind, _, mseq, _ = _NLMSGHDR.unpack_from(buf, offset)
            if length < _NLMSGHDR.size:
                return
            body_start = offset + _NLMSGHDR.size
            if mseq == seq:
                if kind == NLMSG_DONE:
                    return
                if kind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", buf, body_start)[0]
                    if code:
                        raise OSError(code, os.strerror(code))
                    return
                body = buf[body_start : offset + length]
                yield kind, body, _attrs(body, _align(fixed), len(body))
            offset += _align(length)


def dump(msg_type: int, header: bytes, extra: bytes = b"", strict: bool = False) -> Iterator[Message]:
    """Send one RTM_GET* dump request; yield (type, body, attrs) per answer message."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        if strict:
            sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
        seq = next(_seq)
        payload = header + extra
        sock.sendto(
            _NLMSGHDR.pack(_NLMSGHDR.size + len(payload), msg_type, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + payload,
            (0, 0),
        )
        yield from _messages(iter(lambda: sock.recv(1 << 20), b""), seq, len(header))


# The two dump requests netlink.Netlink.snapshot sends: every link (without statistics, which are
# most of an RTM_NEWLINK message), and the main table's routes per family (strict checking
# makes the kernel filter the dump to that table).
LINK_REQUEST = (
    RTM_GETLINK,
    _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0),
    _rtattr(IFLA_EXT_MASK, struct.pack("=I", RTEXT_FILTER_SKIP_STATS)),
)


def route_request(family: int) -> tuple[int, bytes, bytes]:
    return RTM_GETROUTE, _RTMSG.pack(family, 0, 0, 0, MAIN_TABLE, 0, 0, 0, 0), b""


def links_from(messages: Iterable[Message], prefix: str) -> list[LinkInfo]:
    """The links of an RTM_GETLINK dump whose name starts with `prefix`."""
    links = []
    for _, body, attrs in messages:
        name = _cstr(attrs.get(IFLA_IFNAME))
        if name.startswith(prefix):
            index = _IFINFOMSG.unpack_from(body)[2]
            alias = attrs.get(IFLA_IFALIAS)
            links.append(LinkInfo(name, index, _cstr(alias) if alias is not None else None))
    return links


def host_routes_from(messages: Iterable[Message], plen: int) -> list[RouteInfo]:
    """The unicast host routes (/32 or /128, `plen`) of the main table in an RTM_GETROUTE dump:
    destination, output interfaces (one, or each next hop's of a multipath route), protocol
    and metric."""
    routes = []
    for _, body, attrs in messages:
        _, dst_len, _, _, table, proto, _, rtype, _ = _RTMSG.unpack_from(body)
        table = struct.unpack("=I", attrs[RTA_TABLE])[0] if RTA_TABLE in attrs else table
        if dst_len != plen or table != MAIN_TABLE or rtype != 1 or RTA_DST not in attrs:
            continue  # only unicast host routes
        dst = ipaddress.ip_address(attrs[RTA_DST])
        if RTA_OIF in attrs:
            oifs: tuple[int, ...] = (struct.unpack("=i", attrs[RTA_OIF])[0],)
        else:
            oifs = _multipath_oifs(attrs.get(RTA_MULTIPATH, b""))
        metric = struct.unpack("=I", attrs[RTA_PRIORITY])[0] if RTA_PRIORITY in attrs else 0
        routes.append(RouteInfo(ipaddress.ip_network(f"{dst}/{plen}"), oifs, proto, metric))
    return routes
