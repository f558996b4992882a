"""GRE data paths: kernel ip_gre where the kernel has it, else the userspace daemon; chosen by probing once."""
from __future__ import annotations

from pathlib import Path

from .base import Backend, LinkCounters, LinkSpec

__all__ = ["Backend", "LinkCounters", "LinkSpec", "select_backend"]


def select_backend(ipr, state_dir: str | Path, prefer: str = "auto") -> Backend:
    """`prefer`: "auto" (probe the kernel), "kernel" or "userspace"."""
    from .kernel import KernelBackend, PyrouteGre, kernel_gre_available
    from .userspace import UserspaceBackend

    if prefer == "kernel" or (prefer == "auto" and kernel_gre_available(ipr)):
        return KernelBackend(PyrouteGre(ipr))
    return UserspaceBackend(state_dir)
