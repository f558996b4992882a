"""What a GRE backend is given and must provide: the link spec and the backend interface."""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from ..errors import ConfigError

# Linux interface names hold at most IFNAMSIZ - 1 = 15 bytes (include/uapi/linux/if.h).
IFNAMSIZ = 16
# GRE with a key over IPv4: 20 bytes of outer IPv4 + 8 bytes of GRE (RFC 2890).
GRE_KEY_OVERHEAD = 28


@dataclass(frozen=True)
class LinkSpec:
    """The link-level part of one tunnel: what a backend creates. Addresses and routes are not here."""

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
        """Validate and build; raises ConfigError naming the field, value and reason."""
        try:
            name = data["name"]
            local, remote = data["local"], data["remote"]
            key, ttl, mtu = data.get("key"), data.get("ttl", 64), data["mtu"]
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"{where}: missing field {exc}") from None
        if (
            not isinstance(name, str)
            or not name
            or len(name.encode()) >= IFNAMSIZ
            or "/" in name
            or any(c.isspace() for c in name)
        ):
            raise ConfigError(f"{where}: name {name!r} is not a valid interface name (1-15 bytes, no '/' or space)")
        for field, value in (("local", local), ("remote", remote)):
            try:
                addr = ipaddress.ip_address(value)
            except (ValueError, TypeError):
                raise ConfigError(f"{where}: {field} {value!r} is not an IP address") from None
            if addr.version != 4:
                raise ConfigError(f"{where}: {field} {value!r} is IPv6; the underlay is IPv4 (GRE over IPv4)")
            if addr.is_multicast or addr.is_unspecified:
                raise ConfigError(f"{where}: {field} {value!r} is not a unicast address")
        if key is not None and (not isinstance(key, int) or isinstance(key, bool) or not 0 <= key < 2**32):
            raise ConfigError(f"{where}: key {key!r} is not an integer in 0..4294967295 (RFC 2890 key field)")
        if not isinstance(ttl, int) or isinstance(ttl, bool) or not 0 <= ttl <= 255:
            raise ConfigError(f"{where}: ttl {ttl!r} is not an integer in 0..255")
        # 68 is IPv4's minimum MTU (RFC 791); an inner IPv6 needs 1280 but v4-only tunnels may go lower.
        if not isinstance(mtu, int) or isinstance(mtu, bool) or not 68 <= mtu <= 65535 - GRE_KEY_OVERHEAD:
            raise ConfigError(f"{where}: mtu {mtu!r} is not an integer in 68..{65535 - GRE_KEY_OVERHEAD}")
        return cls(
            name=name,
            local=str(ipaddress.ip_address(local)),
            remote=str(ipaddress.ip_address(remote)),
            key=key,
            ttl=ttl,
            mtu=mtu,
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
