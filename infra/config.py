"""Typed, validated model of a stack's configuration (`overlay:*` keys), with defaults; pure."""

from __future__ import annotations

import difflib
import ipaddress
from dataclasses import dataclass
from typing import Any, Callable, Mapping, TypeVar

PROJECT = "overlay"

# AWS uses these link-local ranges itself (instance metadata, DNS, NTP, ECS task
# metadata, and blocks reserved for its own services); a tunnel inner address there
# would be shadowed on the instance or rejected by the VPC.
AWS_RESERVED_LINK_LOCAL = tuple(
    ipaddress.ip_network(n) for n in ("169.254.0.0/21", "169.254.168.0/22", "169.254.169.0/24", "169.254.170.0/24")
)

# Special-purpose ranges (RFC 6890 registries, and AWS's own IPv6 service range) that no
# container pool, tunnel pool or on-prem peer may use: the kernel or the VPC treats them
# specially (loopback, multicast, "this network", reserved 240/4 incl. broadcast), every
# interface already has them (IPv6 link-local), or AWS serves instance metadata, DNS and NTP
# there (fd00:ec2::254, ::253, ::123). 169.254.0.0/16 is refused for pools (the containers'
# gateway is 169.254.1.1) but is where tunnels belong. Documentation ranges stay allowed:
# the examples and the lab use them for on-prem peers.
SPECIAL_V4 = {
    "0.0.0.0/8": "'this network' (RFC 1122)",
    "127.0.0.0/8": "loopback",
    "224.0.0.0/4": "multicast",
    "240.0.0.0/4": "reserved (RFC 1112) and broadcast",
}
LINK_LOCAL_V4 = ipaddress.ip_network("169.254.0.0/16")
SPECIAL_V6 = {
    "::/96": "unspecified, loopback and IPv4-compatible (RFC 4291)",
    "::ffff:0:0/96": "IPv4-mapped (RFC 4291)",
    "64:ff9b::/96": "NAT64 (RFC 6052)",
    "fe80::/10": "link-local",
    "fec0::/10": "deprecated site-local (RFC 3879)",
    "ff00::/8": "multicast",
    "fd00:ec2::/32": "AWS instance metadata, DNS and NTP (fd00:ec2::254, ::253, ::123)",
}


def special_range(net: Any, *, link_local_ok: bool = False) -> str | None:
    """The special-purpose range `net` (a network or an address) touches, described, or None."""
    table = SPECIAL_V4 if net.version == 4 else SPECIAL_V6
    probe = ipaddress.ip_network(net) if not hasattr(net, "prefixlen") else net
    for cidr, what in table.items():
        special = ipaddress.ip_network(cidr)
        if probe.overlaps(special):
            return f"{special} is {what}"
    if net.version == 4 and not link_local_ok and probe.overlaps(LINK_LOCAL_V4):
        return f"{LINK_LOCAL_V4} is link-local (the containers' gateway is 169.254.1.1)"
    return None


# ASNs that may not be used on a BGP session: 0 and 65535 / 4294967295 are reserved
# (RFC 7607, RFC 7300), 23456 is AS_TRANS (RFC 6793).
RESERVED_ASNS = frozenset({0, 23456, 65535, 4294967295})

ENVIRONMENTS = ("prod", "test")
# A router's FRR config grows with its on-prem neighbors: 7 fit SSM's 8 KB limit (docs/frr.md).
MAX_ONPREM_PEERS = 7
ANNOUNCE_MODES = ("aggregates", "specifics")
# Routers filter each host's announcements with one route-map entry per host (docs/frr.md),
# numbered 100 + host index; FRR's sequence numbers end at 65535.
MAX_HOSTS_FILTERED = 65000
ROUTING_MODES = ("router", "static")
# Ranges per pool list (pools.ipv4, pools.ipv6, pools.sharedIpv4, pools.sharedIpv6): the FRR
# prefix-lists number one entry per range in steps of 5 (userdata/frr-*.conf.j2), below the
# fixed entries that start at sequence 100; 16 keeps them there.
MAX_POOLS = 16
# How the VPC route tables follow a router's loss (docs/vpc-failover.md): VPC Route Server
# re-points every table at a live router; static keeps one fixed router ENI per AZ.
FAILOVER_MODES = ("routeServer", "static")


class ConfigError(ValueError):
    """Bad stack configuration. `str()` is one line: key, value and reason."""

    def __init__(self, key: str, value: Any, reason: str, source: str = ""):
        self.key, self.value, self.reason, self.source = key, value, reason, source
        super().__init__(self._line())

    def _line(self) -> str:
        where = f"{self.source}: " if self.source else ""
        return f"{where}{self.key} = {_show(self.value)}: {self.reason}"

    def with_source(self, source: str) -> "ConfigError":
        return ConfigError(self.key, self.value, self.reason, source)


def _show(value: Any) -> str:
    try:
        text = repr(value) if isinstance(value, str) else str(value)
    except ValueError:  # an int beyond sys.get_int_max_str_digits()
        text = f"<{type(value).__name__} too large to show>"
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass(frozen=True)
class OnPremPeer:
    name: str
    address: ipaddress.IPv4Address
    asn: int


@dataclass(frozen=True)
class BgpConfig:
    """overlay:bgp (defaults and meanings: SCHEMA below, docs/config.md)."""

    keepalive: int
    hold: int
    bfd_interval_ms: int
    bfd_multiplier: int
    max_prefix: int
    announce: str
    graceful_restart: bool


@dataclass(frozen=True)
class StackConfig:
    """The parsed stack config (defaults and meanings of the keys: SCHEMA below, docs/config.md)."""

    stack: str
    region: str
    environment: str
    vpc_cidr: ipaddress.IPv4Network
    ipv6: bool
    azs: tuple[str, ...]
    router_count: int
    router_asn: int
    router_instance_type: str
    max_routers: int
    host_count: int
    host_asn: int
    host_asn_mode: str  # "shared" or "per-host"
    host_instance_type: str
    host_block_prefix: int
    host_ipv6_block_prefix: int
    host_ipv6_delegation: bool
    pools_v4: tuple[ipaddress.IPv4Network, ...]
    pools_v6: tuple[ipaddress.IPv6Network, ...]
    # Inside the pools, outside every host block: the only addresses more than one host
    # may announce (moves, anycast). Each host block belongs to its host alone.
    shared_v4: tuple[ipaddress.IPv4Network, ...]
    shared_v6: tuple[ipaddress.IPv6Network, ...]
    tunnel_v4: ipaddress.IPv4Network
    tunnel_v6: ipaddress.IPv6Network | None
    mtu: int
    onprem_mtu: int
    bgp: BgpConfig
    onprem: tuple[OnPremPeer, ...]
    routing_mode: str
    host_root_volume_gb: int
    vpc_failover: str
    route_server_asn: int
    poll_interval: int
    # The kernel route protocol of the agents' container routes (not a config key).
    route_protocol: int = 149


# The keys, their types, defaults and meanings: SCHEMA (after the converters, below).


def foreign_key_problem(key: str) -> str | None:
    """Why a stack config key outside `overlay:` looks like one of ours (a typo), or None.

    Pulumi passes every namespace through and the program reads only `overlay:`; a key
    under `overlya:` or `Overlay:`, or `pools` without a namespace, would silently fall back
    to the defaults. `aws:region` is the AWS provider's own key and stays allowed.
    """
    namespace, colon, name = str(key).partition(":")
    if not colon:
        if namespace in TOP_KEYS:
            return f"has no namespace; write {PROJECT}:{namespace}"
        return None
    if namespace == PROJECT:
        return None
    if namespace.lower() == PROJECT or difflib.get_close_matches(namespace.lower(), [PROJECT], cutoff=0.75):
        return f"namespace '{namespace}' looks like a typo of '{PROJECT}'"
    top = name.split(".", 1)[0]
    if top in TOP_KEYS and top != "region":
        return f"'{top}' is an {PROJECT}: key; write {PROJECT}:{name}"
    return None


def _unknown(key: str, valid: tuple[str, ...], prefix: str, value: Any) -> ConfigError:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f"unknown key; did you mean '{close[0]}'?" if close else f"unknown key; valid keys: {', '.join(valid)}"
    return ConfigError(f"{prefix}{key}", value, hint)


_SCHEMA_DEFAULT = object()


class _Section:
    """Typed reads from one mapping by the schema (SCHEMA), naming the full key in every error.

    `section` is the schema's name for it ("" for the top level, "vpc", "onprem[]");
    `prefix` the key as errors show it ("overlay:vpc.", "overlay:onprem[2].").
    """

    def __init__(self, data: Any, section: str, prefix: str | None = None):
        if prefix is None:
            prefix = f"{PROJECT}:{section}." if section else f"{PROJECT}:"
        valid = TOP_KEYS if not section else SECTION_KEYS[section]
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(prefix.rstrip("."), data, "must be a mapping")
        for key in data:
            if key not in valid:
                raise _unknown(str(key), valid, prefix, data[key])
        self.data, self.section, self.prefix = data, section, prefix

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def get(self, name: str, default: Any = _SCHEMA_DEFAULT) -> Any:
        """The key's value through its type's converter; when it is absent (or null) the
        schema's default (or `default`, for a default that depends on other keys), and for
        a required key one line saying so."""
        spec = KEYS[f"{self.section}.{name}" if self.section else name]
        if name not in self.data or self.data[name] is None:
            if spec.required is not None and default is _SCHEMA_DEFAULT:
                raise ConfigError(self.key(name), None, f"is required{spec.required}")
            return spec.parsed_default() if default is _SCHEMA_DEFAULT else default
        return spec.type.conv(self.key(name), self.data[name])


def _int(lo: int, hi: int) -> Callable[[str, Any], int]:
    def conv(key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ConfigError(key, value, "must be a whole number")
        try:
            num = int(value)
        except ValueError:
            raise ConfigError(key, value, "must be a whole number") from None
        if not lo <= num <= hi:
            raise ConfigError(key, value, f"must be between {lo} and {hi}")
        return num

    return conv


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ConfigError(key, value, "must be true or false")


def _str(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(key, value, "must be a non-empty string")
    return value.strip()


def _choice(options: tuple[str, ...]) -> Callable[[str, Any], str]:
    def conv(key: str, value: Any) -> str:
        if value not in options:
            raise ConfigError(key, value, f"must be one of: {', '.join(options)}")
        return str(value)

    return conv


def _asn(key: str, value: Any) -> int:
    num = _int(1, 4294967294)(key, value)
    if num in RESERVED_ASNS:
        raise ConfigError(key, value, "is a reserved ASN (0, 23456 AS_TRANS, 65535 and 4294967295 cannot be used)")
    return num


def _net(version: int) -> Callable[[str, Any], Any]:
    def conv(key: str, value: Any) -> Any:
        if not isinstance(value, str):
            raise ConfigError(key, value, f"must be an IPv{version} CIDR string")
        try:
            net = ipaddress.ip_network(value, strict=True)
        except ValueError as exc:
            reason = str(exc)
            if "has host bits set" in reason:
                reason = "has host bits set (write the network address)"
            else:
                reason = f"is not a valid IPv{version} CIDR ({reason})"
            raise ConfigError(key, value, reason) from None
        if net.version != version:
            raise ConfigError(key, value, f"must be an IPv{version} CIDR")
        return net

    return conv


def _net_list(version: int) -> Callable[[str, Any], tuple[Any, ...]]:
    def conv(key: str, value: Any) -> tuple[Any, ...]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value:
            raise ConfigError(key, value, f"must be a non-empty list of IPv{version} CIDRs")
        if len(value) > MAX_POOLS:
            raise ConfigError(
                key,
                value,
                f"at most {MAX_POOLS} ranges ({len(value)} given): the FRR prefix-lists number one "
                "entry per range below their fixed entries at sequence 100",
            )
        return tuple(_net(version)(f"{key}[{i}]", v) for i, v in enumerate(value))

    return conv


def _azs(key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(key, value, "must be a non-empty list of availability zone names")
    names = tuple(_str(f"{key}[{i}]", v) for i, v in enumerate(value))
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ConfigError(key, value, f"duplicate availability zone '{dup}'")
    if len(names) > 8:
        raise ConfigError(key, value, "at most 8 availability zones (the VPC is split in 16 subnets)")
    return names


@dataclass(frozen=True)
class Type:
    """A key's type: its converter (raises ConfigError naming the key), as the docs name it,
    and as a JSON Schema (docs/config.schema.json; the checks a JSON Schema can state)."""

    conv: Callable[[str, Any], Any]
    doc: str
    json: Mapping[str, Any]


def _int_type(lo: int, hi: int) -> Type:
    # Pulumi hands `pulumi config set` values over as strings: "42" is a number too.
    return Type(
        _int(lo, hi),
        f"integer {lo}..{hi}",
        {"anyOf": [{"type": "integer", "minimum": lo, "maximum": hi}, {"type": "string", "pattern": "^[0-9]+$"}]},
    )


def _choice_type(options: tuple[str, ...]) -> Type:
    return Type(_choice(options), " or ".join(f"`{o}`" for o in options), {"enum": list(options)})


def _net_type(version: int) -> Type:
    return Type(_net(version), f"IPv{version} CIDR", {"type": "string", "format": f"ipv{version}-network"})


def _net_list_type(version: int) -> Type:
    item = {"type": "string", "format": f"ipv{version}-network"}
    return Type(
        _net_list(version),
        f"list of 1-{MAX_POOLS} IPv{version} CIDRs",
        {"anyOf": [{"type": "array", "items": item, "minItems": 1, "maxItems": MAX_POOLS}, item]},
    )


BOOL = Type(_bool, "boolean", {"anyOf": [{"type": "boolean"}, {"enum": ["true", "false", "True", "False"]}]})
STR = Type(_str, "string", {"type": "string", "minLength": 1})
ASN = Type(
    _asn,
    "ASN (1..4294967294; not 23456 or 65535)",
    {
        "anyOf": [
            {"type": "integer", "minimum": 1, "maximum": 4294967294, "not": {"enum": [23456, 65535]}},
            {"type": "string", "pattern": "^[0-9]+$"},
        ]
    },
)
AZS = Type(
    _azs,
    "list of 1-8 availability zone names",
    {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1, "maxItems": 8, "uniqueItems": True},
)
PEER_NAME = Type(
    _str,
    "string: 1-20 of a-z, 0-9, '-', starting with a letter",
    {"type": "string", "pattern": "^[a-z][a-z0-9-]{0,19}$"},
)
PEER_ADDRESS = Type(_str, "IPv4 address", {"type": "string", "format": "ipv4"})
# Read by the Pulumi program (infra/program.py), never by the plan; the rules: infra/passwords.py.
SECRET = Type(
    _str,
    "string, a Pulumi secret",
    {"type": "object", "properties": {"secure": {"type": "string"}}, "required": ["secure"]},
)
ONPREM = Type(
    lambda key, value: _onprem(value),
    "list of peers (`name`, `address`, `asn`)",
    {"type": "array", "maxItems": MAX_ONPREM_PEERS},
)


@dataclass(frozen=True)
class Key:
    """One stack config key: `section.name` (`name` at the top level, `onprem[].name` in a
    list's items), its type, its default (as written in a stack file) and its meaning."""

    name: str
    type: Type
    default: Any
    doc: str
    # "" or " (a hint)": the key must be given; the error reads "<key> = None: is required (a hint)".
    required: str | None = None
    # How the default depends on other keys, when it does (docs only; parse() applies it).
    default_doc: str | None = None

    def parsed_default(self) -> Any:
        return self.type.conv(f"{PROJECT}:{self.name}", self.default) if isinstance(self.default, str) else self.default


# The first ASN of the docker hosts with `hosts.asnMode: per-host` and no `hosts.asn`.
PER_HOST_ASN_START = 4200000000

# The one definition of the stack config: parse() reads every key through it (converter,
# default), and docs/config.md and docs/config.schema.json are generated from it
# (python -m tools.gendocs; tests/unit/test_docs_generated.py fails when they are stale).
# The cross-field checks (overlaps, capacity, quotas) are parse()'s and _check_addressing's.
# Adding a key: one line here, one read in parse(), a field in StackConfig.
SCHEMA: tuple[Key, ...] = (
    Key(
        "region",
        STR,
        None,
        "AWS region of the stack; the program's AWS provider uses it (`aws:region` is not read)",
        required=" (e.g. eu-west-1)",
    ),
    Key(
        "environment",
        _choice_type(ENVIRONMENTS),
        "test",
        "`prod` protects the routers' ENIs and EIPs "
        "from deletion and keeps the agent bucket on delete; `test` stacks tear down whole",
    ),
    Key(
        "vpc.cidr",
        _net_type(4),
        None,
        "the VPC's IPv4 CIDR, /16 to /24: split into a public (routers) and a private (docker hosts) subnet per AZ",
        required=" (e.g. 10.20.0.0/16)",
    ),
    Key("vpc.ipv6", BOOL, True, "dual stack: an Amazon IPv6 block for the VPC, IPv6 pools, tunnels and sessions"),
    Key(
        "vpc.azs",
        AZS,
        None,
        "the availability zones, in order: routers and hosts are spread across them round-robin",
        required=" (a list of availability zones)",
    ),
    Key(
        "vpc.failover",
        _choice_type(FAILOVER_MODES),
        "static",
        "how the VPC route tables follow a "
        "router's loss: `routeServer` (VPC Route Server re-points them at a live router) or `static` "
        "(one fixed router per AZ); docs/vpc-failover.md",
    ),
    Key(
        "vpc.routeServerAsn",
        ASN,
        64512,
        "the VPC Route Server's ASN (`failover: routeServer`); must differ from every other ASN of the stack",
    ),
    Key(
        "routers.count",
        _int_type(1, 32),
        2,
        "routing instances (at most `maxRouters`; past 32 a host's FRR config outgrows SSM's 8 KB parameter)",
    ),
    Key("routers.asn", ASN, 65000, "the routers' ASN (eBGP to the hosts and on-prem)"),
    Key("routers.instanceType", STR, "c6in.large", "EC2 instance type of the routers"),
    Key(
        "routers.maxRouters",
        _int_type(1, 64),
        8,
        "routers the stack may ever grow to, a power of two: "
        "the tunnel pools are split in 2 x maxRouters slices, so changing it renumbers every tunnel",
    ),
    Key("hosts.count", _int_type(1, 100000), 1, "docker hosts"),
    Key(
        "hosts.asn",
        ASN,
        65100,
        "the hosts' ASN (`asnMode: shared`), or the first host's (`per-host`: host k, counted from 0, has asn + k)",
        default_doc=f"65100; {PER_HOST_ASN_START} with `asnMode: per-host`",
    ),
    Key(
        "hosts.asnMode",
        _choice_type(("shared", "per-host")),
        "shared",
        "one ASN for every host, or one each (on-prem routers then see which host a path comes from)",
    ),
    Key("hosts.instanceType", STR, "m6i.xlarge", "EC2 instance type of the docker hosts"),
    Key(
        "hosts.blockPrefix",
        _int_type(16, 30),
        24,
        "prefix length of each host's IPv4 container block, taken from the pools in order",
    ),
    Key("hosts.ipv6BlockPrefix", _int_type(64, 124), 112, "prefix length of each host's IPv6 container block"),
    Key("hosts.ipv6Delegation", BOOL, False, "delegate an IPv6 /80 prefix to each host's ENI (needs `vpc.ipv6`)"),
    Key(
        "hosts.rootVolumeGb",
        _int_type(8, 16384),
        50,
        "root volume of the docker hosts in GiB (images and container layers live there)",
    ),
    Key(
        "pools.ipv4",
        _net_list_type(4),
        None,
        "container IPv4 pools, outside the VPC CIDR: host blocks are taken from their start",
        required=" (container IPv4 pools)",
    ),
    Key("pools.ipv6", _net_list_type(6), (), "container IPv6 pools; required with `vpc.ipv6`, refused without it"),
    Key(
        "pools.sharedIpv4",
        _net_list_type(4),
        (),
        "inside the pools and outside every host block: "
        "the only IPv4 addresses more than one host may announce (moves, anycast)",
    ),
    Key("pools.sharedIpv6", _net_list_type(6), (), "the same for IPv6"),
    Key(
        "tunnels.ipv4",
        _net_type(4),
        "169.254.64.0/18",
        "inner IPv4 addresses of the GRE tunnels, one /31 per pairing; must avoid AWS's reserved link-local ranges",
    ),
    Key(
        "tunnels.ipv6",
        _net_type(6),
        "fd00:7e::/64",
        "inner IPv6 addresses of the tunnels, one /127 per pairing",
        default_doc="fd00:7e::/64 with `vpc.ipv6`, else none",
    ),
    Key(
        "tunnels.mtu",
        _int_type(1280, 8973),
        8973,
        "MTU of the tunnels inside the VPC (9001 jumbo frames - 28 bytes of outer IPv4 and keyed GRE)",
    ),
    Key(
        "tunnels.onpremMtu",
        _int_type(1280, 8973),
        1472,
        "MTU of the tunnels to on-prem, across the internet (1500 - 28)",
    ),
    Key("bgp.keepalive", _int_type(1, 60), 3, "BGP keepalive in seconds"),
    Key("bgp.hold", _int_type(3, 180), 9, "BGP hold time in seconds, at least 3 x keepalive"),
    Key("bgp.bfdInterval", _int_type(50, 60000), 300, "BFD transmit and receive interval in ms"),
    Key("bgp.bfdMultiplier", _int_type(2, 255), 3, "BFD packets missed before the session is down"),
    Key(
        "bgp.maxPrefix",
        _int_type(1, 4294967295),
        2000,
        "max-prefix of each on-prem session and family (host sessions take their block plus the shared ranges)",
    ),
    Key(
        "bgp.announce",
        _choice_type(ANNOUNCE_MODES),
        "aggregates",
        "what the routers announce on-prem: the pools as aggregates, or every container's /32 and /128",
    ),
    # Hosts restart their agent, not FRR; graceful restart is off by default because BFD
    # is on: a BFD down must withdraw at once, not keep stale paths for restart-time.
    Key(
        "bgp.gracefulRestart",
        BOOL,
        False,
        "BGP graceful restart (restart-time 120 s); off so that a BFD down withdraws at once",
    ),
    Key(
        "onprem",
        ONPREM,
        (),
        f"on-prem datacenter routers the routers peer with over GRE + eBGP, at most {MAX_ONPREM_PEERS}",
    ),
    Key("onprem[].name", PEER_NAME, None, "the peer's name (not `router-*` or `host-*`), unique", required=""),
    Key(
        "onprem[].address",
        PEER_ADDRESS,
        None,
        "the peer's public IPv4 address (its GRE endpoint), unique, outside the VPC and the pools",
        required=" (the peer's public IPv4 address)",
    ),
    Key("onprem[].asn", ASN, None, "the peer's ASN, not the routers' or the hosts'", required=""),
    Key(
        "routing.mode",
        _choice_type(ROUTING_MODES),
        "router",
        "VPC route tables send the pools to "
        "the routers (`router`), or each host's block straight to its ENI (`static`)",
    ),
    Key(
        "agent.pollInterval",
        _int_type(5, 3600),
        15,
        "seconds between an agent's polls of its "
        "`revision` parameter (one SSM GetParameter each, shared by the account's region)",
    ),
    Key(
        "bgpPassword",
        SECRET,
        None,
        "the BGP (TCP MD5) password of the sessions inside the stack "
        "(routers and docker hosts): `pulumi config set --secret overlay:bgpPassword ...`; read by the "
        "program, required by `pulumi up`",
        # Required by the program, not the plan: parse() never reads a secret.
        required=f" (pulumi config set --secret {PROJECT}:bgpPassword ...)",
    ),
    Key(
        "onpremBgpPassword",
        SECRET,
        None,
        "the on-prem (datacenter) sessions' own BGP password, read "
        "by routers only so a docker host never holds it: `pulumi config set --secret "
        "overlay:onpremBgpPassword ...`; required by `pulumi up` with on-prem peers, must differ from "
        "bgpPassword",
    ),
)
KEYS = {k.name: k for k in SCHEMA}
TOP_KEYS = tuple(dict.fromkeys(k.name.split(".")[0] for k in SCHEMA if "[]" not in k.name))
# Read by the Pulumi program as a secret; the plan never sees it.
SECRET_KEYS = tuple(k.name for k in SCHEMA if k.type is SECRET)
SECTION_KEYS = {
    section: tuple(k.name.split(".", 1)[1] for k in SCHEMA if k.name.startswith(f"{section}."))
    for section in dict.fromkeys(k.name.split(".")[0] for k in SCHEMA if "." in k.name)
}
ONPREM_KEYS = SECTION_KEYS["onprem[]"]


def parse(raw: Mapping[str, Any], stack: str) -> StackConfig:
    """Validate the `overlay:*` config values (namespace already stripped) of one stack."""
    top = _Section(raw, "")
    region = top.get("region")
    environment = top.get("environment")

    vpc = _Section(raw.get("vpc"), "vpc")
    vpc_cidr = vpc.get("cidr")
    if not 16 <= vpc_cidr.prefixlen <= 24:
        # AWS allows VPC CIDRs between /16 and /28; the plan splits the VPC in 16 subnets
        # and needs room for fixed instance addresses in each, so /24 is the floor here.
        raise ConfigError("overlay:vpc.cidr", str(vpc_cidr), "prefix length must be /16 to /24")
    ipv6 = vpc.get("ipv6")
    azs = vpc.get("azs")
    vpc_failover = vpc.get("failover")
    route_server_asn = vpc.get("routeServerAsn")

    routers = _Section(raw.get("routers"), "routers")
    max_routers = routers.get("maxRouters")
    if max_routers & (max_routers - 1):
        raise ConfigError(
            "overlay:routers.maxRouters",
            max_routers,
            "must be a power of two (the tunnel pool is split in equal slices)",
        )
    # Every host's FRR config lists every router (two sessions each): past 32 routers it
    # outgrows SSM's 8 KB parameter limit.
    router_count = routers.get("count")
    if router_count > max_routers:
        raise ConfigError("overlay:routers.count", router_count, f"exceeds routers.maxRouters ({max_routers})")
    router_asn = routers.get("asn")
    router_type = routers.get("instanceType")

    hosts = _Section(raw.get("hosts"), "hosts")
    host_count = hosts.get("count")
    host_asn_mode = hosts.get("asnMode")
    host_asn = hosts.get("asn") if host_asn_mode == "shared" else hosts.get("asn", PER_HOST_ASN_START)
    if host_asn_mode == "per-host" and host_asn + host_count - 1 > 4294967294:
        raise ConfigError(
            "overlay:hosts.asn", host_asn, f"per-host ASNs from here run past 4294967294 for {host_count} hosts"
        )
    host_asns = range(host_asn, host_asn + (host_count if host_asn_mode == "per-host" else 1))
    if router_asn in host_asns:
        raise ConfigError(
            "overlay:routers.asn", router_asn, "must differ from the docker hosts' ASNs (routers and hosts peer eBGP)"
        )
    if host_asn_mode == "per-host" and 23456 in host_asns:
        raise ConfigError("overlay:hosts.asn", host_asn, "per-host ASN range includes 23456 (AS_TRANS)")
    host_type = hosts.get("instanceType")
    block_prefix = hosts.get("blockPrefix")
    block6_prefix = hosts.get("ipv6BlockPrefix")
    delegation = hosts.get("ipv6Delegation")
    # Debian's AMI snapshot is 8 GiB (the floor); gp3 volumes go up to 16 TiB.
    root_volume = hosts.get("rootVolumeGb")
    if delegation and not ipv6:
        raise ConfigError("overlay:hosts.ipv6Delegation", True, "needs overlay:vpc.ipv6 = true")

    pools = _Section(raw.get("pools"), "pools")
    pools_v4 = pools.get("ipv4")
    pools_v6 = pools.get("ipv6")
    if ipv6 and not pools_v6:
        raise ConfigError("overlay:pools.ipv6", None, "is required when overlay:vpc.ipv6 is true")
    if not ipv6 and pools_v6:
        raise ConfigError("overlay:pools.ipv6", [str(p) for p in pools_v6], "given but overlay:vpc.ipv6 is false")

    shared_v4 = pools.get("sharedIpv4")
    shared_v6 = pools.get("sharedIpv6")
    if not ipv6 and shared_v6:
        raise ConfigError(
            "overlay:pools.sharedIpv6", [str(p) for p in shared_v6], "given but overlay:vpc.ipv6 is false"
        )

    tunnels = _Section(raw.get("tunnels"), "tunnels")
    tunnel_v4 = tunnels.get("ipv4")
    tunnel_v6 = tunnels.get("ipv6") if ipv6 else tunnels.get("ipv6", None)
    if not ipv6 and tunnel_v6 is not None and "ipv6" in (raw.get("tunnels") or {}):
        raise ConfigError("overlay:tunnels.ipv6", str(tunnel_v6), "given but overlay:vpc.ipv6 is false")
    # GRE with a key adds 8 bytes plus the 20-byte outer IPv4 header: 9001 - 28 inside a VPC
    # (jumbo frames), 1500 - 28 across the internet to on-prem.
    mtu = tunnels.get("mtu")
    onprem_mtu = tunnels.get("onpremMtu")

    bgp_s = _Section(raw.get("bgp"), "bgp")
    keepalive = bgp_s.get("keepalive")
    hold = bgp_s.get("hold")
    if hold < 3 * keepalive:
        raise ConfigError("overlay:bgp.hold", hold, f"must be at least 3 x keepalive ({3 * keepalive})")
    bgp = BgpConfig(
        keepalive=keepalive,
        hold=hold,
        bfd_interval_ms=bgp_s.get("bfdInterval"),
        bfd_multiplier=bgp_s.get("bfdMultiplier"),
        max_prefix=bgp_s.get("maxPrefix"),
        announce=bgp_s.get("announce"),
        graceful_restart=bgp_s.get("gracefulRestart"),
    )

    onprem = top.get("onprem")
    routing = _Section(raw.get("routing"), "routing")
    routing_mode = routing.get("mode")
    agent = _Section(raw.get("agent"), "agent")
    poll_interval = agent.get("pollInterval")

    cfg = StackConfig(
        stack=stack,
        region=region,
        environment=environment,
        vpc_cidr=vpc_cidr,
        ipv6=ipv6,
        azs=azs,
        router_count=router_count,
        router_asn=router_asn,
        router_instance_type=router_type,
        max_routers=max_routers,
        host_count=host_count,
        host_asn=host_asn,
        host_asn_mode=host_asn_mode,
        host_instance_type=host_type,
        host_block_prefix=block_prefix,
        host_ipv6_block_prefix=block6_prefix,
        host_ipv6_delegation=delegation,
        pools_v4=pools_v4,
        pools_v6=pools_v6,
        shared_v4=shared_v4,
        shared_v6=shared_v6,
        tunnel_v4=tunnel_v4,
        tunnel_v6=tunnel_v6,
        mtu=mtu,
        onprem_mtu=onprem_mtu,
        bgp=bgp,
        onprem=onprem,
        routing_mode=routing_mode,
        host_root_volume_gb=root_volume,
        vpc_failover=vpc_failover,
        route_server_asn=route_server_asn,
        poll_interval=poll_interval,
    )
    _check_addressing(cfg)
    _check_ssm_quotas(cfg)
    return cfg


def _onprem(value: Any) -> tuple[OnPremPeer, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError("overlay:onprem", value, "must be a list of peers (name, address, asn)")
    peers: list[OnPremPeer] = []
    for i, item in enumerate(value):
        prefix = f"overlay:onprem[{i}]."
        sec = _Section(item, "onprem[]", prefix)
        name = sec.get("name")
        if not _valid_name(name):
            raise ConfigError(
                f"{prefix}name", name, "must be 1-20 characters of a-z, 0-9 and '-', starting with a letter"
            )
        if any(p.name == name for p in peers):
            raise ConfigError(f"{prefix}name", name, "duplicate on-prem peer name")
        if name.startswith(("router-", "host-")):
            raise ConfigError(f"{prefix}name", name, "'router-' and 'host-' names are the plan's own")
        addr_raw = sec.get("address")
        try:
            address = ipaddress.IPv4Address(addr_raw)
        except ValueError:
            raise ConfigError(f"{prefix}address", addr_raw, "is not a valid IPv4 address") from None
        why = special_range(address)
        if why is not None:
            raise ConfigError(f"{prefix}address", addr_raw, f"is not a usable peer address: {why}")
        if any(p.address == address for p in peers):
            raise ConfigError(f"{prefix}address", addr_raw, "duplicate on-prem peer address")
        asn = sec.get("asn")
        peers.append(OnPremPeer(name=name, address=address, asn=asn))
    return tuple(peers)


def _valid_name(name: str) -> bool:
    return 1 <= len(name) <= 20 and name[0].isalpha() and all(c.islower() or c.isdigit() or c == "-" for c in name)


def _check_addressing(cfg: StackConfig) -> None:
    """Cross-field checks: overlaps, reserved ranges, capacity."""
    named_v4 = [("overlay:vpc.cidr", cfg.vpc_cidr)]
    named_v4 += [(f"overlay:pools.ipv4[{i}]", p) for i, p in enumerate(cfg.pools_v4)]
    named_v4.append(("overlay:tunnels.ipv4", cfg.tunnel_v4))
    _no_overlap(named_v4)
    named_v6 = [(f"overlay:pools.ipv6[{i}]", p) for i, p in enumerate(cfg.pools_v6)]
    if cfg.tunnel_v6 is not None:
        named_v6.append(("overlay:tunnels.ipv6", cfg.tunnel_v6))
    _no_overlap(named_v6)

    for key, net in [*named_v4, *named_v6]:
        if key == "overlay:vpc.cidr":
            continue
        why = special_range(net, link_local_ok=key == "overlay:tunnels.ipv4")
        if why is not None:
            raise ConfigError(key, str(net), f"overlaps a special-purpose range: {why}")

    for reserved in AWS_RESERVED_LINK_LOCAL:
        if cfg.tunnel_v4.overlaps(reserved):
            raise ConfigError(
                "overlay:tunnels.ipv4", str(cfg.tunnel_v4), f"overlaps AWS-reserved link-local range {reserved}"
            )
        for i, pool in enumerate(cfg.pools_v4):
            if pool.overlaps(reserved):
                raise ConfigError(
                    f"overlay:pools.ipv4[{i}]", str(pool), f"overlaps AWS-reserved link-local range {reserved}"
                )
    for i, pool in enumerate(cfg.pools_v4):
        if pool.prefixlen > cfg.host_block_prefix:
            raise ConfigError(
                f"overlay:pools.ipv4[{i}]", str(pool), f"is smaller than one host block (/{cfg.host_block_prefix})"
            )
    for i, pool6 in enumerate(cfg.pools_v6):
        if pool6.prefixlen > cfg.host_ipv6_block_prefix:
            raise ConfigError(
                f"overlay:pools.ipv6[{i}]",
                str(pool6),
                f"is smaller than one host block (/{cfg.host_ipv6_block_prefix})",
            )

    _check_shared("overlay:pools.sharedIpv4", cfg.shared_v4, cfg.pools_v4, cfg.host_block_prefix, cfg.host_count)
    _check_shared("overlay:pools.sharedIpv6", cfg.shared_v6, cfg.pools_v6, cfg.host_ipv6_block_prefix, cfg.host_count)
    if cfg.host_count > MAX_HOSTS_FILTERED:
        raise ConfigError(
            "overlay:hosts.count",
            cfg.host_count,
            f"at most {MAX_HOSTS_FILTERED} hosts: each host is one entry of the routers' import "
            "route-maps (sequence numbers up to 65535)",
        )

    blocks_v4 = sum(2 ** (cfg.host_block_prefix - p.prefixlen) for p in cfg.pools_v4)
    if cfg.host_count > blocks_v4:
        raise ConfigError(
            "overlay:hosts.count",
            cfg.host_count,
            f"too many hosts: the IPv4 pools hold {blocks_v4} blocks of /{cfg.host_block_prefix}",
        )
    if cfg.ipv6:
        blocks_v6 = sum(2 ** (cfg.host_ipv6_block_prefix - p.prefixlen) for p in cfg.pools_v6)
        if cfg.host_count > blocks_v6:
            raise ConfigError(
                "overlay:hosts.count",
                cfg.host_count,
                f"too many hosts: the IPv6 pools hold {blocks_v6} blocks of /{cfg.host_ipv6_block_prefix}",
            )

    # The tunnel pools are split in 2 x maxRouters slices: slice j holds router j's host
    # pairings, slice maxRouters + j its on-prem pairings; one /31 (/127) per pairing.
    slices = 2 * cfg.max_routers
    slice_bits = slices.bit_length() - 1
    if cfg.tunnel_v4.prefixlen + slice_bits > 31:
        raise ConfigError(
            "overlay:tunnels.ipv4", str(cfg.tunnel_v4), f"too small to split in {slices} slices of /31 pairings"
        )
    per_slice = 2 ** (31 - cfg.tunnel_v4.prefixlen - slice_bits)
    if cfg.host_count > per_slice:
        raise ConfigError(
            "overlay:hosts.count",
            cfg.host_count,
            f"too many hosts for overlay:tunnels.ipv4 {cfg.tunnel_v4}: each router's "
            f"slice holds {per_slice} pairings (routers.maxRouters = {cfg.max_routers})",
        )
    if len(cfg.onprem) > MAX_ONPREM_PEERS:
        raise ConfigError(
            "overlay:onprem",
            len(cfg.onprem),
            f"at most {MAX_ONPREM_PEERS} on-prem peers (each router's FRR config must fit SSM's 8 KB parameter limit)",
        )
    if len(cfg.onprem) > per_slice:
        raise ConfigError("overlay:onprem", len(cfg.onprem), f"more peers than a slice holds ({per_slice})")
    if cfg.tunnel_v6 is not None and cfg.tunnel_v6.prefixlen + slice_bits > 127:
        raise ConfigError(
            "overlay:tunnels.ipv6", str(cfg.tunnel_v6), f"too small to split in {slices} slices of /127 pairings"
        )

    # Fixed instance addresses: from offset 10 up to the middle of each /prefix+4 subnet,
    # the band the program reserves for them (infra.plan.build.fixed_band); AWS keeps the
    # first four addresses, and its own ENIs take the upper half.
    per_subnet = fixed_band_capacity(cfg.vpc_cidr.prefixlen + 4)
    n_az = len(cfg.azs)
    if -(-cfg.host_count // n_az) > per_subnet:
        raise ConfigError(
            "overlay:hosts.count",
            cfg.host_count,
            f"too many hosts for overlay:vpc.cidr {cfg.vpc_cidr}: each private subnet "
            f"holds {per_subnet} fixed addresses",
        )
    if -(-cfg.router_count // n_az) > per_subnet:
        raise ConfigError("overlay:routers.count", cfg.router_count, "too many routers for the VPC subnets")

    if cfg.vpc_failover == "routeServer":
        # The routers peer eBGP with the route server: its ASN must be nobody else's.
        host_asns = range(cfg.host_asn, cfg.host_asn + (cfg.host_count if cfg.host_asn_mode == "per-host" else 1))
        clash = (
            "overlay:routers.asn"
            if cfg.route_server_asn == cfg.router_asn
            else "overlay:hosts.asn"
            if cfg.route_server_asn in host_asns
            else next(
                (f"overlay:onprem[{i}].asn" for i, o in enumerate(cfg.onprem) if o.asn == cfg.route_server_asn), None
            )
        )
        if clash:
            raise ConfigError(
                "overlay:vpc.routeServerAsn",
                cfg.route_server_asn,
                f"must differ from {clash} (the routers peer eBGP with the route server)",
            )

    for i, peer in enumerate(cfg.onprem):
        for key, net in named_v4:
            if peer.address in net:
                raise ConfigError(f"overlay:onprem[{i}].address", str(peer.address), f"lies inside {key} ({net})")
        if peer.asn == cfg.router_asn:
            raise ConfigError(
                f"overlay:onprem[{i}].asn", peer.asn, "must differ from overlay:routers.asn (on-prem peering is eBGP)"
            )
        if cfg.host_asn <= peer.asn < cfg.host_asn + (cfg.host_count if cfg.host_asn_mode == "per-host" else 1):
            # Hosts drop every route whose AS path holds their own ASN (BGP loop prevention):
            # the on-prem routes would never reach them.
            raise ConfigError(
                f"overlay:onprem[{i}].asn",
                peer.asn,
                "must differ from the docker hosts' ASNs (overlay:hosts.asn; hosts would drop "
                "on-prem routes as AS-path loops)",
            )


# SSM Parameter Store's defaults per account and region (AWS General Reference, "AWS
# Systems Manager endpoints and quotas"): GetParameter, GetParameters and
# GetParametersByPath share 40 transactions per second (higher throughput is a paid
# setting), and at most 10,000 Standard-tier parameters exist.
SSM_DEFAULT_TPS = 40
SSM_STANDARD_PARAMETERS = 10000


def ssm_polling_tps(cfg: StackConfig) -> float:
    """The stack's steady SSM load: every instance reads its `revision` once per poll."""
    return (cfg.router_count + cfg.host_count) / cfg.poll_interval


def ssm_standard_parameters(cfg: StackConfig) -> int:
    """Standard-tier parameters of the stack (infra.parameters.TIERS): per instance `agent`
    and `revision`, per tunnel end a `tunnels/<peer>` (both ends of a host pairing, the
    router's end of an on-prem one), per router of an IPv6 stack its `vpc`. `frr` is
    Advanced; the passwords (the stack's, and the on-prem one with on-prem peers) are
    SecureStrings, Standard tier too."""
    instances = cfg.router_count + cfg.host_count
    return (
        2 * instances
        + 2 * cfg.router_count * cfg.host_count
        + cfg.router_count * len(cfg.onprem)
        + (cfg.router_count if cfg.ipv6 else 0)
        + 1
        + (1 if cfg.onprem else 0)
    )


def _check_ssm_quotas(cfg: StackConfig) -> None:
    tps = ssm_polling_tps(cfg)
    if tps > SSM_DEFAULT_TPS:
        need = -(-(cfg.router_count + cfg.host_count) // SSM_DEFAULT_TPS)
        raise ConfigError(
            "overlay:agent.pollInterval",
            cfg.poll_interval,
            f"{cfg.router_count + cfg.host_count} instances polling every {cfg.poll_interval} s "
            f"make {tps:.1f} SSM requests/s, over the account's default {SSM_DEFAULT_TPS} "
            f"(shared by the region); poll every {need} s or more",
        )
    count = ssm_standard_parameters(cfg)
    if count > SSM_STANDARD_PARAMETERS:
        raise ConfigError(
            "overlay:hosts.count",
            cfg.host_count,
            f"the stack needs {count} Standard SSM parameters; an account holds at most "
            f"{SSM_STANDARD_PARAMETERS} per region",
        )


def fixed_band_end(size: int) -> int:
    """The offset where a subnet's fixed-address band ends (exclusive): the middle, leaving
    the upper half to AWS's own ENIs; in subnets too small for that (/27, /28) the rest of
    the subnet but its last address, which AWS reserves."""
    return size // 2 if size // 2 - 10 >= 16 else size - 1


def fixed_band_capacity(subnet_prefixlen: int) -> int:
    """Fixed addresses per subnet: offset 10 up to fixed_band_end (infra.plan.build.fixed_band)."""
    return fixed_band_end(2 ** (32 - subnet_prefixlen)) - 10


# One address family at a time: IPv4 ranges against IPv4 pools, IPv6 against IPv6.
_Net = TypeVar("_Net", ipaddress.IPv4Network, ipaddress.IPv6Network)


def _check_shared(
    key: str, shared: tuple[_Net, ...], pools: tuple[_Net, ...], block_prefix: int, host_count: int
) -> None:
    """Each shared range lies inside one pool and outside every host's block; no two overlap."""
    for i, net in enumerate(shared):
        k = f"{key}[{i}]"
        pool_index = next((j for j, p in enumerate(pools) if net.subnet_of(p)), None)
        if pool_index is None:
            raise ConfigError(k, str(net), f"must lie inside one of the pools ({', '.join(map(str, pools))})")
        for other in shared[:i]:
            if net.overlaps(other):
                raise ConfigError(k, str(net), f"overlaps {other}, another shared range")
        # Hosts take blocks from the start of the pools, in pool order (infra/plan/build.py
        # nth_block): the first block this range touches tells whether a host holds it.
        pool = pools[pool_index]
        before = sum(2 ** (block_prefix - p.prefixlen) for p in pools[:pool_index])
        first = before + ((int(net.network_address) - int(pool.network_address)) >> (net.max_prefixlen - block_prefix))
        if first < host_count:
            raise ConfigError(
                k,
                str(net),
                f"overlaps host-{first + 1}'s block (hosts take /{block_prefix} blocks "
                "from the start of the pools; put shared ranges at the end)",
            )


def _no_overlap(named: list[tuple[str, Any]]) -> None:
    for i, (key_a, net_a) in enumerate(named):
        for key_b, net_b in named[i + 1 :]:
            if net_a.overlaps(net_b):
                raise ConfigError(key_b, str(net_b), f"overlaps {key_a} ({net_a})")
