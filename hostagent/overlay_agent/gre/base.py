"""What a GRE backend is given and must provide: the link spec and the backend interface."""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from .. import schemas
from ..errors import ConfigError


@dataclass(frozen=True)
class LinkSpec:
    """The link-level part of one tunnel: what a backend creates. Addresses and routes are not here.

    Its JSON form is defined by schemas/gre-link.schema.json (part of every tunnel document).
    """

    name: str
    local: str
    remote: str
    key: int | None
    ttl: int
    mtu: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any], *, where: str = "tunnel") -> "LinkSpec":
        """Validate (schemas/gre-link.schema.json) and build; raises ConfigError naming the field, value and reason."""
        schemas.validate("gre-link", data, where)
        for field in ("local", "remote"):
            addr = ipaddress.IPv4Address(data[field])
            if addr.is_multicast or addr.is_unspecified:
                raise ConfigError(f"{where}: {field}: {data[field]!r} is not a unicast address")
        key = data.get("key")
        return cls(
            name=data["name"],
            local=str(ipaddress.IPv4Address(data["local"])),
            remote=str(ipaddress.IPv4Address(data["remote"])),
            # JSON has one number type: 5.0 is the integer 5 to the schema (and here).
            key=None if key is None else int(key),
            ttl=int(data.get("ttl", schemas.default("gre-link", "ttl"))),
            mtu=int(data["mtu"]),
        )


@dataclass
class LinkCounters:
    rx_packets: int = 0
    rx_bytes: int = 0
    tx_packets: int = 0
    tx_bytes: int = 0
    tx_errors: int = 0
    rx_errors: int = 0


class Backend(Protocol):
    """A GRE data path. Only the tunnel reconciler calls these; each is idempotent."""

    name: str  # "kernel" or "userspace", reported by `status`

    def list(self) -> dict[str, LinkSpec]:
        """The tunnels this backend has now (ours only), by link name."""

    def put(self, spec: LinkSpec) -> None:
        """Create the link, or change it in place to match `spec`."""

    def delete(self, name: str) -> None:
        """Remove one of our links; absent is fine."""

    def counters(self) -> dict[str, LinkCounters]:
        """Per-link counters the backend itself keeps (errors the kernel's link stats cannot show)."""
