"""The pure core: stack config -> OverlayPlan (no pulumi import, no I/O)."""

from infra.plan.build import build_plan, nth_block, nth_subnet
from infra.plan.model import Endpoint, Host, OverlayPlan, Pairing, Router, Subnet, to_data

__all__ = [
    "build_plan",
    "nth_block",
    "nth_subnet",
    "Endpoint",
    "Host",
    "OverlayPlan",
    "Pairing",
    "Router",
    "Subnet",
    "to_data",
]
