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
# Route protocol numbers with an owner: rtnetlink.h 0-18 (kernel, boot, static, ra 9,
# zebra 11, bird 12, dhcp 16, keepalived 18, ...), 42 babel, 99 openr, FRR's 186-198. The same
# set as the agent's (hostagent/overlay_agent/config.py), which refuses a document with one.
FORBIDDEN_PROTOCOLS = frozenset({*range(0, 19), 42, 99, *range(186, 199)})
# ECMP fan-out: 2-8 routers per stack, and anycast addresses on up to 16 hosts.
MAX_PATHS = 16
# Container pools per address family the filters are written for.
MAX_POOLS = 16
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


_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_KEY = re.compile(r"^[A-Za-z0-9!_.*'()/-]+$")
_PARAM = re.compile(r"^(/[A-Za-z0-9_.-]+)+$")


class RenderError(ValueError):
    """A context or argument the templates cannot render; the message names the field."""


# -- contexts -----------------------------------------------------------------------


def _check(ok: bool, field_name: str, value: Any, reason: str) -> None:
    if not ok:
        raise RenderError(f"{field_name} = {value!r}: {reason}")


def _check_name(field_name: str, value: Any) -> None:
    _check(
        isinstance(value, str) and bool(_NAME.match(value)),
        field_name,
        value,
        "must be 1-63 characters of a-z, 0-9 and '-', starting with a letter",
    )


def _check_asn(field_name: str, value: Any) -> None:
    _check(
        isinstance(value, int)
        and not isinstance(value, bool)
        and 1 <= value <= 4294967294
        and value not in (23456, 65535),
        field_name,
        value,
        "is not a usable ASN",
    )


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


def _check_int(field_name: str, value: Any, lo: int, hi: int) -> None:
    _check(
        isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi,
        field_name,
        value,
        f"must be a whole number between {lo} and {hi}",
    )


@dataclass(frozen=True)
class BgpSettings:
    """Timers, BFD, limits and graceful restart shared by every session of the stack."""

    keepalive: int
    hold: int
    bfd_interval_ms: int
    bfd_multiplier: int
    max_prefix: int
    max_prefix_restart: int
    max_paths: int
    graceful_restart: bool
    gr_restart_time: int
    gr_stalepath_time: int
    password: str  # always the placeholder: the real password never reaches a template
    onprem_password: str = ONPREM_PASSWORD_PLACEHOLDER  # the on-prem sessions' placeholder

    def __post_init__(self) -> None:
        _check_int("bgp.keepalive", self.keepalive, 1, 60)
        _check_int("bgp.hold", self.hold, 3, 180)
        _check(self.hold >= 3 * self.keepalive, "bgp.hold", self.hold, "must be at least 3 x keepalive")
        _check_int("bgp.bfd_interval_ms", self.bfd_interval_ms, 10, 60000)
        _check_int("bgp.bfd_multiplier", self.bfd_multiplier, 2, 255)
        _check_int("bgp.max_prefix", self.max_prefix, 1, 4294967295)
        _check_int("bgp.max_prefix_restart", self.max_prefix_restart, 1, 65535)
        _check_int("bgp.max_paths", self.max_paths, 1, 64)
        _check(
            isinstance(self.graceful_restart, bool),
            "bgp.graceful_restart",
            self.graceful_restart,
            "must be true or false",
        )
        # The templates state these as FRR's defaults (which FRR leaves out of its running
        # config); other values would need the commands written out.
        _check(
            self.gr_restart_time == 120,
            "bgp.gr_restart_time",
            self.gr_restart_time,
            "must be 120 (FRR's default, which the templates assume)",
        )
        _check(
            self.gr_stalepath_time == 360,
            "bgp.gr_stalepath_time",
            self.gr_stalepath_time,
            "must be 360 (FRR's default, which the templates assume)",
        )
        _check(
            self.password == PASSWORD_PLACEHOLDER,
            "bgp.password",
            "<hidden>",
            f"must be the placeholder {PASSWORD_PLACEHOLDER} (the agent fills in the secret)",
        )
        _check(
            self.onprem_password == ONPREM_PASSWORD_PLACEHOLDER,
            "bgp.onprem_password",
            "<hidden>",
            f"must be the placeholder {ONPREM_PASSWORD_PLACEHOLDER} (the agent fills in the secret)",
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

    def __post_init__(self) -> None:
        _check(
            isinstance(self.pools_v4, tuple) and len(self.pools_v4) > 0,
            "pools_v4",
            self.pools_v4,
            "must be a non-empty tuple",
        )
        # The templates number prefix-list entries in steps of 5 below fixed entries at 100.
        for name in ("pools_v4", "pools_v6"):
            _check(
                len(getattr(self, name)) <= MAX_POOLS,
                name,
                getattr(self, name),
                f"at most {MAX_POOLS} pools per family",
            )
        for i, p in enumerate(self.pools_v4):
            _check_net(f"pools_v4[{i}]", p, 4)
        _check(isinstance(self.pools_v6, tuple), "pools_v6", self.pools_v6, "must be a tuple")
        for i, p in enumerate(self.pools_v6):
            _check_net(f"pools_v6[{i}]", p, 6)
        _check_net("tunnel_v4", self.tunnel_v4, 4)
        if self.tunnel_v6 is not None:
            _check_net("tunnel_v6", self.tunnel_v6, 6)
        _check(
            bool(self.pools_v6) == (self.tunnel_v6 is not None),
            "pools_v6",
            self.pools_v6,
            "IPv6 pools and the IPv6 tunnel pool go together (both or neither)",
        )
        _check_net("vpc_cidr", self.vpc_cidr, 4)
        _check(
            self.announce in ("aggregates", "specifics"),
            "announce",
            self.announce,
            "must be 'aggregates' or 'specifics'",
        )
        for name, version in (("shared_v4", 4), ("shared_v6", 6)):
            nets = getattr(self, name)
            _check(
                isinstance(nets, tuple) and len(nets) <= MAX_POOLS,
                name,
                nets,
                f"must be a tuple of at most {MAX_POOLS} networks",
            )
            # All of one family (`version`), as the ranges checked against them.
            pools: list[Any] = [ipaddress.ip_network(p) for p in (self.pools_v4 if version == 4 else self.pools_v6)]
            for i, n in enumerate(nets):
                _check_net(f"{name}[{i}]", n, version)
                _check(
                    any(ipaddress.ip_network(n).subnet_of(p) for p in pools),
                    f"{name}[{i}]",
                    n,
                    "must lie inside the pools",
                )

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

    def __post_init__(self) -> None:
        _check_name("onprem.name", self.name)
        _check_asn(f"onprem[{self.name}].asn", self.asn)
        _check(
            isinstance(self.ifname, str) and 1 <= len(self.ifname) <= 15,
            f"onprem[{self.name}].ifname",
            self.ifname,
            "must be a Linux interface name (1-15 characters)",
        )
        _check_addr(f"onprem[{self.name}].inner_v4", self.inner_v4, 4)
        if self.inner_v6 is not None:
            _check_addr(f"onprem[{self.name}].inner_v6", self.inner_v6, 6)
        _check_addr(f"onprem[{self.name}].public", self.public, 4)
        _check_int(f"onprem[{self.name}].mtu", self.mtu, 1280, 8973)


def _check_speaker(ctx: RouterFrrContext | HostFrrContext) -> None:
    """The fields every BGP speaker's context shares: names, router id, ASN."""
    _check_name("project", ctx.project)
    _check_name("stack", ctx.stack)
    _check_name("hostname", ctx.hostname)
    _check_addr("router_id", ctx.router_id, 4)
    _check_asn("asn", ctx.asn)


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
        _check_asn("route_server.asn", self.asn)
        _check_int("route_server.med", self.med, 0, 4294967295)
        _check_int("route_server.prepend", self.prepend, 0, 32)
        _check_int("route_server.hold_med", self.hold_med, self.med + 1, 4294967295)
        _check_int("route_server.hold_prepend", self.hold_prepend, self.prepend + 1, 64)


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

    def __post_init__(self) -> None:
        _check_speaker(self)
        _check_int("host_limit_v4", self.host_limit_v4, 1, 4294967295)
        _check_int("host_limit_v6", self.host_limit_v6, 1, 4294967295)
        if self.route_server is not None:
            _check(
                self.route_server.asn != self.asn,
                "route_server.asn",
                self.route_server.asn,
                "must differ from the router's ASN (the route server peers eBGP)",
            )
        _check_net("listen_v4", self.listen_v4, 4)
        _check(
            ipaddress.IPv4Network(self.listen_v4).subnet_of(ipaddress.IPv4Network(self.policy.tunnel_v4)),
            "listen_v4",
            self.listen_v4,
            f"must lie inside the tunnel pool {self.policy.tunnel_v4}",
        )
        _check(
            (self.listen_v6 is not None) == self.policy.ipv6,
            "listen_v6",
            self.listen_v6,
            "must be given exactly when the stack has IPv6",
        )
        if self.listen_v6 is not None:
            _check_net("listen_v6", self.listen_v6, 6)
        _check_int("listen_limit", self.listen_limit, 1, LISTEN_LIMIT_MAX)
        _check_addr("underlay_gateway", self.underlay_gateway, 4)
        _check(isinstance(self.onprem, tuple), "onprem", self.onprem, "must be a tuple")
        for peer in self.onprem:
            _check(
                peer.asn != self.asn,
                f"onprem[{peer.name}].asn",
                peer.asn,
                "must differ from the router's ASN (on-prem peering is eBGP)",
            )
            _check(
                (peer.inner_v6 is not None) == self.policy.ipv6,
                f"onprem[{peer.name}].inner_v6",
                peer.inner_v6,
                "must be given exactly when the stack has IPv6",
            )


@dataclass(frozen=True)
class RouterNeighbor:
    """A docker host's neighbor: one router, on the pairing's inner addresses."""

    name: str
    asn: int
    ifname: str
    inner_v4: str
    inner_v6: str | None

    def __post_init__(self) -> None:
        _check_name("router.name", self.name)
        _check_asn(f"router[{self.name}].asn", self.asn)
        _check(
            isinstance(self.ifname, str) and 1 <= len(self.ifname) <= 15,
            f"router[{self.name}].ifname",
            self.ifname,
            "must be a Linux interface name (1-15 characters)",
        )
        _check_addr(f"router[{self.name}].inner_v4", self.inner_v4, 4)
        if self.inner_v6 is not None:
            _check_addr(f"router[{self.name}].inner_v6", self.inner_v6, 6)


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

    def __post_init__(self) -> None:
        _check_speaker(self)
        _check_addr("underlay_gateway", self.underlay_gateway, 4)
        _check(
            isinstance(self.routers, tuple) and len(self.routers) > 0,
            "routers",
            self.routers,
            "a docker host needs at least one router",
        )
        asns = {r.asn for r in self.routers}
        _check(len(asns) == 1, "routers", sorted(asns), "all routers of a stack share one ASN")
        _check(self.asn not in asns, "asn", self.asn, "must differ from the routers' ASN (eBGP)")
        for r in self.routers:
            _check(
                (r.inner_v6 is not None) == self.policy.ipv6,
                f"router[{r.name}].inner_v6",
                r.inner_v6,
                "must be given exactly when the stack has IPv6",
            )

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

    def __post_init__(self) -> None:
        _check_name("router", self.router)
        _check_addr(f"router_eips[{self.router}]", self.eip, 4)
        _check_asn(f"tunnel[{self.router}].asn", self.asn)
        _check_int(f"tunnel[{self.router}].key", self.key, 1, 4294967295)
        _check_int(f"tunnel[{self.router}].mtu", self.mtu, 1280, 8973)
        for name in ("local_v4", "remote_v4"):
            _check_addr(f"tunnel[{self.router}].{name}", getattr(self, name), 4)
        for name in ("local_v6", "remote_v6"):
            if getattr(self, name) is not None:
                _check_addr(f"tunnel[{self.router}].{name}", getattr(self, name), 6)


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

    def __post_init__(self) -> None:
        _check_int("limit_v4", self.limit_v4, 1, 4294967295)
        _check_int("limit_v6", self.limit_v6, 1, 4294967295)
        _check_name("project", self.project)
        _check_name("stack", self.stack)
        _check_name("hostname", self.hostname)
        _check_asn("asn", self.asn)
        _check_addr("public", self.public, 4)
        _check_asn("router_asn", self.router_asn)
        _check(self.asn != self.router_asn, "asn", self.asn, "must differ from the routers' ASN (eBGP)")
        _check(
            isinstance(self.tunnels, tuple) and len(self.tunnels) > 0,
            "tunnels",
            self.tunnels,
            "an on-prem peer needs at least one router",
        )
        for i, n in enumerate(self.networks_v4):
            _check_net(f"networks_v4[{i}]", n, 4)
        for i, n in enumerate(self.networks_v6):
            _check_net(f"networks_v6[{i}]", n, 6)
        _check(not self.networks_v6 or self.policy.ipv6, "networks_v6", self.networks_v6, "the stack has IPv6 off")


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
        _check(
            self.gre_backend in ("kernel", "userspace"),
            "gre_backend",
            self.gre_backend,
            "must be 'kernel' or 'userspace'",
        )
        _check_name("project", self.project)
        _check_name("stack", self.stack)
        _check_name("instance", self.instance)
        _check(self.role in ("router", "host"), "role", self.role, "must be 'router' or 'host'")
        _check(
            isinstance(self.region, str) and bool(re.match(r"^[a-z]{2}(-[a-z]+)+-\d+$", self.region)),
            "region",
            self.region,
            "must be an AWS region name such as eu-west-1",
        )
        _check(
            isinstance(self.bucket, str) and bool(_BUCKET.match(self.bucket)),
            "bucket",
            self.bucket,
            "must be an S3 bucket name (3-63 characters of a-z, 0-9, '.', '-')",
        )
        _check(
            isinstance(self.agent_key, str)
            and bool(_KEY.match(self.agent_key))
            and self.agent_key.endswith(".tar")
            and not self.agent_key.startswith("/"),
            "agent_key",
            self.agent_key,
            "must be the S3 key of the agent bundle (a .tar: the agent wheel and its wheelhouse)",
        )
        _check(
            isinstance(self.parameter_path, str) and bool(_PARAM.match(self.parameter_path)),
            "parameter_path",
            self.parameter_path,
            "must be an SSM path such as /overlay/lab/instances/host-1",
        )
        _check_int("route_protocol", self.route_protocol, 1, 255)
        _check(
            self.route_protocol not in FORBIDDEN_PROTOCOLS,
            "route_protocol",
            self.route_protocol,
            "is claimed by FRR or the kernel or another routing daemon (0-18, 42, 99, 186-198)",
        )
        _check_name("route_protocol_name", self.route_protocol_name)
        _check(
            set(self.frr_daemons) <= {"zebra", "bgpd", "bfdd", "staticd"}
            and "zebra" in self.frr_daemons
            and "bgpd" in self.frr_daemons,
            "frr_daemons",
            self.frr_daemons,
            "must include zebra and bgpd, from zebra, bgpd, bfdd, staticd",
        )
        _check(
            self.mss_clamp == (self.role == "router"),
            "mss_clamp",
            self.mss_clamp,
            "routers clamp MSS, docker hosts do not",
        )

    @property
    def packages(self) -> tuple[str, ...]:
        return PACKAGES[self.role]

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
    b = plan.bgp
    return BgpSettings(
        keepalive=b.keepalive,
        hold=b.hold,
        bfd_interval_ms=b.bfd_interval_ms,
        bfd_multiplier=b.bfd_multiplier,
        max_prefix=b.max_prefix,
        max_prefix_restart=MAX_PREFIX_RESTART_MIN,
        max_paths=MAX_PATHS,
        graceful_restart=b.graceful_restart,
        gr_restart_time=GR_RESTART_TIME,
        gr_stalepath_time=GR_STALEPATH_TIME,
        password=PASSWORD_PLACEHOLDER,
    )


def policy(plan: OverlayPlan) -> Policy:
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

    def __post_init__(self) -> None:
        _check_name("stack", self.stack)
        _check(bool(self.pools_v4) and bool(self.keep_v4), "pools_v4", self.pools_v4, "must not be empty")
        for n in self.keep_v4 + self.pools_v4:
            _check_net("keep_v4/pools_v4", n, 4)
        for n in self.pools_v6:
            _check_net("pools_v6", n, 6)


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
