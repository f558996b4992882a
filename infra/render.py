"""Pure rendering of FRR configs and cloud-config user data from the OverlayPlan (jinja2 templates in userdata/)."""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import jinja2

from overlay_agent import schemas
from overlay_agent.errors import ConfigError

from infra import placeholders
from infra.config import MAX_POOLS, BgpConfig
from infra.plan.model import Host, OverlayPlan, Pairing, Router

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "userdata"

# The literal text the `frr` parameter carries where the BGP password goes; the agent
# substitutes the SecureString on the instance (infra/placeholders.py says why this form).
# Emitted through a context value, so the template never holds it.
PASSWORD_PLACEHOLDER = placeholders.BGP_PASSWORD
# The on-prem sessions' own password (review F10): only routers and the datacenter's side
# carry it, so a docker host never holds the datacenter peering key.
ONPREM_PASSWORD_PLACEHOLDER = placeholders.ONPREM_BGP_PASSWORD
ROUTE_PROTOCOL_NAME = "overlay"
# ECMP fan-out: 2-8 routers per stack, and anycast addresses on up to 16 hosts.
MAX_PATHS = 16
# bgpd's `bgp listen limit` accepts 1-65535 (default 100, too few for big stacks).
LISTEN_LIMIT_MAX = 65535
# After a max-prefix shutdown, bgpd re-opens the session after this many minutes.
MAX_PREFIX_RESTART_MIN = 5
# Graceful restart timers used only when overlay:bgp.gracefulRestart is true.
GR_RESTART_TIME = 120
GR_STALEPATH_TIME = 360
# EC2 refuses user data over 16 KB (before base64).
USER_DATA_LIMIT = 16384
AGENT_VENV = "/opt/overlay-agent"
AGENT_ETC = "/etc/overlay-agent"
FRR_DAEMONS = ("zebra", "bgpd", "bfdd", "staticd")
# EC2's Debian kernel has ip_gre (CONFIG_NET_IPGRE=m): instances use kernel GRE, proven on
# that kernel by the lab's VMs (tests/vm). "userspace" is for kernels without it.
GRE_BACKEND = "kernel"
# Debian packages each role needs from the image (image/packages.txt, baked by
# image/provision.sh); overlay-agent-install refuses to go on without them, and a unit test
# checks that the recipe lists them (apparmor: Debian's kernel enables AppArmor, and Docker
# refuses to start containers when it cannot load its docker-default profile).
PACKAGES = {
    "router": ("frr", "frr-pythontools", "nftables", "python3-venv", "awscli"),
    # nftables: the containers' egress NAT (docs/egress.md) and the agent's anti-spoofing
    # table for container source addresses (hostagent/overlay_agent/guard.py)
    "host": ("frr", "frr-pythontools", "docker.io", "apparmor", "python3-venv", "awscli", "nftables"),
}
# The line of a router's frr.conf (routeServer mode) where the agent puts one
# `neighbor <endpoint> peer-group ROUTE-SERVER` per route server endpoint: AWS assigns the
# endpoints' addresses at creation, so the program publishes them in the router's
# `route-server` parameter and the text here stays known before anything exists.
# hostagent/overlay_agent/frr.py carries the same string (tests/unit check they match).
ROUTE_SERVER_MARKER = "! route-server neighbors: filled in by the agent from the route-server parameter"
# Where the agent puts the import filters' bogon entries (and, in a router's IPv6 on-prem
# filter, the VPC's IPv6 block, which AWS assigns at creation and the `vpc` parameter
# carries): one marker line per prefix-list, e.g. `! agent: ip prefix-list ONPREM-V4 seq
# 500+ deny bogons`. The list is fixed and ships with the agent
# (hostagent/overlay_agent/frr.py, BOGONS_V4/V6; docs/frr.md lists it), so the `frr`
# parameter, within bytes of SSM's 8 KB on a router with 7 on-prem peers, carries one
# line per list instead of ten. tests/unit pin the format to the agent's FILTER_MARKER.
BOGONS_SEQ = 500


def bogons_marker(family: str, prefix_list: str, *, vpc_ipv6: bool = False) -> str:
    """The marker line for `prefix_list` (family "ip" or "ipv6")."""
    _check(family in ("ip", "ipv6"), "family", family, "must be 'ip' or 'ipv6'")
    _check(not vpc_ipv6 or family == "ipv6", "vpc_ipv6", vpc_ipv6, "the VPC's IPv6 block goes in an ipv6 list")
    return (
        f"! agent: {family} prefix-list {prefix_list} seq {BOGONS_SEQ}+ deny bogons{', vpc-ipv6' if vpc_ipv6 else ''}"
    )


_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_KEY = re.compile(r"^[A-Za-z0-9!_.*'()/-]+$")


class RenderError(ValueError):
    """A context or argument the templates cannot render; the message names the field."""


# -- contexts -----------------------------------------------------------------------


def _check(ok: bool, field_name: str, value: Any, reason: str) -> None:
    if not ok:
        raise RenderError(f"{field_name} = {value!r}: {reason}")


def _check_addr(field_name: str, value: Any, version: int) -> None:
    try:
        ok = ipaddress.ip_address(value).version == version
    except ValueError:
        ok = False
    _check(isinstance(value, str) and ok, field_name, value, f"must be an IPv{version} address string")


def _check_net(field_name: str, value: Any, version: int) -> None:
    try:
        ok = ipaddress.ip_network(value, strict=True).version == version
    except ValueError:
        ok = False
    _check(isinstance(value, str) and ok, field_name, value, f"must be an IPv{version} network string")


@dataclass(frozen=True)
class BgpSettings:
    """The stack's BGP settings as infra/config.py validated them (`config`: timers, BFD,
    max-prefix, graceful restart) and what the templates add: limits, FRR's graceful-restart
    timers and the password placeholders."""

    config: BgpConfig
    max_prefix_restart: int = MAX_PREFIX_RESTART_MIN
    max_paths: int = MAX_PATHS
    gr_restart_time: int = GR_RESTART_TIME
    gr_stalepath_time: int = GR_STALEPATH_TIME
    password: str = PASSWORD_PLACEHOLDER  # always the placeholder: the real password never reaches a template
    onprem_password: str = ONPREM_PASSWORD_PLACEHOLDER  # the on-prem sessions' placeholder

    def __post_init__(self) -> None:
        # The templates' own invariants (the config's values were checked by infra/config.py).
        # FRR leaves its default graceful-restart timers out of its running config, and the
        # templates write them only as comments: other values would need the commands.
        _check(
            (self.gr_restart_time, self.gr_stalepath_time) == (120, 360),
            "bgp.gr_restart_time/gr_stalepath_time",
            (self.gr_restart_time, self.gr_stalepath_time),
            "must be 120 and 360 (FRR's defaults, which the templates assume)",
        )
        for name, placeholder in (("password", PASSWORD_PLACEHOLDER), ("onprem_password", ONPREM_PASSWORD_PLACEHOLDER)):
            _check(
                getattr(self, name) == placeholder,
                f"bgp.{name}",
                "<hidden>",
                f"must be the placeholder {placeholder} (the agent fills in the secret)",
            )


@dataclass(frozen=True)
class Policy:
    """The prefixes every filter is built from (strings, as FRR writes them)."""

    pools_v4: tuple[str, ...]
    pools_v6: tuple[str, ...]
    tunnel_v4: str
    tunnel_v6: str | None
    vpc_cidr: str
    announce: str  # to on-prem: "aggregates" (the pools) or "specifics" (/32s and /128s)
    # Inside the pools: what any host may announce (moves, anycast); the rest of the pools
    # only from the host whose block it is (per-host filters, rendered by the router's agent).
    shared_v4: tuple[str, ...] = ()
    shared_v6: tuple[str, ...] = ()

    @property
    def ipv6(self) -> bool:
        return bool(self.pools_v6)


@dataclass(frozen=True)
class OnPremNeighbor:
    """A router's explicit neighbor across the internet, on the pairing's inner addresses."""

    name: str
    asn: int
    ifname: str
    inner_v4: str
    inner_v6: str | None
    public: str  # the peer's public address: the tunnel's outer destination
    mtu: int


@dataclass(frozen=True)
class RouteServerPeering:
    """A router's BGP toward the VPC route server (docs/vpc-failover.md)."""

    asn: int
    med: int
    prepend: int  # how many times the router's ASN is prepended
    # Until the agent says its hosts are back: worse than any router's planned announcement.
    hold_med: int = 0
    hold_prepend: int = 0
    # bgpd's update-group coalesce time (ms): how long a new session's first UPDATE waits.
    coalesce_ms: int = 10000
    marker: str = ROUTE_SERVER_MARKER

    def __post_init__(self) -> None:
        # The hold (docs/vpc-failover.md): while its hosts are not back, the router's
        # announcement must be worse than any router's planned one, or it attracts traffic.
        _check(self.hold_med > self.med, "route_server.hold_med", self.hold_med, f"must be above the med {self.med}")
        _check(
            self.hold_prepend > self.prepend,
            "route_server.hold_prepend",
            self.hold_prepend,
            f"must be above the prepend {self.prepend}",
        )


@dataclass(frozen=True)
class RouterFrrContext:
    """Everything userdata/frr-router.conf.j2 reads. No host appears here, by design."""

    project: str
    stack: str
    hostname: str
    router_id: str
    asn: int
    listen_v4: str
    listen_v6: str | None
    listen_limit: int
    underlay_gateway: str  # the VPC router of this instance's subnet (subnet base + 1)
    multipath_relax: bool
    policy: Policy
    bgp: BgpSettings
    onprem: tuple[OnPremNeighbor, ...]
    route_server: RouteServerPeering | None = None
    # max-prefix of each host session: what one host may announce (its block plus the
    # shared ranges), so a host within its rights never trips it.
    host_limit_v4: int = 2000
    host_limit_v6: int = 2000


@dataclass(frozen=True)
class RouterNeighbor:
    """A docker host's neighbor: one router, on the pairing's inner addresses."""

    name: str
    asn: int
    ifname: str
    inner_v4: str
    inner_v6: str | None


@dataclass(frozen=True)
class HostFrrContext:
    """Everything userdata/frr-host.conf.j2 reads."""

    project: str
    stack: str
    hostname: str
    router_id: str
    asn: int
    underlay_gateway: str
    policy: Policy
    bgp: BgpSettings
    routers: tuple[RouterNeighbor, ...]

    @property
    def router_asn(self) -> int:
        return self.routers[0].asn


@dataclass(frozen=True)
class RouterTunnel:
    """The on-prem side of one pairing: a GRE tunnel toward one router's EIP."""

    router: str
    eip: str
    asn: int
    ifname: str
    key: int
    mtu: int
    local_v4: str
    remote_v4: str
    local_v6: str | None
    remote_v6: str | None
    prefixlen_v4: int = 31
    prefixlen_v6: int = 127


@dataclass(frozen=True)
class OnPremFrrContext:
    """Everything userdata/frr-onprem.conf.j2 reads: the datacenter router's side."""

    project: str
    stack: str
    hostname: str
    asn: int
    public: str
    router_asn: int
    policy: Policy
    bgp: BgpSettings
    tunnels: tuple[RouterTunnel, ...]
    networks_v4: tuple[str, ...]
    networks_v6: tuple[str, ...]
    # max-prefix for the routes from the routers: the pools (aggregates) or, in specifics
    # mode, every address any host may announce (each host's block, the shared ranges).
    limit_v4: int = 2000
    limit_v6: int = 2000


@dataclass(frozen=True)
class UserDataContext:
    """Everything the cloud-config templates read. Holds no secret (user data is clear text)."""

    project: str
    stack: str
    instance: str
    role: str
    region: str
    bucket: str
    agent_key: str
    parameter_path: str
    route_protocol: int
    route_protocol_name: str
    frr_daemons: tuple[str, ...]
    agent_venv: str
    agent_etc: str
    mss_clamp: bool  # routers: clamp TCP MSS to the route MTU where it shrinks (on-prem tunnels)
    gre_backend: str = GRE_BACKEND
    egress_nft: str | None = None  # docker hosts: the egress NAT ruleset (render_egress_nft)

    def __post_init__(self) -> None:
        # Not from the plan: production's constant, or the userspace variant the lab's VMs use.
        # `auto` (the agent's own default) is refused: production fails closed (review W1).
        _check(
            self.gre_backend in ("kernel", "userspace"),
            "gre_backend",
            self.gre_backend,
            "must be 'kernel' or 'userspace'",
        )

    @property
    def packages(self) -> tuple[str, ...]:
        return PACKAGES[self.role]

    @property
    def enabled_units(self) -> tuple[str, ...]:
        """What overlay-agent-install enables for later boots (the first boot starts each in order)."""
        units = ["frr.service"]
        if self.role == "host":
            units += ["docker.socket", "docker.service"]
        if self.mss_clamp:
            units.append("overlay-mss-clamp.service")
        if self.egress_nft is not None:
            units.append("overlay-egress.service")
        return (*units, "overlay-agent.service")

    @property
    def agent_file(self) -> str:
        return self.agent_key.rsplit("/", 1)[-1]

    @property
    def bootstrap_json(self) -> str:
        """The bootstrap document, built and validated by the agent's schema (overlay_agent.schemas)."""
        try:
            doc = schemas.bootstrap(
                self.project, self.stack, self.instance, self.role, self.region, parameter_path=self.parameter_path
            )
        except ConfigError as exc:
            raise RenderError(str(exc)) from None
        return json.dumps(doc, sort_keys=True)


# -- contexts from the plan ---------------------------------------------------------


def bgp_settings(plan: OverlayPlan) -> BgpSettings:
    return BgpSettings(config=plan.bgp)


def policy(plan: OverlayPlan) -> Policy:
    # The templates' invariant, for plans not made by infra.config.parse (which refuses more
    # in one line naming the key): the filters number one prefix-list entry per pool or
    # shared range in steps of 5 below fixed entries at 100.
    for name, nets in (
        ("pools.ipv4", plan.pools_v4),
        ("pools.ipv6", plan.pools_v6),
        ("pools.sharedIpv4", plan.shared_v4),
        ("pools.sharedIpv6", plan.shared_v6),
    ):
        _check(len(nets) <= MAX_POOLS, name, [str(n) for n in nets], f"the FRR filters take at most {MAX_POOLS}")
    return Policy(
        pools_v4=tuple(str(p) for p in plan.pools_v4),
        pools_v6=tuple(str(p) for p in plan.pools_v6) if plan.ipv6 else (),
        tunnel_v4=str(plan.tunnel_v4),
        tunnel_v6=str(plan.tunnel_v6) if plan.ipv6 and plan.tunnel_v6 is not None else None,
        vpc_cidr=str(plan.vpc_cidr),
        announce=plan.bgp.announce,
        shared_v4=tuple(str(p) for p in plan.shared_v4),
        shared_v6=tuple(str(p) for p in plan.shared_v6) if plan.ipv6 else (),
    )


def _gateway(subnet: ipaddress.IPv4Network) -> str:
    # The VPC router answers at the subnet's base address + 1 in every subnet.
    return str(subnet.network_address + 1)


def _v6(addr: Any) -> str | None:
    return str(addr) if addr is not None else None


def _instance(plan: OverlayPlan, name: str) -> Router | Host:
    for inst in plan.instances:
        if inst.name == name:
            return inst
    known = ", ".join(i.name for i in plan.instances)
    raise RenderError(f"instance = {name!r}: not in stack {plan.stack} (instances: {known})")


def router_context(plan: OverlayPlan, router: Router) -> RouterFrrContext:
    pol = policy(plan)
    listen = ipaddress.ip_network(router.listen_v4)
    # Capacity of the router's slice (one /31 per host), times the address families: a
    # bound that does not move when hosts are added, so the router's text stays put.
    limit = min(LISTEN_LIMIT_MAX, (listen.num_addresses // 2) * (2 if pol.ipv6 else 1))
    onprem = tuple(
        OnPremNeighbor(
            name=p.b.name,
            asn=p.b.asn,
            ifname=p.ifname,
            inner_v4=str(p.b.inner_v4),
            inner_v6=_v6(p.b.inner_v6) if pol.ipv6 else None,
            public=str(p.b.outer),
            mtu=p.mtu,
        )
        for p in plan.pairings
        if p.kind == "onprem" and p.a.name == router.name
    )
    return RouterFrrContext(
        project=plan.project,
        stack=plan.stack,
        hostname=router.name,
        router_id=str(router.private_ip),
        asn=router.asn,
        listen_v4=str(router.listen_v4),
        listen_v6=str(router.listen_v6) if pol.ipv6 and router.listen_v6 is not None else None,
        listen_limit=limit,
        underlay_gateway=_gateway(router.subnet),
        # Always on: anycast addresses live on hosts with different ASNs in per-host mode,
        # and with one shared host ASN it changes nothing. Deciding it from the current
        # hosts would change the router's text when a host is added.
        multipath_relax=True,
        policy=pol,
        bgp=bgp_settings(plan),
        onprem=onprem,
        route_server=_route_server(plan, router),
        host_limit_v4=plan.host_limit(4),
        host_limit_v6=plan.host_limit(6) if pol.ipv6 else 1,
    )


def _route_server(plan: OverlayPlan, router: Router) -> RouteServerPeering | None:
    if plan.vpc_failover != "routeServer":
        return None
    from infra.rules import route_server_announcements

    a = next(a for a in route_server_announcements(plan) if a.router == router.name)
    return RouteServerPeering(
        asn=plan.route_server_asn, med=a.med, prepend=a.prepend, hold_med=a.hold_med, hold_prepend=a.hold_prepend
    )


def host_context(plan: OverlayPlan, host: Host) -> HostFrrContext:
    pol = policy(plan)
    routers = tuple(
        RouterNeighbor(
            name=p.a.name,
            asn=p.a.asn,
            ifname=p.ifname,
            inner_v4=str(p.a.inner_v4),
            inner_v6=_v6(p.a.inner_v6) if pol.ipv6 else None,
        )
        for p in plan.pairings
        if p.kind == "host" and p.b.name == host.name
    )
    return HostFrrContext(
        project=plan.project,
        stack=plan.stack,
        hostname=host.name,
        router_id=str(host.private_ip),
        asn=host.asn,
        underlay_gateway=_gateway(host.subnet),
        policy=pol,
        bgp=bgp_settings(plan),
        routers=routers,
    )


def onprem_context(
    plan: OverlayPlan,
    peer_name: str,
    router_eips: Mapping[str, str],
    *,
    networks_v4: tuple[str, ...] = (),
    networks_v6: tuple[str, ...] = (),
) -> OnPremFrrContext:
    peer = next((p for p in plan.onprem if p.name == peer_name), None)
    if peer is None:
        known = ", ".join(p.name for p in plan.onprem) or "none"
        raise RenderError(f"peer_name = {peer_name!r}: not an on-prem peer of stack {plan.stack} (peers: {known})")
    missing = [r.name for r in plan.routers if r.name not in router_eips]
    if missing:
        raise RenderError(
            f"router_eips: no EIP for {', '.join(missing)} (every router peers with "
            f"{peer_name}, so every router's EIP is needed)"
        )
    extra = sorted(set(router_eips) - {r.name for r in plan.routers})
    if extra:
        raise RenderError(f"router_eips: {', '.join(extra)} not routers of stack {plan.stack}")
    # From outside the plan: the EIPs AWS assigned, the prefixes the operator announces.
    for name, eip in sorted(router_eips.items()):
        _check_addr(f"router_eips[{name}]", eip, 4)
    for i, n in enumerate(networks_v4):
        _check_net(f"networks_v4[{i}]", n, 4)
    for i, n in enumerate(networks_v6):
        _check_net(f"networks_v6[{i}]", n, 6)
    _check(not networks_v6 or plan.ipv6, "networks_v6", networks_v6, "the stack has IPv6 off")
    pol = policy(plan)
    pairings: list[Pairing] = [p for p in plan.pairings if p.kind == "onprem" and p.b.name == peer_name]
    tunnels = tuple(
        RouterTunnel(
            router=p.a.name,
            eip=str(router_eips[p.a.name]),
            asn=p.a.asn,
            ifname=p.ifname,
            key=p.key,
            mtu=p.mtu,
            local_v4=str(p.b.inner_v4),
            remote_v4=str(p.a.inner_v4),
            local_v6=_v6(p.b.inner_v6) if pol.ipv6 else None,
            remote_v6=_v6(p.a.inner_v6) if pol.ipv6 else None,
        )
        for p in pairings
    )
    return OnPremFrrContext(
        project=plan.project,
        stack=plan.stack,
        hostname=peer_name,
        asn=peer.asn,
        public=str(peer.address),
        router_asn=plan.routers[0].asn,
        policy=pol,
        bgp=bgp_settings(plan),
        tunnels=tunnels,
        networks_v4=tuple(networks_v4),
        networks_v6=tuple(networks_v6),
        limit_v4=_onprem_limit(plan, 4),
        limit_v6=_onprem_limit(plan, 6),
    )


def _onprem_limit(plan: OverlayPlan, version: int) -> int:
    if plan.bgp.announce == "aggregates":
        return plan.bgp.max_prefix
    pools = plan.pools_v4 if version == 4 else plan.pools_v6
    shared = plan.shared_v4 if version == 4 else plan.shared_v6
    blocks = sum(
        h.block_v4.num_addresses if version == 4 else (h.block_v6.num_addresses if h.block_v6 else 0)
        for h in plan.hosts[:1]
    ) * len(plan.hosts)
    return max(1, min(4294967295, len(pools) + blocks + sum(n.num_addresses for n in shared)))


def user_data_context(
    plan: OverlayPlan, instance_name: str, *, bucket: str, agent_key: str, parameter_path: str
) -> UserDataContext:
    inst = _instance(plan, instance_name)
    role = "router" if isinstance(inst, Router) else "host"
    # From outside the plan: the bucket AWS named, the bundle's key. The parameter path is
    # checked with the bootstrap document (overlay_agent/schemas/bootstrap.schema.json).
    _check(
        isinstance(bucket, str) and bool(_BUCKET.match(bucket)),
        "bucket",
        bucket,
        "must be an S3 bucket name (3-63 characters of a-z, 0-9, '.', '-')",
    )
    _check(
        isinstance(agent_key, str)
        and bool(_KEY.match(agent_key))
        and agent_key.endswith(".tar")
        and not agent_key.startswith("/"),
        "agent_key",
        agent_key,
        "must be the S3 key of the agent bundle (a .tar: the agent wheel and its wheelhouse)",
    )
    return UserDataContext(
        project=plan.project,
        stack=plan.stack,
        instance=inst.name,
        role=role,
        region=plan.region,
        bucket=bucket,
        agent_key=agent_key,
        parameter_path=parameter_path,
        route_protocol=plan.route_protocol,
        route_protocol_name=ROUTE_PROTOCOL_NAME,
        frr_daemons=FRR_DAEMONS,
        agent_venv=AGENT_VENV,
        agent_etc=AGENT_ETC,
        mss_clamp=role == "router",
        egress_nft=render_egress_nft(plan) if role == "host" else None,
    )


# The agent's container veth names start with this (hostagent/overlay_agent/wiring.py).
VETH_PREFIX = "ovc"


@dataclass(frozen=True)
class EgressContext:
    """userdata/host-egress.nft.j2: what a docker host SNATs (docs/egress.md)."""

    stack: str
    keep_v4: tuple[str, ...]  # destinations that keep the container's address: the VPC, the pools
    pools_v4: tuple[str, ...]
    pools_v6: tuple[str, ...]
    veth_prefix: str = VETH_PREFIX


def egress_context(plan: OverlayPlan) -> EgressContext:
    pools4 = tuple(str(p) for p in plan.pools_v4)
    return EgressContext(
        stack=plan.stack,
        keep_v4=(str(plan.vpc_cidr),) + pools4,
        pools_v4=pools4,
        pools_v6=tuple(str(p) for p in plan.pools_v6) if plan.ipv6 else (),
    )


def render_egress_nft(plan: OverlayPlan) -> str:
    """The docker hosts' egress NAT ruleset (nft -f; re-runnable: it replaces its table)."""
    return render_template("host-egress.nft.j2", egress_context(plan))


# -- rendering ----------------------------------------------------------------------


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The one jinja2 environment: templates from userdata/, every undefined name an error."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["bogons_marker"] = bogons_marker
    return env


def render_template(name: str, ctx: Any) -> str:
    """Render userdata/<name> with a context dataclass exposed as `ctx` (and its fields)."""
    if not hasattr(ctx, "__dataclass_fields__"):
        raise RenderError(f"context for {name} must be a context dataclass, got {type(ctx).__name__}")
    values = {f.name: getattr(ctx, f.name) for f in fields(ctx)}
    try:
        return environment().get_template(name).render(ctx=ctx, **values)
    except jinja2.UndefinedError as exc:
        raise RenderError(f"{name}: {exc} (the template reads a value its context does not have)") from None


def render_frr(plan: OverlayPlan, instance_name: str) -> str:
    """The instance's frr.conf (router or docker host by name), password as the placeholder."""
    inst = _instance(plan, instance_name)
    if isinstance(inst, Router):
        return render_template("frr-router.conf.j2", router_context(plan, inst))
    return render_template("frr-host.conf.j2", host_context(plan, inst))


def render_onprem_frr(
    plan: OverlayPlan,
    peer_name: str,
    router_eips: Mapping[str, str],
    *,
    networks_v4: tuple[str, ...] = (),
    networks_v6: tuple[str, ...] = (),
) -> str:
    """The on-prem router's side: GRE set-up (as shell comments) and its FRR configuration.

    `networks_v4`/`networks_v6` are the datacenter prefixes it announces (none by default:
    the operator adds their own)."""
    return render_template(
        "frr-onprem.conf.j2",
        onprem_context(plan, peer_name, router_eips, networks_v4=networks_v4, networks_v6=networks_v6),
    )


def render_user_data(plan: OverlayPlan, instance_name: str, *, bucket: str, agent_key: str, parameter_path: str) -> str:
    """The instance's cloud-config (starts with `#cloud-config`); holds no secret."""
    ctx = user_data_context(plan, instance_name, bucket=bucket, agent_key=agent_key, parameter_path=parameter_path)
    text = render_template(f"{ctx.role}.cloud-config.j2", ctx)
    size = len(text.encode())
    if size > USER_DATA_LIMIT:
        raise RenderError(f"user data for {instance_name} is {size} bytes; EC2 accepts at most {USER_DATA_LIMIT}")
    return text
