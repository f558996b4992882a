"""GRE data paths: kernel ip_gre where the kernel has it, else the userspace daemon; chosen by probing once."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyroute2 import IPRoute  # untyped (Any): pyroute2 ships no type information

from .base import Backend, LinkCounters, LinkSpec

__all__ = ["Backend", "LinkCounters", "LinkSpec", "select_backend"]


def select_backend(ipr: IPRoute, state_dir: str | Path, prefer: str = "auto", *, spawn_daemon: bool = True) -> Backend:
    """`prefer`: "auto" (probe the kernel), "kernel" or "userspace". `spawn_daemon`: start the
    userspace daemon when none answers (the lab); False where systemd runs it (overlay-gre.service)."""
    from .kernel import KernelBackend, PyrouteGre, kernel_gre_available
    from .userspace import UserspaceBackend

    if prefer == "kernel" or (prefer == "auto" and kernel_gre_available(ipr)):
        return KernelBackend(PyrouteGre(ipr))
    return UserspaceBackend(state_dir, spawn=spawn_daemon, timeout=5.0 if spawn_daemon else 30.0)
