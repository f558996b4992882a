"""Container wiring, the pure model: actual state from the kernel, desired state from Docker, the ordered difference."""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field
from typing import Callable, Iterable, cast

from . import labels as labels_mod
from .allocator import BlockAllocator, Exhausted
from .config import AgentConfig
from .docker_shim import ContainerInfo
from .netlink import KernelView

log = logging.getLogger("overlay_agent.containers")

VETH_PREFIX = "ovc"  # + 12 hex digits of the container id = 15 characters (IFNAMSIZ - 1)
ALIAS_TAG = "overlay-agent"
MESSAGE_MAX = 400  # characters of a problem message in logs and status rows

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Prefix = ipaddress.IPv4Network | ipaddress.IPv6Network


def veth_name(container_id: str) -> str:
    return VETH_PREFIX + container_id[:12]


def encode_alias(container_id: str, ipv4: Address | None, ipv6: Address | None, pid: int = 0) -> str:
    return f"{ALIAS_TAG} {container_id} {ipv4 or '-'} {ipv6 or '-'} {pid}"


def decode_alias(
    text: str | None,
) -> tuple[str, ipaddress.IPv4Address | None, ipaddress.IPv6Address | None, int] | None:
    """(container id, ipv4, ipv6, pid) from a veth alias, or None when it is not one of ours."""
    parts = (text or "").split()
    if len(parts) != 5 or parts[0] != ALIAS_TAG:
        return None
    try:
        v4 = None if parts[2] == "-" else ipaddress.IPv4Address(parts[2])
        v6 = None if parts[3] == "-" else ipaddress.IPv6Address(parts[3])
        pid = int(parts[4])
    except ValueError:
        return None
    return parts[1], v4, v6, pid


def host_prefix(addr: Address) -> Prefix:
    return ipaddress.ip_network(f"{addr}/{addr.max_prefixlen}")


# Make-before-break moves (docs/agent.md "Moves"). bgpd copies a redistributed kernel
# route's metric into the MED (bgpd/bgp_route.c bgp_redistribute_add: attr.med = metric;
# zebra reads it from RTA_PRIORITY), and the routers compare MED across hosts even with
# one ASN per host (`bgp always-compare-med`): the lowest MED is the only best path, and
# multipath needs equal MED. So the newer container's route carries the lower metric:
# once its announcement reaches a router, the router forwards only there, while the old
# container still answers; stopping the old one then loses nothing.
# - Derived from Docker's `Created` (whole seconds: the listing has only those, and the
#   inspect's nanoseconds are cut to match), never from the agent's clock or its start:
#   a restarted agent computes the same metric (no route change, no flap), and a
#   container restart (same container, same Created) does not win back a moved address.
# - Two containers created in the same second tie: equal MED, ECMP as before.
# - Clock skew between hosts shifts the winner by the skew (chrony/Amazon Time Sync keep
#   it far under the one-second resolution).
# - zebra splits a kernel route's priority into distance (top 8 bits) and metric (low 24
#   bits: rt_netlink.c, `distance = (metric >> 24) & 0xFF; metric &= 0x00FFFFFF`), so
#   only values below 2^24 reach bgpd unchanged (seen with FRR 8.4). 2^24 - 2 seconds are
#   194 days: the scale wraps then, and a move whose two containers straddle the wrap
#   picks the older one (that one move is break-before-make, as before this change).
# - Above 0: IPv6 turns priority 0 into 1024.
MOVE_EPOCH = 1_577_836_800  # 2020-01-01T00:00:00Z
MOVE_SPAN = 0xFFFFFE  # metrics 1 .. 2^24 - 2 for moving addresses
STEADY_METRIC = 0xFFFFFF  # anycast and block (auto) addresses: one value on every host, never preferred


def route_metric(created: float, moving: bool) -> int:
    """The host route's metric, and so its MED: lower (preferred) for a newer moving container."""
    if not moving:
        return STEADY_METRIC
    return MOVE_SPAN - (max(0, int(created) - MOVE_EPOCH) % MOVE_SPAN)


# -- model -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Wired:
    """A finished wiring found in the kernel (or made by us)."""

    container_id: str
    veth: str
    ipv4: ipaddress.IPv4Address | None
    ipv6: ipaddress.IPv6Address | None
    # The container process the veth was wired into. A restarted container has a new
    # process and namespace while the old veth may linger: the kernel destroys a dead
    # namespace asynchronously, so a link with our name can belong to the previous run.
    pid: int = 0


@dataclass
class Actual:
    """What the kernel holds that is ours, plus host addresses of others we must not hand out."""

    wired: dict[str, Wired] = field(default_factory=dict)
    strays: set[str] = field(default_factory=set)  # our prefix, no finished alias: half-made
    routes: dict[Prefix, frozenset[str]] = field(default_factory=dict)  # our protocol only
    metrics: dict[Prefix, int] = field(default_factory=dict)  # the metric of each route in `routes`
    # Further routes of ours for a destination at other metrics (an older agent's, or the
    # one a metric change replaced): deleted after the current one is in place.
    superseded: dict[tuple[Prefix, int], frozenset[str]] = field(default_factory=dict)
    foreign: frozenset[Address] = frozenset()  # /32 and /128 routes of other protocols

    def drop_veth(self, veth: str) -> None:
        """The kernel deleted this veth, and with it every route through it."""
        for cid, w in list(self.wired.items()):
            if w.veth == veth:
                del self.wired[cid]
        self.strays.discard(veth)
        for dst, veths in list(self.routes.items()):
            if veth in veths:
                # When a device is unregistered, IPv4 deletes a multipath route with a next
                # hop on it as a whole (fib_sync_down_dev with force), not only that hop.
                del self.routes[dst]
                self.metrics.pop(dst, None)
        for key, veths in list(self.superseded.items()):
            if veth in veths:
                del self.superseded[key]


def actual_from_kernel(view: KernelView, proto: int, owns: Callable[[Address], bool] = lambda addr: True) -> Actual:
    """Our wirings, strays and routes from one kernel view.

    Our route protocol has two writers: this reconciler owns its /32s and /128s inside the
    container pools (`owns`); the tunnel reconciler's underlay pins (tunnel remotes, which
    the plan keeps outside the pools) are not ours to judge, and are left out entirely.
    """
    names = {link.index: link.name for link in view.links}
    act = Actual()
    for link in view.links:
        decoded = decode_alias(link.alias)
        if decoded is None or veth_name(decoded[0]) != link.name:
            act.strays.add(link.name)
            continue
        cid, v4, v6, pid = decoded
        act.wired[cid] = Wired(cid, link.name, v4, v6, pid)
    foreign = set()
    for route in view.routes:
        if route.proto == proto:
            if owns(route.dst.network_address):
                veths = frozenset(names.get(i, f"#{i}") for i in route.oifs)
                have = act.metrics.get(route.dst)
                if have is None or route.metric < have:  # the kernel uses the lowest metric
                    if have is not None:
                        act.superseded[(route.dst, have)] = act.routes[route.dst]
                    act.routes[route.dst] = veths
                    act.metrics[route.dst] = route.metric
                else:
                    act.superseded[(route.dst, route.metric)] = veths
        else:
            foreign.add(route.dst.network_address)
    act.foreign = frozenset(foreign)
    return act


@dataclass(frozen=True)
class Wiring:
    """The desired wiring of one container."""

    container_id: str
    name: str
    veth: str
    ifname: str
    ipv4: ipaddress.IPv4Address | None
    ipv6: ipaddress.IPv6Address | None
    default_routes: bool  # False: the container has another network; route only the pools
    announce: bool
    anycast: bool
    withdrawn_because: str = ""  # why announce is False
    pid: int = 0  # 0 when only a listing (no pid) was seen

    def same_as(self, w: Wired) -> bool:
        same_process = not self.pid or not w.pid or self.pid == w.pid
        return same_process and (self.veth, self.ipv4, self.ipv6) == (w.veth, w.ipv4, w.ipv6)


@dataclass(frozen=True)
class Problem:
    container_id: str
    name: str
    reason: str  # metric label: bad_label, outside_pools, duplicate, host_network, ...
    message: str

    def __post_init__(self) -> None:
        # Messages quote label values and kernel errors; a status row stays readable.
        if len(self.message) > MESSAGE_MAX:
            object.__setattr__(self, "message", self.message[:MESSAGE_MAX] + "...")

    def line(self) -> str:
        return f"container {self.name} ({self.container_id[:12]}): {self.message}"


@dataclass
class Desired:
    wirings: dict[str, Wiring] = field(default_factory=dict)
    routes: dict[Prefix, frozenset[str]] = field(default_factory=dict)
    metrics: dict[Prefix, int] = field(default_factory=dict)  # see route_metric
    problems: dict[str, Problem] = field(default_factory=dict)


def desire(containers: Iterable[ContainerInfo], actual: Actual, cfg: AgentConfig) -> Desired:
    """The pure heart: which containers get which addresses, veths and host routes."""
    out = Desired()
    candidates: list[tuple[ContainerInfo, labels_mod.Request]] = []

    def refuse(c: ContainerInfo, reason: str, message: str) -> None:
        out.problems[c.id] = Problem(c.id, c.name, reason, message)

    # Already-wired containers first (they keep what they have), then by age, then id, so
    # the outcome does not depend on Docker's listing order.
    ordered = sorted(
        (c for c in containers if c.running and labels_mod.opted_in(c.labels)),
        key=lambda c: (c.id not in actual.wired, c.created, c.id),
    )
    for c in ordered:
        try:
            checked = _check(c, cfg)
        except Exception as exc:  # one container's input must never stop the pass
            log.exception("container %s: unexpected error while reading its labels", c.id[:12])
            refuse(c, "bad_label", f"labels could not be read ({type(exc).__name__}: {labels_mod.show(str(exc))})")
            continue
        if isinstance(checked, Problem):
            out.problems[c.id] = checked
        else:
            candidates.append((c, checked))

    # Wired containers keep what they have: their block (auto) addresses are taken before
    # any label is read, so a label cannot claim a wired auto container's address.
    # owners: address -> [(container id, shares it as anycast)].
    owners: dict[Address, list[tuple[str, bool]]] = {}
    for c, req in candidates:
        prev = actual.wired.get(c.id)
        if prev is None:
            continue
        for asked, have, block in ((req.ipv4, prev.ipv4, cfg.block_ipv4), (req.ipv6, prev.ipv6, cfg.block_ipv6)):
            if asked is None and have is not None and block is not None and have in block:
                owners.setdefault(have, []).append((c.id, False))
    # Then explicit addresses: an auto container must never take an address that a
    # labelled container (wired or about to be) asks for.
    accepted: list[tuple[ContainerInfo, labels_mod.Request]] = []
    for c, req in candidates:
        clash = None
        for addr in (req.ipv4, req.ipv6):
            if addr is None:
                continue
            others = [o for o in owners.get(addr, []) if o[0] != c.id]
            if others and not (req.anycast and all(shares for _, shares in others)):
                clash = (addr, others[0][0])
                break
        if clash is not None:
            holder = next(x for x, _ in candidates if x.id == clash[1])
            refuse(
                c,
                "duplicate",
                f"address {clash[0]} is already used by container {holder.name} "
                "on this host (set overlay.anycast=true on both to share it)",
            )
            continue
        for addr in (req.ipv4, req.ipv6):
            if addr is not None:
                owners.setdefault(addr, []).append((c.id, req.anycast))
        accepted.append((c, req))

    used: set[Address] = set(owners) | set(actual.foreign)
    for wired in actual.wired.values():
        used.update(a for a in (wired.ipv4, wired.ipv6) if a is not None)
    alloc4 = BlockAllocator(cfg.block_ipv4, used) if cfg.block_ipv4 else None
    alloc6 = BlockAllocator(cfg.block_ipv6, used) if cfg.block_ipv6 else None

    for c, req in accepted:
        prev = actual.wired.get(c.id)
        try:
            # Each allocator draws from its own family's block.
            v4 = req.ipv4 or cast(
                "ipaddress.IPv4Address | None", _auto(prev.ipv4 if prev else None, alloc4, cfg.block_ipv4)
            )
            v6 = req.ipv6 or cast(
                "ipaddress.IPv6Address | None", _auto(prev.ipv6 if prev else None, alloc6, cfg.block_ipv6)
            )
        except Exhausted as exc:
            refuse(c, "pool_exhausted", str(exc))
            continue
        announce, why = True, ""
        if req.health_withdraw and c.health != "healthy":
            announce = False
            why = f"health {c.health}" if c.health else "no healthcheck defined"
        w = Wiring(
            c.id,
            c.name,
            veth_name(c.id),
            "ovl0" if c.networks else "eth0",
            v4,
            v6,
            default_routes=not c.networks,
            announce=announce,
            anycast=req.anycast,
            withdrawn_because=why,
            pid=c.pid,
        )
        out.wirings[c.id] = w
        if announce:
            for addr, explicit in ((v4, req.ipv4 is not None), (v6, req.ipv6 is not None)):
                if addr is not None:
                    dst = host_prefix(addr)
                    out.routes[dst] = out.routes.get(dst, frozenset()) | {w.veth}
                    metric = route_metric(c.created, explicit and not req.anycast)
                    out.metrics[dst] = min(metric, out.metrics.get(dst, metric))
    return out


def _check(c: ContainerInfo, cfg: AgentConfig) -> labels_mod.Request | Problem:
    """One opted-in container's request, or the Problem that refuses it (its input only)."""
    if c.network_mode == "host":
        return Problem(c.id, c.name, "host_network", "runs in the host network namespace; nothing to wire")
    if c.network_mode.startswith("container:"):
        return Problem(
            c.id,
            c.name,
            "shared_netns",
            f"shares the network namespace of {c.network_mode[10:22]}; label that container instead",
        )
    try:
        req = labels_mod.parse(c.labels)
    except labels_mod.LabelError as exc:
        return Problem(c.id, c.name, exc.reason, str(exc))
    for addr in (req.ipv4, req.ipv6):
        if addr is None:
            continue
        pools = cfg.pools_ipv4 if addr.version == 4 else cfg.pools_ipv6
        if not cfg.in_pools(addr):
            return Problem(
                c.id,
                c.name,
                "outside_pools",
                f"address {addr} is outside the pools ({', '.join(map(str, pools)) or 'none'})",
            )
        block = cfg.block_ipv4 if addr.version == 4 else cfg.block_ipv6
        for net in (*pools, *((block,) if block is not None else ())):
            # The network address of a pool or block (for IPv6 the subnet-router anycast
            # address, RFC 4291 2.6.1) and the IPv4 broadcast address are never handed out by
            # the allocator either: routers and middleboxes treat them specially.
            if (
                addr in net
                and net.num_addresses > 2
                and (addr == net.network_address or (addr.version == 4 and addr == net.broadcast_address))
            ):
                kind = "network" if addr == net.network_address else "broadcast"
                return Problem(c.id, c.name, "bad_label", f"address {addr} is the {kind} address of {net}")
        # Ownership: a host announces its own block and the stack's shared ranges; the
        # routers take nothing else from it (docs/frr.md), so anything else would be a
        # hijack of another host's address, refused here first.
        if cfg.role == "host" and not cfg.may_announce(addr):
            shared = cfg.shared_ipv4 if addr.version == 4 else cfg.shared_ipv6
            return Problem(
                c.id,
                c.name,
                "not_owned",
                f"address {addr} is not this host's to announce: only its "
                f"block {block or 'none'} and the shared ranges "
                f"({', '.join(map(str, shared)) or 'none'})",
            )
    return req


def _auto(previous: Address | None, alloc: BlockAllocator | None, block: Prefix | None) -> Address | None:
    if alloc is None:
        return None
    # Sticky: a wired container keeps the address its veth alias records, as long as it
    # still lies in this host's block.
    if previous is not None and block is not None and previous in block:  # block is None only with alloc
        return previous
    return alloc.allocate()


# -- actions -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RouteDel:
    dst: Prefix


@dataclass(frozen=True)
class Unwire:
    veth: str
    container_id: str | None


@dataclass(frozen=True)
class Wire:
    wiring: Wiring


@dataclass(frozen=True)
class RouteSet:
    dst: Prefix
    veths: frozenset[str]
    metric: int = 0


@dataclass(frozen=True)
class RouteDrop:
    """Delete our route for dst at an old metric, once the route at the new one is in place."""

    dst: Prefix
    metric: int


Action = RouteDel | Unwire | Wire | RouteSet | RouteDrop


def diff(desired: Desired, actual: Actual) -> list[Action]:
    """Ordered changes: withdraw routes first (fast withdraw), then links, then new routes.

    A route that only loses next hops (an anycast address on two containers, one stops)
    is replaced before the leaving veth is deleted, so the survivor is never withdrawn.
    A route whose metric changes is added at the new metric before the old one is dropped
    (the kernel keeps both: it keys routes by destination and priority).
    """
    actions: list[Action] = []
    for dst in sorted(actual.routes, key=str):
        if dst not in desired.routes:
            actions.append(RouteDel(dst))

    def route_set(dst: Prefix, veths: frozenset[str]) -> None:
        metric = desired.metrics.get(dst, 0)
        actions.append(RouteSet(dst, veths, metric))
        old = actual.metrics.get(dst)
        if old is not None and old != metric:
            actions.append(RouteDrop(dst, old))

    def differs(dst: Prefix, veths: frozenset[str]) -> bool:
        return actual.routes.get(dst) != veths or actual.metrics.get(dst) != desired.metrics.get(dst, 0)

    rewire = {cid for cid, w in desired.wirings.items() if cid in actual.wired and not w.same_as(actual.wired[cid])}
    staying = {w.veth for cid, w in actual.wired.items() if cid in desired.wirings and cid not in rewire}
    early = set()
    for dst, veths in sorted(desired.routes.items(), key=lambda kv: str(kv[0])):
        have = actual.routes.get(dst)
        if have is not None and differs(dst, veths) and veths <= staying:
            route_set(dst, veths)
            early.add(dst)
    for cid, wired in sorted(actual.wired.items()):
        if cid not in desired.wirings or cid in rewire:
            actions.append(Unwire(wired.veth, cid))
    for veth in sorted(actual.strays):
        actions.append(Unwire(veth, None))
    for cid, w in sorted(desired.wirings.items()):
        if cid not in actual.wired or cid in rewire:
            actions.append(Wire(w))
    gone = {actual.wired[c].veth for c in rewire} | set(actual.strays)
    for dst, veths in sorted(desired.routes.items(), key=lambda kv: str(kv[0])):
        if dst not in early and (differs(dst, veths) or veths & gone):
            route_set(dst, veths)
    for dst, metric in sorted(actual.superseded, key=str):
        actions.append(RouteDrop(dst, metric))
    return actions
