"""The pyroute2 shim: the only module that changes links, addresses and routes of the host and its containers."""

from __future__ import annotations

import errno as E
import ipaddress
import os
import socket
from dataclasses import dataclass
from typing import Any, Iterable

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError as _PyNetlinkError

from .errors import NetlinkError
from .netns import open_in
from .rtnl import IFA_F_NODAD, MAIN_TABLE
from .rtnl import nl_error as _err
from .rtnl_dump import LINK_REQUEST, LinkInfo, RouteInfo, dump, host_routes_from, links_from, route_request

RTNH_F_ONLINK = 0x04
GATEWAY4 = "169.254.1.1"
GATEWAY6 = "fe80::1"
# The container side's fixed link-local address: IPv6 rejects device-only next hops in a
# multipath route ("Device only routes can not be added for IPv6 using the multipath
# API"), so an anycast /128 on two containers of one host needs a gateway per veth.
CONTAINER_LL6 = "fe80::2"


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
        small raw reader of rtnl_dump, which looks only at the few attributes we need.
        """
        try:
            links = links_from(dump(*LINK_REQUEST), prefix)
            routes = []
            for family, plen in ((socket.AF_INET, 32), (socket.AF_INET6, 128)):
                routes += host_routes_from(dump(*route_request(family), strict=True), plen)
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
            index: int = found[0]
            self._index[name] = index
            return index
        self._index.pop(name, None)
        return None

    # -- writing ---------------------------------------------------------------------
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
            sock, files = open_in(nsfd, sysctls)
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
        kwargs: dict[str, Any] = {
            "dst": str(dst),
            "table": MAIN_TABLE,
            "proto": proto,
            "scope": 253 if dst.version == 4 else 0,
        }
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
