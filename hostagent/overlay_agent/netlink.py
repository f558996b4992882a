"""The pyroute2 shim: the only module that talks netlink for links, addresses and routes."""

from __future__ import annotations

import ctypes
import errno as E
import ipaddress
import itertools
import os
import socket
import struct
from dataclasses import dataclass
from typing import Iterable, Iterator

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError as _PyNetlinkError

from .errors import NetlinkError
from .rtnl import IFA_F_NODAD, MAIN_TABLE
from .rtnl import nl_error as _err

CLONE_NEWNET = 0x40000000
RTNH_F_ONLINK = 0x04
GATEWAY4 = "169.254.1.1"
GATEWAY6 = "fe80::1"
# The container side's fixed link-local address: IPv6 rejects device-only next hops in a
# multipath route ("Device only routes can not be added for IPv6 using the multipath
# API"), so an anycast /128 on two containers of one host needs a gateway per veth.
CONTAINER_LL6 = "fe80::2"

_libc = ctypes.CDLL(None, use_errno=True)


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


@dataclass(frozen=True)
class KernelView:
    """One read of the host's kernel: our veths (by name prefix) and every /32 and /128 of the main table."""

    links: tuple[LinkInfo, ...]
    routes: tuple[RouteInfo, ...]


@dataclass(frozen=True)
class WireSpec:
    """Everything the kernel needs to wire one container (built by the pure core)."""

    veth: str
    ifname: str
    ipv4: ipaddress.IPv4Address | None
    ipv6: ipaddress.IPv6Address | None
    # Destinations routed via the gateways inside the container: the default routes when
    # the container has no other network, else only the pools.
    via4: tuple[str, ...]
    via6: tuple[str, ...]
    alias: str


# -- a minimal netlink dump reader (see Netlink.snapshot for why) ---------------------------

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


def _dump(msg_type: int, header: bytes, extra: bytes = b"", strict: bool = False) -> Iterator[Message]:
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


# The two dump requests Netlink.snapshot sends: every link (without statistics, which are
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


class ContainerGone(NetlinkError):
    """The container's process (and so its network namespace) went away before wiring finished."""


def _write_sysctl(path: str, value: str) -> None:
    # /proc/sys/net resolves against the calling thread's network namespace, which for the
    # agent's threads is always the host's (setns is only ever held for a socket() call).
    with open(path, "w") as fh:
        fh.write(value)


class Netlink:
    """Host-namespace netlink operations. Not thread-safe: one reconciler thread owns an instance."""

    def __init__(self) -> None:
        try:
            self.ipr = IPRoute()
        except OSError as exc:
            raise _err(exc, "open netlink socket") from exc
        self._index: dict[str, int] = {}

    def close(self) -> None:
        self.ipr.close()

    # -- reading ---------------------------------------------------------------------
    def snapshot(self, prefix: str) -> KernelView:
        """Links whose name starts with `prefix`, and every host route (/32, /128) of the main table.

        The full resync runs this every interval with up to thousands of veths and routes;
        pyroute2 decodes every attribute of every message (about 0.5 ms per link or IPv6
        route here, over a second at 1,000 containers), so the dumps are read with the
        small raw reader below, which looks only at the few attributes we need.
        """
        try:
            links = links_from(_dump(*LINK_REQUEST), prefix)
            routes = []
            for family, plen in ((socket.AF_INET, 32), (socket.AF_INET6, 128)):
                routes += host_routes_from(_dump(*route_request(family), strict=True), plen)
        except OSError as exc:
            raise _err(exc, "dump links and routes") from exc
        self._index = {link.name: link.index for link in links}
        return KernelView(tuple(links), tuple(routes))

    def link_index(self, name: str) -> int | None:
        """The ifindex of a host link, or None when it does not exist (one netlink request)."""
        try:
            found = self.ipr.link_lookup(ifname=name)
        except (_PyNetlinkError, OSError) as exc:
            if getattr(exc, "code", None) == E.ENODEV:
                return None
            raise _err(exc, f"look up link {name}") from exc
        if found:
            self._index[name] = found[0]
            return found[0]
        self._index.pop(name, None)
        return None

    # -- writing ---------------------------------------------------------------------
    def _enter(self, nsfd: int, sysctls: tuple[str, ...]) -> tuple[socket.socket, list]:
        """A netlink socket in the namespace of `nsfd`, and its sysctl files opened for writing.

        setns(2) on CLONE_NEWNET moves only the calling thread, and a socket (like an open
        /proc/sys/net file) stays bound to the namespace it was opened in, so the thread goes
        back at once. This avoids pyroute2's netns support, which forks a child per socket
        (milliseconds, and fork in a threaded process).
        """
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        files: list = []
        try:
            if _libc.setns(nsfd, CLONE_NEWNET) != 0:
                code = ctypes.get_errno()
                raise NetlinkError(f"setns into container: {os.strerror(code)}", errno=code, request="setns")
            try:
                sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, 0)
                for path in sysctls:
                    files.append(open(path, "w"))
                return sock, files
            except BaseException:
                for fh in files:
                    fh.close()
                raise
            finally:
                if _libc.setns(own, CLONE_NEWNET) != 0:
                    # A thread left in a container's namespace would wire the wrong host.
                    os.abort()
        finally:
            os.close(own)

    def wire(self, spec: WireSpec, pid: int) -> int:
        """Create the veth pair into the container of `pid`, configure both ends; return the host ifindex.

        Raises ContainerGone when the process has exited, NetlinkError otherwise; on any
        failure the half-made host link is removed (the peer goes with it).
        """
        try:
            nsfd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, ProcessLookupError) as exc:
            raise ContainerGone(f"process {pid} has exited", errno=E.ESRCH, request="open netns") from exc
        try:
            # A host link with our name but no finished alias is a leftover of an attempt
            # interrupted by a crash; its peer may sit in a dead or live namespace.
            self.unwire(spec.veth)
            try:
                # Creating the peer directly in the target namespace (IFLA_NET_NS_FD on the
                # peer) avoids a window where it exists in the host under a temporary name.
                self.ipr.link("add", ifname=spec.veth, kind="veth", peer={"ifname": spec.ifname, "net_ns_fd": nsfd})
            except _PyNetlinkError as exc:
                if exc.code == E.EEXIST:
                    raise NetlinkError(
                        f"the container already has an interface named {spec.ifname}",
                        errno=exc.code,
                        request="create veth",
                    ) from exc
                raise _err(exc, f"create veth {spec.veth}") from exc
            index = self.link_index(spec.veth)
            if index is None:
                raise NetlinkError(f"veth {spec.veth} vanished after creation", request="create veth")
            try:
                self._configure_container(nsfd, spec)
                self._configure_host(index, spec)
            except BaseException:
                self.unwire(spec.veth)
                raise
            return index
        finally:
            os.close(nsfd)

    def _configure_container(self, nsfd: int, spec: WireSpec) -> None:
        # Docker sets net.ipv6.conf.{all,default}.disable_ipv6=1 in a container without an
        # IPv6 network, so our interface starts with IPv6 off (EACCES on adding the /128).
        sysctls = (f"/proc/sys/net/ipv6/conf/{spec.ifname}/disable_ipv6",) if spec.ipv6 is not None else ()
        try:
            sock, files = self._enter(nsfd, sysctls)
        except OSError as exc:
            raise ContainerGone(f"container namespace unusable ({exc})", request="setns") from exc
        try:
            for fh in files:
                fh.write("0")
        except OSError as exc:
            sock.close()
            raise NetlinkError(f"enable IPv6 on {spec.ifname} in the container: {exc}", request="sysctl") from exc
        finally:
            for fh in files:
                try:
                    fh.close()
                except OSError:
                    pass
        cns = IPRoute(use_socket=sock)
        try:
            found = cns.link_lookup(ifname=spec.ifname)
            if not found:
                raise ContainerGone(f"{spec.ifname} missing in the container", request="container link")
            idx = found[0]
            cns.link("set", index=idx, state="up")
            if spec.ipv4 is not None:
                cns.addr("add", index=idx, address=str(spec.ipv4), prefixlen=32)
                for dst in spec.via4:
                    # onlink: 169.254.1.1 is on no subnet of the container; the host side
                    # answers its ARP by proxy ARP.
                    cns.route("replace", dst=dst, gateway=GATEWAY4, oif=idx, flags=RTNH_F_ONLINK)
            if spec.ipv6 is not None:
                # NODAD: the address is unique by allocation; DAD would hold it "tentative"
                # for a second and drop traffic meanwhile.
                cns.addr("add", index=idx, address=str(spec.ipv6), prefixlen=128, flags=IFA_F_NODAD)
                cns.addr("add", index=idx, address=CONTAINER_LL6, prefixlen=64, flags=IFA_F_NODAD)
                for dst in spec.via6:
                    cns.route("replace", dst=dst, gateway=GATEWAY6, oif=idx)
        except _PyNetlinkError as exc:
            raise _err(exc, f"configure {spec.ifname} in the container") from exc
        except (OSError, ValueError) as exc:
            # pyroute2 encodes addresses with inet_pton: a value it cannot encode is a
            # failed wiring of this container (the caller removes the half-made veth).
            raise NetlinkError(f"configure {spec.ifname} in the container: {exc}", request="encode") from exc
        finally:
            cns.close()

    def _configure_host(self, index: int, spec: WireSpec) -> None:
        try:
            if spec.ipv4 is not None:
                # The container ARPs for 169.254.1.1; proxy ARP answers with the veth's MAC
                # (the host needs a route covering 169.254.1.1 that is not this veth — its
                # default route). proxy_delay 0: otherwise broadcasts are answered after a
                # random delay of up to 0.8 s.
                _write_sysctl(f"/proc/sys/net/ipv4/conf/{spec.veth}/proxy_arp", "1")
                _write_sysctl(f"/proc/sys/net/ipv4/neigh/{spec.veth}/proxy_delay", "0")
            if os.path.isdir("/proc/sys/net/ipv6"):
                # Never learn a default router or an address from a container: a Router
                # Advertisement sent into its veth would otherwise make the container the
                # host's IPv6 default router (CVE-2020-13401 class). The veth is still down,
                # so nothing was accepted before this. Set for IPv4-only containers too: the
                # host side has IPv6 as soon as the link comes up.
                _write_sysctl(f"/proc/sys/net/ipv6/conf/{spec.veth}/accept_ra", "0")
                _write_sysctl(f"/proc/sys/net/ipv6/conf/{spec.veth}/autoconf", "0")
            if spec.ipv6 is not None:
                self.ipr.addr("add", index=index, address=GATEWAY6, prefixlen=64, flags=IFA_F_NODAD)
            # The alias is written last: it marks the wiring as complete and records the
            # addresses, so a restarted agent rebuilds its allocation from the kernel.
            self.ipr.link("set", index=index, state="up", ifalias=spec.alias)
        except FileNotFoundError as exc:
            raise NetlinkError(f"veth {spec.veth} vanished while wiring", errno=E.ENODEV, request="sysctl") from exc
        except (_PyNetlinkError, OSError) as exc:
            raise _err(exc, f"configure host side {spec.veth}") from exc

    def unwire(self, veth: str) -> bool:
        """Delete a host veth (the kernel deletes its peer and its routes); False when absent."""
        try:
            self.ipr.link("del", ifname=veth)
        except _PyNetlinkError as exc:
            if exc.code in (E.ENODEV, E.ENOENT, E.EINVAL):
                self._index.pop(veth, None)
                return False
            raise _err(exc, f"delete veth {veth}") from exc
        self._index.pop(veth, None)
        return True

    def route_set(
        self, dst: ipaddress.IPv4Network | ipaddress.IPv6Network, veths: Iterable[str], proto: int, metric: int = 0
    ) -> None:
        """Install (replace) the host route dst -> veth(s) at `metric`, tagged with our protocol.

        The kernel keys a route by destination and priority (IPv4 fib_table_insert, IPv6
        fib6_add_rt2): a replace at another metric adds a second route; the caller deletes
        the old one with route_del(metric=old).
        """
        oifs = []
        for name in sorted(veths):
            idx = self._index.get(name) or self.link_index(name)
            if idx is None:
                raise NetlinkError(f"route {dst}: link {name} does not exist", errno=E.ENODEV, request="route replace")
            oifs.append(idx)
        kwargs: dict = {"dst": str(dst), "table": MAIN_TABLE, "proto": proto, "scope": 253 if dst.version == 4 else 0}
        if metric:
            kwargs["priority"] = metric
        if len(oifs) == 1:
            kwargs["oif"] = oifs[0]
        elif dst.version == 4:
            kwargs["multipath"] = [{"oif": i} for i in oifs]
        else:
            kwargs["multipath"] = [{"oif": i, "gateway": CONTAINER_LL6} for i in oifs]
        try:
            self.ipr.route("replace", **kwargs)
        except _PyNetlinkError as exc:
            raise _err(exc, f"route replace {dst}") from exc

    def route_del(
        self, dst: ipaddress.IPv4Network | ipaddress.IPv6Network, proto: int, metric: int | None = None
    ) -> bool:
        """Delete our host route (only one carrying `proto`, at `metric` when given); False when it is gone."""
        extra = {} if metric is None else {"priority": metric}
        try:
            # scope 255 (RT_SCOPE_NOWHERE) is the kernel's wildcard for IPv4 deletes; pyroute2
            # otherwise sends scope 0 (universe) and our scope-link route is "not found".
            self.ipr.route(
                "del",
                dst=str(dst),
                table=MAIN_TABLE,
                proto=proto,
                **extra,
                **({"scope": 255} if dst.version == 4 else {}),
            )
        except _PyNetlinkError as exc:
            if exc.code in (E.ESRCH, E.ENOENT, E.ENODEV):
                return False
            raise _err(exc, f"route del {dst}") from exc
        return True
