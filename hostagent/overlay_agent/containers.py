"""Container wiring reconciler: desired state from Docker, actual state from the kernel, apply the difference.

Hazards (each handled below, and why):
- Docker unreachable (daemon restart, live-restore or not): an empty or failed listing
  must not read as "no containers", or every route would be withdrawn. A failed listing
  skips the pass; only a successful listing is the truth.
- Agent restart with containers running: the kernel is the state. Every finished wiring
  carries an alias on its host veth ("overlay-agent <id> <ipv4> <ipv6>") and every route
  carries our protocol, so a new process computes the same desired state and changes
  nothing: no withdraw, no flap.
- Ownership: we delete only routes carrying our route protocol and only veths with our
  name prefix. A route of another protocol on one of our prefixes is left alone (and its
  address is never allocated).
- A container's namespace dies with its last process; the kernel then deletes the veth
  and every route through it. Our cached view can go stale that way: events re-check the
  container's veth in the kernel, and the periodic full resync re-reads everything.
- A container can exit between its start event and our wiring (its pid is gone): that is
  reported as "exited" and the half-made veth is removed.
- Bad input (labels, addresses outside the pools, duplicates without anycast, host or
  shared network namespaces) is refused for that container only, with one log line, a
  metric and a status entry; all other containers are reconciled as usual.
- Duplicates: when two containers on this host claim the same address, the one already
  wired keeps it (then the older one); with overlay.anycast=true on both, the host route
  gets both veths as ECMP next hops.
- Health-gated routes (overlay.health=withdraw): the veth and addresses stay, only the
  host route follows Docker's health status, so FRR withdraws and re-announces.
- Moves: the newest location wins. A host route's metric (kernel priority) becomes its
  MED in FRR's redistribution, and the routers prefer the lower MED across hosts, so an
  explicit, non-anycast address gets a metric that falls with its container's creation
  time (route_metric); anycast and block addresses get one fixed metric and stay ECMP.
  The metric comes from Docker's state only, so a restarted agent computes the same one.
"""

from __future__ import annotations

import ipaddress
import logging
import queue
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Protocol

from . import labels as labels_mod
from .allocator import BlockAllocator, Exhausted
from .config import AgentConfig
from .docker_shim import ContainerInfo, Event
from .errors import AgentError, DockerError, NetlinkError
from .metrics import Metrics
from .netlink import ContainerGone, KernelView, WireSpec
from .fsutil import atomic_write_json

log = logging.getLogger("overlay_agent.containers")

EXIT_MEMORY = 300.0  # seconds an "exited before it was wired" stays in status
VETH_PREFIX = "ovc"  # + 12 hex digits of the container id = 15 characters (IFNAMSIZ - 1)
ALIAS_TAG = "overlay-agent"
MESSAGE_MAX = 400  # characters of a problem message in logs and status rows

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Prefix = ipaddress.IPv4Network | ipaddress.IPv6Network


def veth_name(container_id: str) -> str:
    return VETH_PREFIX + container_id[:12]


def encode_alias(container_id: str, ipv4: Address | None, ipv6: Address | None, pid: int = 0) -> str:
    return f"{ALIAS_TAG} {container_id} {ipv4 or '-'} {ipv6 or '-'} {pid}"


def decode_alias(text: str | None) -> tuple[str, Address | None, Address | None, int] | None:
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

    def __post_init__(self):
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
    for w in actual.wired.values():
        used.update(a for a in (w.ipv4, w.ipv6) if a is not None)
    alloc4 = BlockAllocator(cfg.block_ipv4, used) if cfg.block_ipv4 else None
    alloc6 = BlockAllocator(cfg.block_ipv6, used) if cfg.block_ipv6 else None

    for c, req in accepted:
        prev = actual.wired.get(c.id)
        try:
            v4 = req.ipv4 or _auto(prev.ipv4 if prev else None, alloc4, cfg.block_ipv4)
            v6 = req.ipv6 or _auto(prev.ipv6 if prev else None, alloc6, cfg.block_ipv6)
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


def _auto(previous: Address | None, alloc: BlockAllocator | None, block) -> Address | None:
    if alloc is None:
        return None
    # Sticky: a wired container keeps the address its veth alias records, as long as it
    # still lies in this host's block.
    if previous is not None and previous in block:
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
    for cid, w in sorted(actual.wired.items()):
        if cid not in desired.wirings or cid in rewire:
            actions.append(Unwire(w.veth, cid))
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


# -- shims (injected; the unit tests use in-memory fakes) ---------------------------------


class NetlinkShim(Protocol):
    def snapshot(self, prefix: str) -> KernelView: ...
    def link_index(self, name: str) -> int | None: ...
    def wire(self, spec: WireSpec, pid: int) -> int: ...
    def unwire(self, veth: str) -> bool: ...
    def route_set(self, dst: Prefix, veths: Iterable[str], proto: int) -> None: ...
    def route_del(self, dst: Prefix, proto: int) -> bool: ...


class GuardShim(Protocol):
    def ensure(self) -> None: ...
    def elements(self) -> set: ...
    def update(self, add: Iterable, remove: Iterable) -> None: ...
    def begin_update(self, add: Iterable, remove: Iterable) -> Callable[[], None]: ...


class DockerShimLike(Protocol):
    def list_running(self) -> list[ContainerInfo]: ...
    def inspect(self, container_id: str) -> ContainerInfo | None: ...


# -- the reconciler ----------------------------------------------------------------------


class ContainerReconciler:
    """Owns the host's container veths and the routes of our protocol inside the pools (the
    tunnel pins outside them are the pairing sync's). Single-threaded apply."""

    name = "containers"

    def __init__(
        self,
        cfg: AgentConfig,
        docker: DockerShimLike,
        netlink: NetlinkShim,
        metrics: Metrics | None = None,
        status_path: str | Path | None = None,
    ):
        self.cfg = cfg
        self.docker = docker
        self.netlink = netlink
        self.metrics = metrics or Metrics()
        self.status_path = Path(status_path) if status_path else None
        self.proto = cfg.settings.route_protocol
        self.containers: dict[str, ContainerInfo] = {}
        self.actual: Actual | None = None
        self.desired = Desired()
        self.apply_problems: dict[str, Problem] = {}
        # Containers that exited before we could wire them: gone from Docker's running set,
        # so kept here (with the time) to stay visible in `status` for EXIT_MEMORY seconds.
        self.exits: dict[str, tuple[Problem, float]] = {}
        self._reported: set[tuple[str, str]] = set()
        self._neigh_limit = 0
        self._neigh_warned = False
        self._started_ns: dict[str, int] = {}  # container id -> Docker start event time
        self.last_resync: float = 0.0
        self.events: "queue.Queue[Event | AgentConfig | str]" = queue.Queue()
        # Anti-spoofing (guard.NftGuard, or None to leave it off): (veth, address) pairs a
        # container may send from; None in _guard_have means "read it from nft next time".
        self.guard: GuardShim | None = None
        self._guard_have: set | None = None
        self._guard_error: str | None = None
        self._guard_backoff = False

    # -- passes ----------------------------------------------------------------------
    def resync(self) -> bool:
        """Full pass: list Docker, read the kernel, apply. False (and nothing changed) if Docker failed."""
        t0 = time.perf_counter()
        try:
            listing = self.docker.list_running()
        except DockerError as exc:
            # Never treat "cannot ask" as "nothing runs": that would withdraw every route.
            log.warning("resync skipped: %s", exc, extra={"reason": "docker_unavailable"})
            self.metrics.resyncs.labels("docker_unavailable").inc()
            return False
        try:
            view = self.netlink.snapshot(VETH_PREFIX)
        except NetlinkError as exc:
            log.error("resync skipped: %s", exc, extra={"reason": "netlink"})
            self.metrics.resyncs.labels("netlink_error").inc()
            return False
        self.containers = {c.id: c for c in listing if c.running}
        self.actual = actual_from_kernel(view, self.proto, self.cfg.in_pools)
        self._guard_have = None  # re-read (and re-assert the table) on a full pass
        self._guard_backoff = False  # after a failure, only full passes try nft again
        self._reconcile()
        self.last_resync = time.monotonic()
        self.metrics.resync_seconds.observe(time.perf_counter() - t0)
        self.metrics.resyncs.labels("ok").inc()
        return True

    def handle_events(self, events: Iterable[Event]) -> None:
        """Fast path: refresh the named containers from Docker and the kernel, then reconcile."""
        if self.actual is None:
            # No full picture yet; an event-driven pass could mistake unknown for absent.
            if not self.resync():
                return
        touched = False
        for ev in events:
            touched |= self._refresh(ev)
        if touched:
            self._reconcile()

    def _refresh(self, ev: Event) -> bool:
        cid = ev.container_id
        known = cid in self.containers or (self.actual is not None and cid in self.actual.wired)
        if not known and not labels_mod.opted_in(ev.labels):
            # Event attributes carry the container's labels: skip others without asking Docker.
            return False
        if ev.action in ("die", "destroy"):
            # The process is gone: withdraw now, without a round trip to Docker.
            self.containers.pop(cid, None)
        else:
            try:
                info = self.docker.inspect(cid)
            except DockerError as exc:
                log.warning("event %s for %s not handled: %s", ev.action, cid[:12], exc)
                return False
            if info is None or not info.running:
                self.containers.pop(cid, None)
                if ev.action == "start" and cid not in self.actual.wired:
                    name = info.name if info else ev.labels.get("name", cid[:12])
                    self._exited(cid, name, "exited before it was wired")
            else:
                self.containers[cid] = info
                if ev.action == "start":
                    self._started_ns[cid] = ev.time_ns or time.time_ns()
        assert self.actual is not None
        wired = self.actual.wired.get(cid)
        if wired is not None and self.netlink.link_index(wired.veth) is None:
            # The namespace died and took the veth and its routes (docker restart, kill).
            self.actual.drop_veth(wired.veth)
        return True

    # -- reconcile and apply -----------------------------------------------------------
    def _reconcile(self) -> None:
        assert self.actual is not None
        for cid in list(self.apply_problems):
            if cid not in self.containers:
                del self.apply_problems[cid]
        self.desired = desire(self.containers.values(), self.actual, self.cfg)
        self._apply(diff(self.desired, self.actual))
        self._report()

    def _apply(self, actions: list[Action]) -> None:
        act = self.actual
        assert act is not None
        failed: set[str] = set()
        # A new container may send only once its sources are allowed: allow them before its
        # host route brings traffic (its replies would be dropped otherwise). The nft run is
        # started before the wiring and awaited at the first route, so its cost (a process
        # start, milliseconds to tens of them on a loaded host) overlaps the netlink work.
        pending = self._guard_begin([a.wiring for a in actions if isinstance(a, Wire)])
        for a in actions:
            if pending is not None and isinstance(a, RouteSet):
                self._guard_end(pending)
                pending = None
            try:
                if isinstance(a, RouteDel):
                    self.netlink.route_del(a.dst, self.proto, act.metrics.get(a.dst))
                    act.routes.pop(a.dst, None)
                    act.metrics.pop(a.dst, None)
                    self.metrics.netlink_changes.labels("route_del").inc()
                elif isinstance(a, RouteDrop):
                    # Only once the route at the new metric is in place (the set may have
                    # been skipped: its veth failed to wire), never the one in use.
                    if (a.dst, a.metric) in act.superseded and act.metrics.get(a.dst) != a.metric:
                        self.netlink.route_del(a.dst, self.proto, a.metric)
                        del act.superseded[(a.dst, a.metric)]
                        self.metrics.netlink_changes.labels("route_del").inc()
                elif isinstance(a, Unwire):
                    # Removing the veth takes the peer and every route through it with it.
                    self.netlink.unwire(a.veth)
                    act.drop_veth(a.veth)
                    self.metrics.netlink_changes.labels("unwire").inc()
                    if a.container_id:
                        log.info(
                            "unwired container %s",
                            a.container_id[:12],
                            extra={"container": a.container_id[:12], "veth": a.veth},
                        )
                elif isinstance(a, Wire):
                    if not self._wire(a.wiring):
                        failed.add(a.wiring.veth)
                elif isinstance(a, RouteSet):
                    veths = a.veths - failed
                    veths = frozenset(v for v in veths if v in {w.veth for w in act.wired.values()})
                    if not veths:
                        continue
                    old = act.metrics.get(a.dst)
                    if act.routes.get(a.dst) == veths and old == a.metric and not (a.veths & failed):
                        continue
                    self.netlink.route_set(a.dst, veths, self.proto, a.metric)
                    if old is not None and old != a.metric:
                        act.superseded[(a.dst, old)] = act.routes[a.dst]
                    act.routes[a.dst] = veths
                    act.metrics[a.dst] = a.metric
                    self.metrics.netlink_changes.labels("route_set").inc()
            except NetlinkError as exc:
                # One failed change must not stop the others; the next resync retries.
                log.error(
                    "netlink change %s failed: %s",
                    type(a).__name__,
                    exc,
                    extra={"reason": "netlink", "errno": exc.errno},
                )
                self.metrics.errors.labels("netlink").inc()
            except Exception:  # one change must not stop the pass (see _wire)
                log.exception("netlink change %s failed unexpectedly", a)
                self.metrics.errors.labels("netlink").inc()
        if pending is not None:
            self._guard_end(pending)
        self._sync_guard()  # removals, and elements of wirings that failed

    def _guard_begin(self, wirings: list[Wiring]):
        """Start adding the sources of containers about to be wired; (elements, waiter) or None."""
        if self.guard is None or not wirings or self._guard_backoff:
            return None
        if self._guard_have is None:
            try:  # a full pass re-asserts the table and re-reads the sets first
                self.guard.ensure()
                self._guard_have = self.guard.elements()
            except Exception:  # noqa: BLE001 - _sync_guard at the end of the pass reports and retries
                return None
        add = {(w.veth, a) for w in wirings for a in (w.ipv4, w.ipv6) if a is not None} - self._guard_have
        if not add:
            return None
        try:
            return add, self.guard.begin_update(add, ())
        except Exception as exc:  # noqa: BLE001 - see _sync_guard
            log.warning("anti-spoofing table: %s", exc, extra={"reason": "guard"})
            self._guard_have = None
            return None

    def _guard_end(self, pending) -> None:
        add, wait = pending
        try:
            wait()
        except Exception as exc:  # noqa: BLE001 - _sync_guard at the end of the pass retries
            log.warning("anti-spoofing table: %s", exc, extra={"reason": "guard"})
            self._guard_have = None
            return
        if self._guard_have is not None:
            self._guard_have |= add
            self.metrics.netlink_changes.labels("guard").inc()

    def _sync_guard(self) -> None:
        """Make the anti-spoofing sets hold exactly the (veth, address) pairs of wired containers."""
        if self.guard is None or self.actual is None or self._guard_backoff:
            return
        want = {(w.veth, a) for w in self.actual.wired.values() for a in (w.ipv4, w.ipv6) if a is not None}
        for attempt in (1, 2):
            try:
                if self._guard_have is None:
                    self.guard.ensure()
                    self._guard_have = self.guard.elements()
                add, remove = want - self._guard_have, self._guard_have - want
                if add or remove:
                    self.guard.update(add, remove)
                    self.metrics.netlink_changes.labels("guard").inc()
                self._guard_have = want
                self._guard_error = None
                return
            except Exception as exc:  # noqa: BLE001 - nft missing or refusing must not stop the wiring
                self._guard_have = None  # our picture may be wrong: read it again and retry once
                if attempt == 2:
                    if str(exc) != self._guard_error:
                        log.error("anti-spoofing table: %s (retried at the next pass)", exc, extra={"reason": "guard"})
                    self._guard_error = str(exc)
                    self._guard_backoff = True  # a missing or broken nft must not slow every event pass
                    self.metrics.errors.labels("guard").inc()

    def _wire(self, w: Wiring) -> bool:
        info = self.containers.get(w.container_id)
        pid = info.pid if info else 0
        if not pid:
            try:
                fresh = self.docker.inspect(w.container_id)
            except DockerError as exc:
                log.warning("cannot wire %s yet: %s", w.name, exc)
                return False
            if fresh is None or not fresh.running or not fresh.pid:
                self._exited(w.container_id, w.name, "exited before it was wired")
                self.containers.pop(w.container_id, None)
                return False
            self.containers[w.container_id] = fresh
            pid = fresh.pid
        cfg = self.cfg
        spec = WireSpec(
            veth=w.veth,
            ifname=w.ifname,
            ipv4=w.ipv4,
            ipv6=w.ipv6,
            via4=("0.0.0.0/0",) if w.default_routes else tuple(map(str, cfg.pools_ipv4)),
            via6=("::/0",) if w.default_routes else tuple(map(str, cfg.pools_ipv6)),
            alias=encode_alias(w.container_id, w.ipv4, w.ipv6, pid),
        )
        try:
            self.netlink.wire(spec, pid)
        except ContainerGone as exc:
            self._exited(w.container_id, w.name, f"exited before it was wired ({exc})")
            return False
        except NetlinkError as exc:
            self._fail(w, "wiring_failed", f"wiring failed: {exc}")
            return False
        except Exception as exc:  # see below
            # Anything else (an encoding error in pyroute2, an OSError from a sysctl) is this
            # container's failure, never the reconciler's: a crash here would restart the
            # agent into the same container, in a loop, and no other container would be wired.
            log.exception("wiring %s (%s) raised", w.name, w.container_id[:12])
            self._fail(w, "wiring_failed", f"wiring failed: {type(exc).__name__}: {labels_mod.show(str(exc))}")
            return False
        assert self.actual is not None
        self.actual.wired[w.container_id] = Wired(w.container_id, w.veth, w.ipv4, w.ipv6, pid)
        self.apply_problems.pop(w.container_id, None)
        self.metrics.netlink_changes.labels("wire").inc()
        log.info(
            "wired container %s: %s %s via %s",
            w.name,
            w.ipv4 or "-",
            w.ipv6 or "-",
            w.veth,
            extra={
                "container": w.name,
                "id": w.container_id[:12],
                "ipv4": str(w.ipv4 or ""),
                "ipv6": str(w.ipv6 or ""),
                "veth": w.veth,
                "announce": w.announce,
            },
        )
        return True

    def _fail(self, w: Wiring, reason: str, message: str) -> None:
        self.apply_problems[w.container_id] = Problem(w.container_id, w.name, reason, message)

    def _exited(self, cid: str, name: str, message: str) -> None:
        self.exits[cid] = (Problem(cid, name, "exited", message), time.monotonic())

    def _problems(self) -> dict[str, Problem]:
        now = time.monotonic()
        for cid, (_, at) in list(self.exits.items()):
            if now - at > EXIT_MEMORY or (self.actual is not None and cid in self.actual.wired):
                del self.exits[cid]
        return {**{cid: p for cid, (p, _) in self.exits.items()}, **self.desired.problems, **self.apply_problems}

    def _report(self) -> None:
        act = self.actual
        assert act is not None
        problems = self._problems()
        current = {(cid, p.reason) for cid, p in problems.items()}
        for cid, p in problems.items():
            if (cid, p.reason) not in self._reported:
                log.warning(p.line(), extra={"container": p.name, "id": cid[:12], "reason": p.reason})
                self.metrics.errors.labels(p.reason).inc()
        self._reported = current
        self.metrics.containers_wired.set(len(act.wired))
        self._check_neighbour_table(len(act.wired))
        v4 = sum(1 for d in act.routes if d.version == 4)
        self.metrics.routes_installed.labels("ipv4").set(v4)
        self.metrics.routes_installed.labels("ipv6").set(len(act.routes) - v4)
        announced = 0
        now = time.time_ns()
        for cid, w in self.desired.wirings.items():
            if cid not in act.wired:
                continue
            routed = self._routed(w)
            announced += routed and w.announce
            started = self._started_ns.pop(cid, None)
            if started is not None and (routed or not w.announce):
                self.metrics.wiring_latency.observe(max(0, now - started) / 1e9)
        for cid in list(self._started_ns):
            if cid not in self.desired.wirings:
                del self._started_ns[cid]
        self.metrics.containers_announced.set(announced)
        if self.status_path is not None:
            self._write_status(problems)

    def _check_neighbour_table(self, wired: int) -> None:
        # The kernel's ARP and ND tables are shared by all namespaces of the host and every
        # container costs two entries (host -> container, container -> 169.254.1.1). Beyond
        # gc_thresh3 (default 1024) new entries fail ("neighbor table overflow") and
        # containers become unreachable. The limit is host setup (user data); say it loudly.
        need = wired * 2 + 64
        if self._neigh_warned or need <= self._neigh_limit:
            return
        try:
            self._neigh_limit = int(Path("/proc/sys/net/ipv4/neigh/default/gc_thresh3").read_text())
        except (OSError, ValueError):
            self._neigh_limit = 1 << 62  # only the initial namespace has it: nothing to check
            return
        if need > self._neigh_limit:
            self._neigh_warned = True
            log.warning(
                "%d containers need about %d neighbour entries but net.ipv4.neigh.default.gc_thresh3 "
                "is %d (and likewise ipv6): raise gc_thresh1/2/3 or containers become unreachable",
                wired,
                need,
                self._neigh_limit,
                extra={"reason": "neighbour_table"},
            )

    def _routed(self, w: Wiring) -> bool:
        act = self.actual
        assert act is not None
        return all(w.veth in act.routes.get(host_prefix(a), ()) for a in (w.ipv4, w.ipv6) if a is not None)

    def status_rows(self) -> list[dict]:
        """One row per opted-in container: what it has, and whether it is announced."""
        act = self.actual or Actual()
        rows = []
        problems = self._problems()
        for cid, w in sorted(self.desired.wirings.items(), key=lambda kv: kv[1].name):
            if cid in problems:
                continue
            wired = cid in act.wired
            routed = wired and self._routed(w)
            if not wired:
                state = "pending"
            elif not w.announce:
                state = f"withdrawn ({w.withdrawn_because})"
            else:
                state = "routed" if routed else "route missing"
            rows.append(
                {
                    "id": cid[:12],
                    "name": w.name,
                    "ipv4": str(w.ipv4 or ""),
                    "ipv6": str(w.ipv6 or ""),
                    "veth": w.veth,
                    "wired": wired,
                    "route": routed,
                    "announce": w.announce,
                    "anycast": w.anycast,
                    "state": state,
                    "reason": "",
                }
            )
        for cid, p in sorted(problems.items(), key=lambda kv: kv[1].name):
            rows.append(
                {
                    "id": cid[:12],
                    "name": p.name,
                    "ipv4": "",
                    "ipv6": "",
                    "veth": "",
                    "wired": False,
                    "route": False,
                    "announce": False,
                    "anycast": False,
                    "state": "error",
                    "reason": p.reason,
                    "error": p.message,
                }
            )
        return rows

    def _write_status(self, problems: dict[str, Problem]) -> None:
        doc = {
            "generated": time.time(),
            "instance": self.cfg.instance,
            "route_protocol": self.proto,
            "last_resync_age": round(time.monotonic() - self.last_resync, 3) if self.last_resync else None,
            "containers": self.status_rows(),
        }
        assert self.status_path is not None
        try:
            atomic_write_json(self.status_path, doc, indent=1)  # `status` never reads half a file
        except OSError as exc:
            log.warning("cannot write status file %s: %s", self.status_path, exc)

    def update_config(self, cfg: AgentConfig) -> None:
        """A new `agent` document (from the pairing sync's thread): applied by the loop at its next pass."""
        self.events.put(cfg)

    def _take_config(self, cfg: AgentConfig) -> None:
        if cfg.settings.route_protocol != self.proto:
            # Our routes are found by their protocol: switching it live would orphan every
            # route installed so far. A restart adopts the new number (and a resync then
            # removes nothing it does not own).
            log.error(
                "agent parameter changes the route protocol %d -> %d: restart the agent to apply it",
                self.proto,
                cfg.settings.route_protocol,
            )
            cfg = replace(cfg, settings=replace(cfg.settings, route_protocol=self.proto))
        if cfg != self.cfg:
            log.info("agent configuration changed (pools, block or settings): full resync")
            self.cfg = cfg

    # -- loop ------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Event fast path plus a periodic full resync, until `stop` is set."""
        interval = self.cfg.settings.resync_interval
        self.resync()
        while not stop.is_set():
            wait = max(0.0, self.last_resync + interval - time.monotonic()) if self.last_resync else 1.0
            batch: list[Event] = []
            want_resync = False
            try:
                item = self.events.get(timeout=min(wait, 1.0))
                # Drain what is queued: a burst of starts becomes one pass.
                while True:
                    if isinstance(item, Event):
                        batch.append(item)
                    elif isinstance(item, AgentConfig):
                        self._take_config(item)
                        want_resync = True
                    else:
                        want_resync = True  # "resync": the event stream (re)connected
                    item = self.events.get_nowait()
            except queue.Empty:
                pass
            try:
                if batch:
                    self.handle_events(batch)
                if (
                    want_resync
                    or (self.last_resync == 0.0 and not batch)
                    or time.monotonic() >= self.last_resync + interval
                ):
                    if not self.resync() and not want_resync:
                        # Docker is down: try again soon rather than after a full interval.
                        self.last_resync = time.monotonic() - interval + 2.0
            except AgentError as exc:
                log.error("container pass failed: %s", exc)


def pump_events(docker, sink: "queue.Queue", stop: threading.Event, metrics: Metrics | None = None) -> None:
    """Feed Docker events into `sink` until `stop`; after every (re)connect, ask for a full resync.

    Events missed while disconnected (a daemon restart) are covered by that resync.
    """
    backoff = 0.2
    while not stop.is_set():
        try:
            stream = docker.events()
            if metrics:
                metrics.docker_up.set(1)
            sink.put("resync")
            backoff = 0.2
            for ev in stream:
                sink.put(ev)
                if stop.is_set():
                    return
            raise DockerError("event stream ended")
        except DockerError as exc:
            if metrics:
                metrics.docker_up.set(0)
            log.warning("docker events: %s; reconnecting", exc, extra={"reason": "docker_events"})
            stop.wait(backoff)
            backoff = min(backoff * 2, 5.0)
