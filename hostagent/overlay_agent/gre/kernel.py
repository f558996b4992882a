"""Kernel GRE (ip_gre) through pyroute2: the backend used wherever the kernel has GRE.

Hazards:
- Ownership: only gre links carrying our alias are ours; `gre0` (the fallback device
  ip_gre creates in every namespace) and anyone else's tunnels are never touched.
- A name already taken by a link that is not ours is an error for that tunnel, not a
  takeover.
- Key flags: IFLA_GRE_IFLAGS/OFLAGS carry GRE_KEY (0x2000, big-endian on the wire;
  pyroute2 encodes the '>H'), without it the kernel ignores ikey/okey.
- Changing local/remote/key/ttl is done in place (RTM_NEWLINK on the existing index is
  ip_gre's changelink), so the link, its addresses and routes survive.
"""

from __future__ import annotations

import errno as E
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol

if TYPE_CHECKING:
    from pyroute2 import IPRoute  # untyped (Any): pyroute2 ships no type information

from ..errors import NetlinkError
from ..rtnl import nl_error
from .base import LinkCounters, LinkSpec

GRE_KEY = 0x2000
ALIAS = "overlay-agent tunnel"


@dataclass(frozen=True)
class GreLink:
    """One gre link as the kernel reports it."""

    name: str
    index: int
    alias: str | None
    local: str | None
    remote: str | None
    ikey: int | None
    okey: int | None
    ttl: int
    mtu: int


class GreNetlink(Protocol):
    """The few netlink requests the kernel backend needs (pyroute2 below; a fake in unit tests)."""

    def gre_links(self) -> list[GreLink]: ...
    def link_exists(self, name: str) -> bool: ...
    def gre_add(self, spec: LinkSpec, alias: str) -> None: ...
    def gre_change(self, index: int, spec: LinkSpec) -> None: ...
    def link_del(self, name: str) -> None: ...


def _spec(link: GreLink) -> LinkSpec:
    return LinkSpec(
        name=link.name,
        local=link.local or "0.0.0.0",
        remote=link.remote or "0.0.0.0",
        key=link.okey,
        ttl=link.ttl,
        mtu=link.mtu,
    )


class KernelBackend:
    name = "kernel"

    def __init__(self, nl: GreNetlink):
        self.nl = nl

    def _ours(self) -> dict[str, GreLink]:
        return {link.name: link for link in self.nl.gre_links() if link.alias == ALIAS}

    def list(self) -> dict[str, LinkSpec]:
        return {name: _spec(link) for name, link in self._ours().items()}

    def put(self, spec: LinkSpec) -> None:
        ours = self._ours()
        link = ours.get(spec.name)
        if link is None:
            if self.nl.link_exists(spec.name):
                raise NetlinkError(
                    f"tunnel {spec.name}: a link of that name exists and is not ours", errno=E.EEXIST, request="gre add"
                )
            self.nl.gre_add(spec, ALIAS)
        elif _spec(link) != spec or link.ikey != spec.key:
            self.nl.gre_change(link.index, spec)

    def delete(self, name: str) -> None:
        if name in self._ours():
            self.nl.link_del(name)

    def counters(self) -> dict[str, LinkCounters]:
        # ip_gre counts everything in the link's own statistics (read through netlink by
        # the reconciler); the backend keeps nothing of its own.
        return {}


class PyrouteGre:
    """GreNetlink on a pyroute2 IPRoute (the current namespace, or the one the IPRoute was opened in)."""

    def __init__(self, ipr: IPRoute) -> None:
        self.ipr = ipr

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        from pyroute2.netlink.exceptions import NetlinkError as _PyNetlinkError

        try:
            return fn(*args, **kwargs)
        except (_PyNetlinkError, OSError) as exc:
            raise nl_error(exc, what) from exc

    def gre_links(self) -> list[GreLink]:
        out = []
        for msg in self._call("dump links", self.ipr.get_links):
            if msg.get(("linkinfo", "kind")) != "gre":
                continue
            data = msg.get(("linkinfo", "data")) or {}
            get = data.get_attr if hasattr(data, "get_attr") else data.get
            oflags = get("IFLA_GRE_OFLAGS") or 0
            iflags = get("IFLA_GRE_IFLAGS") or 0
            out.append(
                GreLink(
                    name=msg.get("ifname"),
                    index=msg["index"],
                    alias=msg.get("ifalias"),
                    local=get("IFLA_GRE_LOCAL"),
                    remote=get("IFLA_GRE_REMOTE"),
                    ikey=get("IFLA_GRE_IKEY") if iflags & GRE_KEY else None,
                    okey=get("IFLA_GRE_OKEY") if oflags & GRE_KEY else None,
                    ttl=get("IFLA_GRE_TTL") or 0,
                    mtu=msg.get("mtu") or 0,
                )
            )
        return out

    def link_exists(self, name: str) -> bool:
        return bool(self._call(f"look up {name}", self.ipr.link_lookup, ifname=name))

    @staticmethod
    def _gre_args(spec: LinkSpec) -> dict[str, Any]:
        args: dict[str, Any] = {
            "gre_local": spec.local,
            "gre_remote": spec.remote,
            "gre_ttl": spec.ttl,
            # pmtudisc on (ip_gre's default): DF follows the inner packet, PMTU works.
            "gre_pmtudisc": 1,
        }
        if spec.key is not None:
            args.update(gre_ikey=spec.key, gre_okey=spec.key, gre_iflags=GRE_KEY, gre_oflags=GRE_KEY)
        return args

    def gre_add(self, spec: LinkSpec, alias: str) -> None:
        self._call(f"gre add {spec.name}", self.ipr.link, "add", ifname=spec.name, kind="gre", **self._gre_args(spec))
        idx = self._call(f"look up {spec.name}", self.ipr.link_lookup, ifname=spec.name)[0]
        self._call(f"set {spec.name}", self.ipr.link, "set", index=idx, mtu=spec.mtu, ifalias=alias)

    def gre_change(self, index: int, spec: LinkSpec) -> None:
        self._call(f"gre change {spec.name}", self.ipr.link, "set", index=index, kind="gre", **self._gre_args(spec))
        self._call(f"set {spec.name}", self.ipr.link, "set", index=index, mtu=spec.mtu)

    def link_del(self, name: str) -> None:
        try:
            self._call(f"delete {name}", self.ipr.link, "del", ifname=name)
        except NetlinkError as exc:
            if exc.errno not in (E.ENODEV, E.ENOENT):
                raise


def kernel_gre_available(ipr: IPRoute) -> bool:
    """Probe once: can this namespace create a gre link? (Loads ip_gre on demand, as `ip link add` does.)"""
    from pyroute2.netlink.exceptions import NetlinkError as _PyNetlinkError

    if os.path.isdir("/sys/module/ip_gre"):
        return True
    name = f"ovlprobe{os.getpid() % 100000}"
    try:
        ipr.link("add", ifname=name, kind="gre", gre_local="127.0.0.1", gre_remote="127.0.0.2")
    except _PyNetlinkError as exc:
        if exc.code == E.EEXIST:  # a leftover probe from a crashed run: remove it below
            pass
        else:
            # EOPNOTSUPP: no "gre" link kind registered and none loadable (rtnl_link_ops).
            return False
    try:
        ipr.link("del", ifname=name)
    except _PyNetlinkError:
        pass
    return True
