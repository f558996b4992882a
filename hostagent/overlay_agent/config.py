"""The agent's configuration: the `agent` JSON document (schemas/agent.schema.json) as a validated, frozen dataclass."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import schemas
from .errors import ConfigError

_SETTINGS = schemas.schema("agent")["properties"]["settings"]["properties"]
# Route protocol numbers with an owner, from the schema's route_protocol (where its sources are cited).
FORBIDDEN_PROTOCOLS = frozenset(_SETTINGS["route_protocol"]["allOf"][0]["not"]["enum"])
MAX_NESTING = 32  # JSON depth: the agent document is 3 levels deep

IPv4Net = ipaddress.IPv4Network
IPv6Net = ipaddress.IPv6Network


@dataclass(frozen=True)
class Settings:
    """The `settings` of the agent document; the defaults are the schema's."""

    route_protocol: int = _SETTINGS["route_protocol"]["default"]
    route_protocol_name: str = _SETTINGS["route_protocol_name"]["default"]
    poll_interval: float = float(_SETTINGS["poll_interval"]["default"])
    resync_interval: float = float(_SETTINGS["resync_interval"]["default"])


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
        raise ConfigError(f"{source}: not JSON ({schemas.show(str(exc))[1:-1]})") from None
    if _depth(doc, MAX_NESTING):
        raise ConfigError(f"{source}: nested too deeply (at most {MAX_NESTING} levels)")
    return doc


def parse(doc: Any, source: str = "agent") -> AgentConfig:
    """Validate an `agent` document; raise ConfigError with one line naming the field.

    The shape is schemas/agent.schema.json (the program validates what it writes against the
    same file); here only what a schema cannot say: blocks and shared ranges inside the pools.
    """
    schemas.validate("agent", doc, source)
    pools, shared = doc["pools"], doc.get("shared") or {}
    pools4 = tuple(IPv4Net(p) for p in pools.get("ipv4", ()))
    pools6 = tuple(IPv6Net(p) for p in pools.get("ipv6", ()))
    shared4 = tuple(IPv4Net(p) for p in shared.get("ipv4", ()))
    shared6 = tuple(IPv6Net(p) for p in shared.get("ipv6", ()))
    for n4 in shared4:
        if not any(n4.subnet_of(p) for p in pools4):
            raise ConfigError(f"{source}: shared: range {n4} lies outside the pools")
    for n6 in shared6:
        if not any(n6.subnet_of(p) for p in pools6):
            raise ConfigError(f"{source}: shared: range {n6} lies outside the pools")

    block4 = block6 = None
    if doc["role"] == "host":
        block4 = IPv4Net(doc["blocks"]["ipv4"])
        if not any(block4.subnet_of(p) for p in pools4):
            raise ConfigError(f"{source}: blocks.ipv4: {block4} lies outside pools.ipv4")
        if doc["blocks"].get("ipv6"):
            block6 = IPv6Net(doc["blocks"]["ipv6"])
            if not any(block6.subnet_of(p) for p in pools6):
                raise ConfigError(f"{source}: blocks.ipv6: {block6} lies outside pools.ipv6")
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
                raise ConfigError(f"{source}: shared: range {clash} overlaps this host's block {block}")

    raw = doc.get("settings") or {}
    settings = Settings(
        # JSON has one number type: 149.0 is the integer 149 to the schema (and here).
        route_protocol=int(raw.get("route_protocol", Settings.route_protocol)),
        route_protocol_name=raw.get("route_protocol_name", Settings.route_protocol_name),
        poll_interval=float(raw.get("poll_interval", Settings.poll_interval)),
        resync_interval=float(raw.get("resync_interval", Settings.resync_interval)),
    )
    address = (doc.get("underlay") or {}).get("address")
    return AgentConfig(
        project=doc.get("project", schemas.default("agent", "project")),
        stack=doc.get("stack", ""),
        instance=doc.get("instance", ""),
        role=doc["role"],
        asn=int(doc["asn"]),
        underlay_address=ipaddress.IPv4Address(address) if address else None,
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
