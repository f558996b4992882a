"""The agent's configuration: the `agent` JSON document (docs/contracts.md) as a validated, frozen dataclass."""

from __future__ import annotations

import ipaddress
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError

# Route protocol numbers with an owner (include/uapi/linux/rtnetlink.h: 0 unspec, 1 redirect,
# 2 kernel, 3 boot, 4 static, 8 gated, 9 ra, 10 mrt, 11 zebra, 12 bird, 13 dnrouted, 14 xorp,
# 15 ntk, 16 dhcp, 17 mrouted, 18 keepalived, 42 babel, 99 openr, 186 bgp, 187 isis, 188 ospf,
# 189 rip, 192 eigrp; FRR's zebra/rt_netlink.h adds 190-198 for its other daemons: nhrp, ldp,
# sharp, pbr, static, openfabric, srte). A number from this set would make zebra treat our
# routes as its own, the kernel or dhcpcd/keepalived/bird delete or replace them, or hide them
# from FRR's `redistribute kernel`.
FORBIDDEN_PROTOCOLS = frozenset({*range(0, 19), 42, 99, *range(186, 199)})
_FORBIDDEN_TEXT = "0-18, 42, 99, 186-198"
# Bounds of the settings: an interval below a second turns the agent into a busy loop (and
# an SSM throttle), one above a day means it never notices a change.
INTERVAL_MIN, INTERVAL_MAX = 1.0, 86400.0
MAX_NESTING = 32  # JSON depth: the agent document is 3 levels deep
MAX_POOLS = 64
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z")

IPv4Net = ipaddress.IPv4Network
IPv6Net = ipaddress.IPv6Network


@dataclass(frozen=True)
class Settings:
    route_protocol: int = 149
    route_protocol_name: str = "overlay"
    poll_interval: float = 15.0
    resync_interval: float = 30.0


@dataclass(frozen=True)
class AgentConfig:
    """The agent document, validated. `blocks_*` are None on routers."""

    project: str
    stack: str
    instance: str
    role: str
    asn: int
    underlay_address: ipaddress.IPv4Address | None
    block_ipv4: IPv4Net | None
    block_ipv6: IPv6Net | None
    pools_ipv4: tuple[IPv4Net, ...]
    pools_ipv6: tuple[IPv6Net, ...]
    settings: Settings
    # Inside the pools: what any host may announce (moves, anycast). The rest of the pools
    # belongs to the hosts' blocks, each to its own host.
    shared_ipv4: tuple[IPv4Net, ...] = ()
    shared_ipv6: tuple[IPv6Net, ...] = ()

    def in_pools(self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        pools = self.pools_ipv4 if addr.version == 4 else self.pools_ipv6
        return any(addr in p for p in pools)

    def in_shared(self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        shared = self.shared_ipv4 if addr.version == 4 else self.shared_ipv6
        return any(addr in p for p in shared)

    def may_announce(self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        """This host's block or a shared range: what the routers accept from this host."""
        block = self.block_ipv4 if addr.version == 4 else self.block_ipv6
        return (block is not None and addr in block) or self.in_shared(addr)


def _need(doc: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in doc:
        raise ConfigError(f"{where}: missing key {key!r}")
    value = doc[key]
    # bool is an int subclass; a JSON true where a number belongs is a mistake.
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ConfigError(f"{where}: {key!r} is {_show(value)}, expected {getattr(kind, '__name__', kind)}")
    return value


def _show(value: Any) -> str:
    try:
        r = repr(value)
    except ValueError:  # an int beyond sys.get_int_max_str_digits()
        r = f"<{type(value).__name__} too large to show>"
    return r if len(r) <= 64 else r[:64] + "..."


def _list(doc: dict[str, Any], key: str, where: str) -> list[Any]:
    value = doc.get(key) or []
    if not isinstance(value, list) or len(value) > MAX_POOLS:
        raise ConfigError(f"{where}.{key} must be a list of at most {MAX_POOLS} networks, got {_show(value)}")
    return value


def _setting(raw: dict[str, Any], key: str, default: Any, kind: type | tuple[type, ...], where: str) -> Any:
    value = raw.get(key, default)
    # bool is an int subclass: `true` is no protocol number; "15" (a string) is no interval.
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ConfigError(
            f"{where}.{key} is {_show(value)}, expected "
            f"{'a number' if kind == (int, float) else getattr(kind, '__name__', kind)}"
        )
    return value


def _depth(doc: Any, limit: int) -> bool:
    """True when `doc` nests deeper than `limit` (iterative: no recursion on hostile input)."""
    stack = [(doc, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, (dict, list)):
            if level > limit:
                return True
            stack.extend((v, level + 1) for v in (node.values() if isinstance(node, dict) else node))
    return False


def loads(text: str | bytes, source: str) -> Any:
    """Decode an agent JSON document (file or SSM value); ConfigError with one line for anything wrong.

    Python's json refuses nesting beyond the interpreter's recursion limit with a
    RecursionError rather than a JSONDecodeError, accepts NaN and Infinity (not JSON), and a
    file may not be UTF-8: all of those are bad input, not crashes.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{source}: not UTF-8 (byte {exc.start})") from None
    if len(text) > 1 << 20:
        raise ConfigError(f"{source}: {len(text)} characters is too large for an agent document")

    def constant(name: str) -> Any:
        raise ConfigError(f"{source}: {name} is not a JSON number")

    try:
        doc = json.loads(text, parse_constant=constant)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source}: not JSON (line {exc.lineno}: {exc.msg})") from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply (at most {MAX_NESTING} levels)") from None
    except ValueError as exc:  # e.g. an integer beyond sys.get_int_max_str_digits()
        raise ConfigError(f"{source}: not JSON ({_show(str(exc))[1:-1]})") from None
    if _depth(doc, MAX_NESTING):
        raise ConfigError(f"{source}: nested too deeply (at most {MAX_NESTING} levels)")
    return doc


def _net(text: Any, version: int, where: str) -> Any:
    try:
        if not isinstance(text, str):  # ip_network(5) would be 0.0.0.5/32
            raise TypeError(f"a {type(text).__name__}, not a string")
        net = ipaddress.ip_network(text, strict=True)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: {_show(text)} is not a network ({_show(str(exc))[1:-1]})") from exc
    if net.version != version:
        raise ConfigError(f"{where}: {_show(text)} is not an IPv{version} network")
    return net


def parse(doc: Any, source: str = "agent") -> AgentConfig:
    """Validate an `agent` document; raise ConfigError with one line naming the field."""
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}: expected a JSON object, got {type(doc).__name__}")
    schema = _need(doc, "schema", int, source)
    if schema != 1:
        raise ConfigError(f"{source}: schema {_show(schema)} not supported (this agent reads schema 1)")
    role = _need(doc, "role", str, source)
    if role not in ("host", "router"):
        raise ConfigError(f"{source}: role {role!r} must be 'host' or 'router'")
    asn = _need(doc, "asn", int, source)
    if not 1 <= asn <= 4294967295:
        raise ConfigError(f"{source}: asn {_show(asn)} out of range")

    underlay = doc.get("underlay") or {}
    if not isinstance(underlay, dict):
        raise ConfigError(f"{source}: underlay must be an object, got {_show(underlay)}")
    underlay_address = None
    if underlay.get("address"):
        try:
            if not isinstance(underlay["address"], str):  # IPv4Address(5) would be 0.0.0.5
                raise TypeError(underlay["address"])
            underlay_address = ipaddress.IPv4Address(underlay["address"])
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{source}: underlay.address {_show(underlay['address'])} is not IPv4") from exc

    pools = _need(doc, "pools", dict, source)
    pools4 = tuple(_net(p, 4, f"{source}: pools.ipv4") for p in _list(pools, "ipv4", f"{source}: pools"))
    pools6 = tuple(_net(p, 6, f"{source}: pools.ipv6") for p in _list(pools, "ipv6", f"{source}: pools"))

    shared = doc.get("shared") or {}
    if not isinstance(shared, dict):
        raise ConfigError(f"{source}: shared must be an object with ipv4 and ipv6 lists")
    shared4 = tuple(_net(p, 4, f"{source}: shared.ipv4") for p in shared.get("ipv4") or [])
    shared6 = tuple(_net(p, 6, f"{source}: shared.ipv6") for p in shared.get("ipv6") or [])
    for net in shared4 + shared6:
        if not any(net.version == p.version and net.subnet_of(p) for p in pools4 + pools6):
            raise ConfigError(f"{source}: shared range {net} lies outside the pools")

    blocks = doc.get("blocks")
    block4 = block6 = None
    if role == "host":
        if not isinstance(blocks, dict) or not blocks.get("ipv4"):
            raise ConfigError(f"{source}: a host needs blocks.ipv4")
        block4 = _net(blocks["ipv4"], 4, f"{source}: blocks.ipv4")
        if not any(block4.subnet_of(p) for p in pools4):
            raise ConfigError(f"{source}: blocks.ipv4 {block4} lies outside pools.ipv4")
        if blocks.get("ipv6"):
            block6 = _net(blocks["ipv6"], 6, f"{source}: blocks.ipv6")
            if not any(block6.subnet_of(p) for p in pools6):
                raise ConfigError(f"{source}: blocks.ipv6 {block6} lies outside pools.ipv6")
        for block in (block4, block6):
            clash = next(
                (
                    n
                    for n in shared4 + shared6
                    if block is not None and n.version == block.version and n.overlaps(block)
                ),
                None,
            )
            if clash is not None:
                raise ConfigError(f"{source}: shared range {clash} overlaps this host's block {block}")
    elif blocks is not None:
        raise ConfigError(f'{source}: a router has "blocks": null, got {blocks!r}')

    raw = doc.get("settings") or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: settings must be an object")
    where = f"{source}: settings"
    proto = _setting(raw, "route_protocol", 149, int, where)
    if not 1 <= proto <= 255 or proto in FORBIDDEN_PROTOCOLS:
        raise ConfigError(
            f"{where}.route_protocol {_show(proto)} is reserved or out of range (1-255, not {_FORBIDDEN_TEXT})"
        )
    name = _setting(raw, "route_protocol_name", "overlay", str, where)
    if not _NAME.match(name):
        raise ConfigError(f"{where}.route_protocol_name {_show(name)} must be a short name (letters, digits, _.-)")
    intervals = {}
    for key, default in (("poll_interval", 15.0), ("resync_interval", 30.0)):
        value = float(_setting(raw, key, default, (int, float), where))
        if not math.isfinite(value) or not INTERVAL_MIN <= value <= INTERVAL_MAX:
            raise ConfigError(
                f"{where}.{key} {_show(value)} must be between {INTERVAL_MIN:g} and {INTERVAL_MAX:g} seconds"
            )
        intervals[key] = value
    settings = Settings(route_protocol=proto, route_protocol_name=name, **intervals)

    for key in ("project", "stack", "instance"):
        if key in doc and (not isinstance(doc[key], str) or len(doc[key]) > 128):
            raise ConfigError(f"{source}: {key!r} is {_show(doc[key])}, expected a name")

    return AgentConfig(
        project=str(doc.get("project", "overlay")),
        stack=str(doc.get("stack", "")),
        instance=str(doc.get("instance", "")),
        role=role,
        asn=asn,
        underlay_address=underlay_address,
        block_ipv4=block4,
        block_ipv6=block6,
        pools_ipv4=pools4,
        pools_ipv6=pools6,
        settings=settings,
        shared_ipv4=shared4,
        shared_ipv6=shared6,
    )


def load(path: str | Path) -> AgentConfig:
    """Read and validate an agent JSON file."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from exc
    return parse(loads(data, str(path)), str(path))
