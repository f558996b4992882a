"""The pyroute2 shim: the only module that talks netlink for links, addresses and routes."""
from __future__ import annotations

import ctypes
import errno as E
import ipaddress
import os
import socket
from dataclasses import dataclass
from typing import Iterable

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError as _PyNetlinkError

from .errors import NetlinkError

CLONE_NEWNET = 0x40000000
IFA_F_NODAD = 0x02
RTNH_F_ONLINK = 0x04
MAIN_TABLE = 254
GATEWAY4 = "169.254.1.1"
GATEWAY6 = "fe80::1"

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


class ContainerGone(NetlinkError):
    """The container's process (and so its network namespace) went away before wiring finished."""


def _err(exc: BaseException, request: str) -> NetlinkError:
    code = getattr(exc, "code", None) or getattr(exc, "errno", None)
    text = os.strerror(code) if isinstance(code, int) and code > 0 else str(exc)
    return NetlinkError(f"{request}: {text}", errno=code, request=request)


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
        """Links whose name starts with `prefix`, and every host route (/32, /128) of the main table."""
        try:
            links = []
            for msg in self.ipr.get_links():
                name = msg.get_attr("IFLA_IFNAME") or ""
                if name.startswith(prefix):
                    links.append(LinkInfo(name, msg["index"], msg.get_attr("IFLA_IFALIAS")))
            routes = []
            for family, plen in ((socket.AF_INET, 32), (socket.AF_INET6, 128)):
                for msg in self.ipr.get_routes(family=family, table=MAIN_TABLE):
                    if msg["dst_len"] != plen or msg.get_attr("RTA_TABLE", MAIN_TABLE) != MAIN_TABLE:
                        continue
                    dst = msg.get_attr("RTA_DST")
                    if dst is None:
                        continue
                    oif = msg.get_attr("RTA_OIF")
                    if oif is not None:
                        oifs = (oif,)
                    else:
                        oifs = tuple(nh["oif"] for nh in (msg.get_attr("RTA_MULTIPATH") or []))
                    routes.append(RouteInfo(ipaddress.ip_network(f"{dst}/{plen}"), oifs, msg["proto"]))
        except (_PyNetlinkError, OSError) as exc:
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
                self.ipr.link("add", ifname=spec.veth, kind="veth",
                              peer={"ifname": spec.ifname, "net_ns_fd": nsfd})
            except _PyNetlinkError as exc:
                if exc.code == E.EEXIST:
                    raise NetlinkError(f"the container already has an interface named {spec.ifname}",
                                       errno=exc.code, request="create veth") from exc
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
                for dst in spec.via6:
                    cns.route("replace", dst=dst, gateway=GATEWAY6, oif=idx)
        except _PyNetlinkError as exc:
            raise _err(exc, f"configure {spec.ifname} in the container") from exc
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
            if spec.ipv6 is not None:
                self.ipr.addr("add", index=index, address=GATEWAY6, prefixlen=64, flags=IFA_F_NODAD)
            # The alias is written last: it marks the wiring as complete and records the
            # addresses, so a restarted agent rebuilds its allocation from the kernel.
            self.ipr.link("set", index=index, state="up", ifalias=spec.alias)
        except FileNotFoundError as exc:
            raise NetlinkError(f"veth {spec.veth} vanished while wiring", errno=E.ENODEV,
                               request="sysctl") from exc
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

    def route_set(self, dst: ipaddress.IPv4Network | ipaddress.IPv6Network, veths: Iterable[str],
                  proto: int) -> None:
        """Install (replace) the host route dst -> veth(s), tagged with our protocol."""
        oifs = []
        for name in sorted(veths):
            idx = self._index.get(name) or self.link_index(name)
            if idx is None:
                raise NetlinkError(f"route {dst}: link {name} does not exist", errno=E.ENODEV,
                                   request="route replace")
            oifs.append(idx)
        kwargs: dict = {"dst": str(dst), "table": MAIN_TABLE, "proto": proto, "scope": 253 if dst.version == 4 else 0}
        if len(oifs) == 1:
            kwargs["oif"] = oifs[0]
        else:
            kwargs["multipath"] = [{"oif": i} for i in oifs]
        try:
            self.ipr.route("replace", **kwargs)
        except _PyNetlinkError as exc:
            raise _err(exc, f"route replace {dst}") from exc

    def route_del(self, dst: ipaddress.IPv4Network | ipaddress.IPv6Network, proto: int) -> bool:
        """Delete our host route (only one carrying `proto`); False when it is already gone."""
        try:
            # scope 255 (RT_SCOPE_NOWHERE) is the kernel's wildcard for IPv4 deletes; pyroute2
            # otherwise sends scope 0 (universe) and our scope-link route is "not found".
            self.ipr.route("del", dst=str(dst), table=MAIN_TABLE, proto=proto,
                           **({"scope": 255} if dst.version == 4 else {}))
        except _PyNetlinkError as exc:
            if exc.code in (E.ESRCH, E.ENOENT, E.ENODEV):
                return False
            raise _err(exc, f"route del {dst}") from exc
        return True
