"""Container labels that opt a container into the overlay, parsed into a request or a reason for refusal."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Mapping

PREFIX = "overlay."
KNOWN = frozenset({"overlay.ipv4", "overlay.ipv6", "overlay.anycast", "overlay.health"})


class LabelError(ValueError):
    """A label a person must fix; `reason` is the metric label, str() the log line."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


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
    return labels.get("overlay") == "auto" or any(k.startswith(PREFIX) for k in labels)


def _address(labels: Mapping[str, str], key: str, version: int):
    text = labels.get(key)
    if text is None:
        return None
    try:
        addr = ipaddress.ip_address(text.strip())
    except ValueError:
        raise LabelError("bad_label", f"label {key}={text!r} is not an IP address") from None
    if addr.version != version:
        raise LabelError("bad_label", f"label {key}={text!r} is not an IPv{version} address")
    if addr.is_multicast or addr.is_unspecified or addr.is_loopback or addr.is_link_local:
        raise LabelError("bad_label", f"label {key}={text!r} is not a unicast address")
    return addr


def _flag(labels: Mapping[str, str], key: str) -> bool:
    text = labels.get(key)
    if text is None:
        return False
    value = text.strip().lower()
    if value in ("true", "yes", "1"):
        return True
    if value in ("false", "no", "0", ""):
        return False
    raise LabelError("bad_label", f"label {key}={text!r} must be true or false")


def parse(labels: Mapping[str, str]) -> Request:
    """Parse the overlay labels of an opted-in container; raise LabelError for anything a person must fix."""
    unknown = sorted(k for k in labels if k.startswith(PREFIX) and k not in KNOWN)
    if unknown:
        # A typo (overlay.ip4) silently ignored would hand out a block address instead.
        raise LabelError("bad_label", f"unknown label {unknown[0]} (known: {', '.join(sorted(KNOWN))})")
    top = labels.get("overlay")
    if top is not None and top != "auto":
        raise LabelError("bad_label", f"label overlay={top!r} must be 'auto'")
    health = labels.get("overlay.health")
    if health is not None and health.strip() != "withdraw":
        raise LabelError("bad_label", f"label overlay.health={health!r} must be 'withdraw'")
    return Request(
        ipv4=_address(labels, "overlay.ipv4", 4),
        ipv6=_address(labels, "overlay.ipv6", 6),
        anycast=_flag(labels, "overlay.anycast"),
        health_withdraw=health is not None,
    )
