"""Tunnel reconciler: the `tunnels/*` parameters -> GRE links, inner addresses and underlay pins, through one backend.

Desired state is the parsed parameters; actual state is the backend's link list and one
netlink dump. `apply()` is the only writer, and the shared logic is identical for the
kernel and the userspace backend (only `Backend.put/delete/list` differ).

Hazards, and what is done about each:
- One malformed `tunnels/<peer>` parameter rejects that tunnel only (one line: parameter,
  field, value, reason); the others are applied. Two parameters claiming one link name,
  or one (local, remote, key), cannot both exist: the later parameter name is rejected
  (received GRE is demultiplexed by exactly that triple, RFC 2890 key).
- Recursion: a GRE packet to a remote must never be routed into a tunnel (a BGP route
  learned over tunnel A covering tunnel B's remote would carry B inside A, and A's own
  session would die with A). Each remote gets a /32 pinned to the route the underlay
  alone would use: the longest match in the main table ignoring every route through our
  tunnel links and our own pins. Pins are re-derived on every pass, so an underlay change
  (a new default gateway) follows within a resync.
- Route ownership: pins carry the agent's route protocol (149). The container wiring
  owns the protocol's /32s *inside* the container pools; pins are the protocol's IPv4
  /32s *outside* them (tunnel endpoints are VPC or on-prem addresses, which the plan
  keeps disjoint from the pools). Nothing else is ever deleted.
- Addresses: the inner /31 and /127 are the only addresses on our links; anything else on
  them (a stale inner address after a renumbering) is removed, except IPv6 link-local
  addresses, which the kernel manages. IPv6 is added with NODAD: a tentative address
  cannot be a BGP session's source for a second or more (RFC 4862 DAD).
- Removed tunnels: their links go (the kernel takes the addresses and routes with them),
  and a pin goes when no remaining tunnel uses its remote.
- A backend failure on one tunnel (a name taken by a foreign link, say) is that tunnel's
  error; the pass goes on with the rest.
"""

from __future__ import annotations

import errno as E
import functools
import ipaddress
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Protocol

if TYPE_CHECKING:
    from pyroute2 import IPRoute  # untyped (Any): pyroute2 ships no type information

from . import schemas
from .config import loads
from .errors import AgentError, ConfigError, NetlinkError
from .gre.base import Backend, LinkSpec
from .rtnl import IFA_F_NODAD, MAIN_TABLE
from .rtnl import nl_error as _nl_error

log = logging.getLogger("overlay_agent.tunnels")

IFF_UP = 0x1
IFF_LOWER_UP = 0x10000
RT_SCOPE_LINK = 253
RTN_UNICAST = 1

IPv4Iface = ipaddress.IPv4Interface
IPv6Iface = ipaddress.IPv6Interface
IPIface = IPv4Iface | IPv6Iface


# -- desired state (pure) ---------------------------------------------------------------


@dataclass(frozen=True)
class Tunnel:
    """One tunnel parameter, validated."""

    param: str  # the parameter's short name, e.g. "tunnels/router-1"
    peer: str
    kind: str
    link: LinkSpec
    inner4: IPv4Iface
    remote4: ipaddress.IPv4Address
    inner6: IPv6Iface | None
    remote6: ipaddress.IPv6Address | None
    peer_asn: int
    # A router's tunnel to a host: the host's own block (what only it may announce) and
    # its index in the plan (the sequence of its filter entry); None elsewhere.
    peer_block4: ipaddress.IPv4Network | None = None
    peer_block6: ipaddress.IPv6Network | None = None
    peer_index: int | None = None

    @property
    def name(self) -> str:
        return self.link.name

    def addresses(self) -> set[IPIface]:
        return {self.inner4} | ({self.inner6} if self.inner6 is not None else set())


def _inner(doc: dict[str, Any], key: str, where: str) -> tuple[Any, Any] | None:
    """The inner /31 or /127 (shape checked by the schema): this side's interface and the peer's address."""
    value = doc.get(key)
    if value is None:
        return None
    iface = ipaddress.ip_interface(f"{value['local']}/{value['prefixlen']}")
    remote = ipaddress.ip_address(value["remote"])
    # /31 (RFC 3021) and /127 (RFC 6164): two addresses, no broadcast or anycast to lose.
    if remote not in iface.network or remote == iface.ip:
        raise ConfigError(f"{where}: {key}.remote: {remote} is not the other address of {iface.network}")
    return iface, remote


@functools.lru_cache(maxsize=8192)
def parse_tunnel(param: str, text: str) -> Tunnel:
    """Validate one `tunnels/<peer>` value; ConfigError (one line naming the parameter) when unusable.

    The shape is schemas/tunnel.schema.json (the program validates what it writes against
    the same file); here only what a schema cannot say: the inner addresses pair up.
    Cached by (name, text): a router re-reads hundreds of unchanged tunnel values on every
    change and resync; a Tunnel is immutable, so the cache cannot go stale.
    """
    doc = loads(text, param)
    schemas.validate("tunnel", doc, param)
    link = LinkSpec.from_json(doc, where=param)
    inner4 = _inner(doc, "inner_ipv4", param)
    inner6 = _inner(doc, "inner_ipv6", param)
    assert inner4 is not None  # required by the schema
    block4 = block6 = index = None
    if "peer_blocks" in doc:
        if doc["kind"] != "host":
            raise ConfigError(f"{param}: peer_blocks: only a router's tunnel to a host carries the host's block")
        blocks, index = doc["peer_blocks"], int(doc["peer_index"])
        block4 = ipaddress.IPv4Network(blocks["ipv4"])
        block6 = ipaddress.IPv6Network(blocks["ipv6"]) if blocks.get("ipv6") is not None else None
    return Tunnel(
        param=param,
        peer=doc["peer"],
        kind=doc["kind"],
        link=link,
        inner4=inner4[0],
        remote4=inner4[1],
        inner6=inner6[0] if inner6 else None,
        remote6=inner6[1] if inner6 else None,
        peer_asn=int(doc["peer_asn"]),
        peer_block4=block4,
        peer_block6=block6,
        peer_index=index,
    )


# Route-map sequence numbers end at 65535; host filter entries start at HOST_FILTER_SEQ.
HOST_FILTER_SEQ = 100
MAX_FILTERED_HOSTS = 65535 - HOST_FILTER_SEQ


def host_filters(tunnels: Iterable[Tunnel]) -> str:
    """A router's per-host import filters (FRR text), from its host tunnels; "" when there are none.

    Hosts arrive by dynamic neighbor, so the peer group's route-maps HOSTS-IN / HOSTS6-IN
    (userdata/frr-router.conf.j2) hold one entry per host: `match peer` the host's tunnel
    address and a prefix-list of its block. A host may thus announce its own block and the
    shared ranges (the template's entry 10), nothing of another host's block. Kept out of
    the `frr` parameter, which must stay under SSM's 8 KB with hundreds of hosts; rendered
    here from the tunnels/<host> parameters, which carry each host's block.
    """
    lines: list[str] = []
    hosts = [(t.peer_index, t) for t in tunnels if t.peer_index is not None and t.peer_block4 is not None]
    for index, t in sorted(hosts, key=lambda it: it[0]):
        seq, n = HOST_FILTER_SEQ + index, index + 1
        lines += [
            f"! host {n} over {t.name}: its own block",
            f"ip prefix-list HOST{n}-V4 seq 5 permit {t.peer_block4} ge 32",
            f"route-map HOSTS-IN permit {seq}",
            f" match peer {t.remote4}",
            f" match ip address prefix-list HOST{n}-V4",
            "exit",
        ]
        if t.peer_block6 is not None and t.remote6 is not None:
            lines += [
                f"ipv6 prefix-list HOST{n}-V6 seq 5 permit {t.peer_block6} ge 128",
                f"route-map HOSTS6-IN permit {seq}",
                f" match peer {t.remote6}",
                f" match ipv6 address prefix-list HOST{n}-V6",
                "exit",
            ]
    return "".join(line + "\n" for line in lines)


def parse_tunnels(raw: dict[str, str]) -> tuple[dict[str, Tunnel], dict[str, str]]:
    """All tunnel parameters (short name -> value) -> (valid tunnels by link name, errors by parameter)."""
    tunnels: dict[str, Tunnel] = {}
    errors: dict[str, str] = {}
    by_triple: dict[tuple[str, str, int | None], str] = {}
    for param in sorted(raw):
        try:
            t = parse_tunnel(param, raw[param])
        except ConfigError as exc:
            errors[param] = str(exc)
            continue
        except Exception as exc:  # noqa: BLE001 - one bad parameter fails only its own tunnel
            errors[param] = f"{param}: refused ({type(exc).__name__}: {str(exc)[:200]})"
            continue
        if t.name in tunnels:
            errors[param] = f"{param}: name {t.name!r} is already used by {tunnels[t.name].param}"
            continue
        triple = (t.link.local, t.link.remote, t.link.key)
        if triple in by_triple:
            errors[param] = (
                f"{param}: local {t.link.local} remote {t.link.remote} key {t.link.key} is already "
                f"used by {by_triple[triple]}; received GRE could not be told apart"
            )
            continue
        by_triple[triple] = param
        tunnels[t.name] = t
    return tunnels, errors


# -- actual state ------------------------------------------------------------------------


@dataclass(frozen=True)
class LinkState:
    name: str
    index: int
    flags: int
    mtu: int
    rx_bytes: int = 0
    tx_bytes: int = 0
    rx_packets: int = 0
    tx_packets: int = 0

    @property
    def up(self) -> bool:
        return bool(self.flags & IFF_UP) and bool(self.flags & IFF_LOWER_UP)


@dataclass(frozen=True)
class Route:
    """An IPv4 route of the main table, reduced to what the underlay lookup needs."""

    dst: ipaddress.IPv4Network
    oif: int | None
    gateway: str | None
    proto: int
    priority: int = 0
    type: int = RTN_UNICAST


@dataclass(frozen=True)
class Pin:
    """The underlay route we hold for one remote: `remote/32 [via gateway] dev oif`."""

    oif: int | None  # None: a route of ours without one (a blackhole), found in the table
    gateway: str | None


@dataclass
class View:
    links: dict[str, LinkState]
    addrs: dict[int, set[IPIface]]  # ifindex -> interfaces (link-local IPv6 left out)
    routes4: list[Route]


class TunnelNetlink(Protocol):
    def view(self) -> View: ...
    def link_up(self, index: int) -> None: ...
    def addr_add(self, index: int, iface: IPIface) -> None: ...
    def addr_del(self, index: int, iface: IPIface) -> None: ...
    def route_replace(self, dst: ipaddress.IPv4Network, pin: Pin, proto: int) -> None: ...
    def route_del(self, dst: ipaddress.IPv4Network, pin: Pin, proto: int) -> None: ...


def is_pin(route: Route, proto: int, pools: Iterable[ipaddress.IPv4Network]) -> bool:
    """Our pin class: the agent's protocol, an IPv4 /32, outside the container pools."""
    return route.proto == proto and route.dst.prefixlen == 32 and not any(route.dst.subnet_of(p) for p in pools)


def underlay_hop(
    remote: ipaddress.IPv4Address,
    routes: Iterable[Route],
    skip_oifs: set[int],
    proto: int,
    pools: Iterable[ipaddress.IPv4Network],
) -> Pin | None:
    """The route the underlay alone gives `remote`: longest match, lowest metric, ignoring tunnels and pins."""
    best: Route | None = None
    for r in routes:
        if r.type != RTN_UNICAST or r.oif is None or r.oif in skip_oifs or is_pin(r, proto, pools):
            continue
        if remote not in r.dst:
            continue
        if best is None or (r.dst.prefixlen, -r.priority) > (best.dst.prefixlen, -best.priority):
            best = r
    return None if best is None else Pin(best.oif, best.gateway)


# -- the reconciler ----------------------------------------------------------------------


@dataclass
class TunnelStatus:
    name: str
    peer: str
    kind: str
    param: str
    remote: str
    key: int | None
    state: str = "pending"  # up, down, error
    error: str | None = None
    rx_bytes: int = 0
    tx_bytes: int = 0


@dataclass
class Report:
    backend: str
    tunnels: list[TunnelStatus] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)
    changes: int = 0
    error: str | None = None  # the pass as a whole failed (backend unreachable)

    def to_json(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "changes": self.changes,
            "error": self.error,
            "tunnels": [vars(t) for t in self.tunnels],
            "rejected": [{"parameter": p, "error": e} for p, e in sorted(self.rejected.items())],
        }


class TunnelReconciler:
    """Desired tunnels -> backend links + netlink addresses and pins. Not thread-safe: one caller."""

    def __init__(
        self, backend: Backend, nl: TunnelNetlink, *, proto: int = 149, pools: Iterable[ipaddress.IPv4Network] = ()
    ):
        self.backend = backend
        self.nl = nl
        self.proto = proto
        self.pools = tuple(pools)

    def apply(self, tunnels: dict[str, Tunnel], rejected: dict[str, str] | None = None) -> Report:
        """Make the kernel match `tunnels`; return what is there now, per tunnel."""
        report = Report(self.backend.name, rejected=dict(rejected or {}))
        status = {
            n: TunnelStatus(n, t.peer, t.kind, t.param, t.link.remote, t.link.key) for n, t in sorted(tunnels.items())
        }
        have = self.backend.list()
        # Removals first: a renamed tunnel frees its (remote, key) before the new one claims it.
        for name in sorted(set(have) - set(tunnels)):
            try:
                self.backend.delete(name)
                report.changes += 1
                log.info("tunnel %s removed", name, extra={"tunnel": name})
            except AgentError as exc:
                log.error("tunnel %s: cannot remove: %s", name, exc)
        for name, t in sorted(tunnels.items()):
            if have.get(name) == t.link:
                continue
            try:
                self.backend.put(t.link)
                report.changes += 1
                log.info(
                    "tunnel %s %s to %s (%s)",
                    name,
                    "changed" if name in have else "created",
                    t.peer,
                    t.link.remote,
                    extra={"tunnel": name, "peer": t.peer},
                )
            except AgentError as exc:
                status[name].state, status[name].error = "error", f"{t.param}: {exc}"
                log.error("%s: %s", t.param, exc)

        view = self.nl.view()
        ours = {n for n in tunnels if n in view.links and status[n].state != "error"}
        tunnel_oifs = {view.links[n].index for n in set(tunnels) | set(have) if n in view.links}

        raised: set[str] = set()
        for name in sorted(ours):
            t, link = tunnels[name], view.links[name]
            try:
                report.changes += self._addresses(t, link, view.addrs.get(link.index, set()))
                if not link.flags & IFF_UP:
                    self.nl.link_up(link.index)
                    raised.add(name)
                    report.changes += 1
            except NetlinkError as exc:
                status[name].state, status[name].error = "error", f"{t.param}: {exc}"
                log.error("%s: %s", t.param, exc)
        for name in tunnels:
            if name not in view.links and status[name].state != "error":
                status[name].state, status[name].error = "error", f"{tunnels[name].param}: link {name} is missing"

        report.changes += self._pins(tunnels, status, view, tunnel_oifs)

        # One dump per pass (pyroute2 decodes ~0.5-1 ms per message: a second dump of a
        # router's hundreds of links and addresses would double the time to apply a change).
        # Links raised just now count as up (TUN has carrier while the daemon holds it, GRE
        # always); `status` re-reads the flags live.
        for name, st in status.items():
            seen = view.links.get(name)
            if seen is not None:
                st.rx_bytes, st.tx_bytes = seen.rx_bytes, seen.tx_bytes
                if st.state != "error":
                    st.state = "up" if seen.up or name in raised else "down"
        report.tunnels = list(status.values())
        return report

    def _addresses(self, t: Tunnel, link: LinkState, present: set[IPIface]) -> int:
        want = t.addresses()
        changes = 0
        for iface in sorted(present - want, key=str):
            self.nl.addr_del(link.index, iface)
            changes += 1
        for iface in sorted(want - present, key=str):
            self.nl.addr_add(link.index, iface)
            changes += 1
        return changes

    def _pins(
        self, tunnels: dict[str, Tunnel], status: dict[str, TunnelStatus], view: View, tunnel_oifs: set[int]
    ) -> int:
        have = {r.dst: Pin(r.oif, r.gateway) for r in view.routes4 if is_pin(r, self.proto, self.pools)}
        want: dict[ipaddress.IPv4Network, Pin] = {}
        for name, t in sorted(tunnels.items()):
            remote = ipaddress.IPv4Address(t.link.remote)
            hop = underlay_hop(remote, view.routes4, tunnel_oifs, self.proto, self.pools)
            if hop is None:
                if status[name].state != "error":
                    status[name].state = "error"
                    status[name].error = f"{t.param}: no underlay route to remote {remote}"
                continue
            want[ipaddress.IPv4Network(f"{remote}/32")] = hop
        changes = 0
        for dst in sorted(set(have) - set(want)):
            try:
                self.nl.route_del(dst, have[dst], self.proto)
                changes += 1
            except NetlinkError as exc:
                log.error("underlay pin %s: cannot remove: %s", dst, exc)
        for dst, hop in sorted(want.items()):
            if have.get(dst) == hop:
                continue
            try:
                self.nl.route_replace(dst, hop, self.proto)
                changes += 1
            except NetlinkError as exc:
                for st in status.values():
                    if st.remote == str(dst.network_address):
                        st.state, st.error = "error", f"{st.param}: underlay pin {dst}: {exc}"
        return changes


# -- the pyroute2 shim -------------------------------------------------------------------


class PyrouteTunnels:
    """TunnelNetlink on a pyroute2 IPRoute: the only netlink user of the tunnel reconciler."""

    def __init__(self, ipr: IPRoute) -> None:
        self.ipr = ipr

    def view(self) -> View:
        from pyroute2.netlink.exceptions import NetlinkError as _Py

        try:
            links = {}
            for m in self.ipr.get_links():
                st = m.get("stats64") or {}
                links[m.get("ifname")] = LinkState(
                    m.get("ifname"),
                    m["index"],
                    m["flags"],
                    m.get("mtu") or 0,
                    st.get("rx_bytes", 0),
                    st.get("tx_bytes", 0),
                    st.get("rx_packets", 0),
                    st.get("tx_packets", 0),
                )
            addrs: dict[int, set[IPIface]] = {}
            for a in self.ipr.get_addr():
                iface = ipaddress.ip_interface(f"{a.get('address')}/{a['prefixlen']}")
                if iface.version == 6 and iface.ip.is_link_local:
                    continue
                addrs.setdefault(a["index"], set()).add(iface)
            routes = []
            for r in self.ipr.get_routes(family=2, table=MAIN_TABLE):
                if (r.get("table") or r["table"]) != MAIN_TABLE:
                    continue
                dst = ipaddress.IPv4Network(f"{r.get('dst') or '0.0.0.0'}/{r['dst_len']}")
                oif, gw = r.get("oif"), r.get("gateway")
                if oif is None:
                    mp = r.get("multipath") or []
                    if mp:  # ECMP underlay: pin to the first next hop (one path is enough for GRE)
                        oif, gw = mp[0]["oif"], mp[0].get("gateway")
                routes.append(Route(dst, oif, gw, r["proto"], r.get("priority") or 0, r["type"]))
        except (_Py, OSError) as exc:
            raise _nl_error(exc, "dump links, addresses and routes") from exc
        return View(links, addrs, routes)

    def _do(self, request: str, fn: Callable[..., Any], *args: Any, ok: tuple[int, ...] = (), **kwargs: Any) -> None:
        from pyroute2.netlink.exceptions import NetlinkError as _Py

        try:
            fn(*args, **kwargs)
        except _Py as exc:
            if exc.code in ok:
                return
            raise _nl_error(exc, request) from exc

    def link_up(self, index: int) -> None:
        self._do(f"link {index} up", self.ipr.link, "set", index=index, state="up")

    def addr_add(self, index: int, iface: IPIface) -> None:
        kw = {"flags": IFA_F_NODAD} if iface.version == 6 else {}
        self._do(
            f"add {iface}",
            self.ipr.addr,
            "add",
            index=index,
            address=str(iface.ip),
            prefixlen=iface.network.prefixlen,
            ok=(E.EEXIST,),
            **kw,
        )

    def addr_del(self, index: int, iface: IPIface) -> None:
        self._do(
            f"delete {iface}",
            self.ipr.addr,
            "del",
            index=index,
            address=str(iface.ip),
            prefixlen=iface.network.prefixlen,
            ok=(E.EADDRNOTAVAIL, E.ENODEV),
        )

    def route_replace(self, dst: ipaddress.IPv4Network, pin: Pin, proto: int) -> None:
        kw = {"gateway": pin.gateway} if pin.gateway else {"scope": RT_SCOPE_LINK}
        self._do(
            f"route replace {dst}",
            self.ipr.route,
            "replace",
            dst=str(dst),
            oif=pin.oif,
            table=MAIN_TABLE,
            proto=proto,
            **kw,
        )

    def route_del(self, dst: ipaddress.IPv4Network, pin: Pin, proto: int) -> None:
        self._do(
            f"route del {dst}",
            self.ipr.route,
            "del",
            dst=str(dst),
            table=MAIN_TABLE,
            proto=proto,
            ok=(E.ESRCH, E.ENOENT),
        )
