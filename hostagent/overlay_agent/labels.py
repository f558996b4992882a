"""Container labels that opt a container into the overlay, parsed into a request or a reason for refusal."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal, Mapping, overload

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

PREFIX = "overlay."
KNOWN = frozenset({"overlay.ipv4", "overlay.ipv6", "overlay.anycast", "overlay.health"})
SHOW = 64  # characters of a label value quoted in a log line or status row; a value can be 100 kB


def show(text: object) -> str:
    """A label value for a log line: repr (so newlines and control characters stay visible), bounded."""
    r = repr(text)
    return r if len(r) <= SHOW else f"{r[:SHOW]}...({len(str(text))} characters)"


def _key(key: str) -> str:
    return key if key.isprintable() and len(key) <= SHOW else show(key)


def _ours(key: str) -> bool:
    # Case variants (Overlay.IPv4, OVERLAY=auto) are ours too: silently ignoring one would
    # leave the container unwired (or auto-addressed) without a word. Docker keys are
    # case-sensitive, so parse() refuses them with the spelling to use.
    if not isinstance(key, str):
        return False
    low = key.lower()
    return (low == "overlay" and key != "overlay") or low.startswith(PREFIX)


class LabelError(ValueError):
    """A label a person must fix; `reason` is the metric label, str() the log line."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


_BROADCAST4 = ipaddress.IPv4Address("255.255.255.255")
_V4_COMPAT = ipaddress.IPv6Network("::/96")  # deprecated IPv4-compatible (RFC 4291 2.5.5.1)
_SITE_LOCAL6 = ipaddress.IPv6Network("fec0::/10")  # deprecated (RFC 3879)


@dataclass(frozen=True)
class Request:
    """What one container asks for. None for an address means "allocate from the host's block"."""

    ipv4: ipaddress.IPv4Address | None = None
    ipv6: ipaddress.IPv6Address | None = None
    anycast: bool = False
    health_withdraw: bool = False


def opted_in(labels: Mapping[str, str] | None) -> bool:
    """A container opts in with `overlay=auto` or any `overlay.*` label."""
    if not labels:
        return False
    return labels.get("overlay") == "auto" or any(_ours(k) for k in labels)


@overload
def _address(labels: Mapping[str, str], key: str, version: Literal[4]) -> ipaddress.IPv4Address | None: ...
@overload
def _address(labels: Mapping[str, str], key: str, version: Literal[6]) -> ipaddress.IPv6Address | None: ...
def _address(labels: Mapping[str, str], key: str, version: int) -> IPAddress | None:
    text = labels.get(key)
    if text is None:
        return None
    if not isinstance(text, str) or len(text) > 64:
        # The longest textual IPv6 address is 45 characters; don't hand 1 MB to the parser.
        raise LabelError("bad_label", f"label {key}={show(text)} is not an IP address")
    try:
        addr = ipaddress.ip_address(text.strip())
    except ValueError:
        raise LabelError("bad_label", f"label {key}={show(text)} is not an IP address") from None
    if addr.version != version:
        raise LabelError("bad_label", f"label {key}={show(text)} is not an IPv{version} address")
    if addr.version == 6 and (addr.scope_id is not None or "%" in text):
        # Python accepts "fd10:99::5%eth0" (RFC 4007 zone id) and compares it unequal to the
        # plain address; the kernel has no such thing for a global address, and pyroute2
        # fails to encode it (inet_pton). A host route is one address without a zone.
        raise LabelError("bad_label", f"label {key}={show(text)} has a zone id (%...); give the address alone")
    if addr.version == 6 and (addr.ipv4_mapped is not None or addr in _V4_COMPAT):
        # ::ffff:a.b.c.d is an IPv4 address in IPv6 clothing: the kernel would route it as
        # IPv6 while the container's IPv4 traffic uses its IPv4 address.
        raise LabelError("bad_label", f"label {key}={show(text)} embeds an IPv4 address; put it in overlay.ipv4")
    if (
        addr.is_multicast
        or addr.is_unspecified
        or addr.is_loopback
        or addr.is_link_local
        or (addr.version == 4 and addr == _BROADCAST4)
        or (addr.version == 6 and addr in _SITE_LOCAL6)
    ):
        raise LabelError("bad_label", f"label {key}={show(text)} is not a unicast address")
    return addr


def _flag(labels: Mapping[str, str], key: str) -> bool:
    text = labels.get(key)
    if text is None:
        return False
    value = text.strip().lower() if isinstance(text, str) else None
    if value in ("true", "yes", "1"):
        return True
    if value in ("false", "no", "0", ""):
        return False
    raise LabelError("bad_label", f"label {key}={show(text)} must be true or false")


def parse(labels: Mapping[str, str]) -> Request:
    """Parse the overlay labels of an opted-in container; raise LabelError for anything a person must fix."""
    for k in sorted(k for k in labels if _ours(k) and k not in KNOWN):
        if k.lower() in KNOWN or k.lower() == "overlay":
            raise LabelError("bad_label", f"label {_key(k)} must be written {k.lower()} (labels are case-sensitive)")
        # A typo (overlay.ip4) silently ignored would hand out a block address instead.
        raise LabelError("bad_label", f"unknown label {_key(k)} (known: {', '.join(sorted(KNOWN))})")
    top = labels.get("overlay")
    if top is not None and top != "auto":
        raise LabelError("bad_label", f"label overlay={show(top)} must be 'auto'")
    health = labels.get("overlay.health")
    if health is not None and (not isinstance(health, str) or health.strip() != "withdraw"):
        raise LabelError("bad_label", f"label overlay.health={show(health)} must be 'withdraw'")
    return Request(
        ipv4=_address(labels, "overlay.ipv4", 4),
        ipv6=_address(labels, "overlay.ipv6", 6),
        anycast=_flag(labels, "overlay.anycast"),
        health_withdraw=health is not None,
    )
