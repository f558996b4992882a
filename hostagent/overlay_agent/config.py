"""The agent's configuration: the `agent` JSON document (docs/contracts.md) as a validated, frozen dataclass."""
from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError

# Route protocol numbers FRR's zebra claims for its own daemons (rtnetlink.h + zebra's
# rt_netlink.h: 11 zebra, 42 babel/ospf range, 186-198 bgp..eigrp) and the kernel's own
# (3 boot, 4 static, 12 ra, 17 dhcp). A number from these sets would make zebra treat our
# routes as its own or hide them from `redistribute kernel`.
FORBIDDEN_PROTOCOLS = frozenset({3, 4, 11, 12, 17, 42, *range(186, 199)})

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

    def in_pools(self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        pools = self.pools_ipv4 if addr.version == 4 else self.pools_ipv6
        return any(addr in p for p in pools)


def _need(doc: dict, key: str, kind: type | tuple, where: str) -> Any:
    if key not in doc:
        raise ConfigError(f"{where}: missing key {key!r}")
    value = doc[key]
    # bool is an int subclass; a JSON true where a number belongs is a mistake.
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ConfigError(f"{where}: {key!r} is {value!r}, expected {getattr(kind, '__name__', kind)}")
    return value


def _net(text: Any, version: int, where: str) -> Any:
    try:
        net = ipaddress.ip_network(text, strict=True)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: {text!r} is not a network ({exc})") from exc
    if net.version != version:
        raise ConfigError(f"{where}: {text!r} is not an IPv{version} network")
    return net


def parse(doc: Any, source: str = "agent") -> AgentConfig:
    """Validate an `agent` document; raise ConfigError with one line naming the field."""
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}: expected a JSON object, got {type(doc).__name__}")
    schema = _need(doc, "schema", int, source)
    if schema != 1:
        raise ConfigError(f"{source}: schema {schema} not supported (this agent reads schema 1)")
    role = _need(doc, "role", str, source)
    if role not in ("host", "router"):
        raise ConfigError(f"{source}: role {role!r} must be 'host' or 'router'")
    asn = _need(doc, "asn", int, source)
    if not 1 <= asn <= 4294967295:
        raise ConfigError(f"{source}: asn {asn} out of range")

    underlay = doc.get("underlay") or {}
    underlay_address = None
    if underlay.get("address"):
        try:
            underlay_address = ipaddress.IPv4Address(underlay["address"])
        except ValueError as exc:
            raise ConfigError(f"{source}: underlay.address {underlay['address']!r} is not IPv4") from exc

    pools = _need(doc, "pools", dict, source)
    pools4 = tuple(_net(p, 4, f"{source}: pools.ipv4") for p in pools.get("ipv4") or [])
    pools6 = tuple(_net(p, 6, f"{source}: pools.ipv6") for p in pools.get("ipv6") or [])

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
    elif blocks is not None:
        raise ConfigError(f"{source}: a router has \"blocks\": null, got {blocks!r}")

    raw = doc.get("settings") or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: settings must be an object")
    settings = Settings(
        route_protocol=int(raw.get("route_protocol", 149)),
        route_protocol_name=str(raw.get("route_protocol_name", "overlay")),
        poll_interval=float(raw.get("poll_interval", 15)),
        resync_interval=float(raw.get("resync_interval", 30)),
    )
    if not 1 <= settings.route_protocol <= 255 or settings.route_protocol in FORBIDDEN_PROTOCOLS:
        raise ConfigError(f"{source}: settings.route_protocol {settings.route_protocol} is reserved or out of "
                          "range (1-255, not 3, 4, 11, 12, 17, 42, 186-198)")
    if settings.resync_interval <= 0 or settings.poll_interval <= 0:
        raise ConfigError(f"{source}: settings intervals must be positive")

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
    )


def load(path: str | Path) -> AgentConfig:
    """Read and validate an agent JSON file."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from exc
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not JSON (line {exc.lineno}: {exc.msg})") from exc
    return parse(doc, str(path))
