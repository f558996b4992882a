"""A lab stack brought up for a test and always taken down, with its namespaces checked gone."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Callable, Iterator

import pytest

from lab import stack
from lab.frr import available as frr_available
from lab.underlay import lab_namespaces
from lab.netns import have_root_netns


def require_lab() -> None:
    """Skip the calling test unless this machine can run a lab (root netns, FRR, dockerd)."""
    if not have_root_netns() or not frr_available() or not shutil.which("dockerd"):
        pytest.skip("needs root, FRR and dockerd")


@contextlib.contextmanager
def running_lab(
    name: str, stacks_dir: Path, say: Callable[[str], None], sessions_timeout: float | None = None
) -> Iterator[stack.Lab]:
    """Stack `name` from `stacks_dir` up (and, with `sessions_timeout`, every session
    Established); down again however the block ends, leaving none of its namespaces."""
    the_lab = stack.Lab.load(name, stacks_dir, say=say)
    try:
        stack.up(the_lab)
        if sessions_timeout is not None:
            stack.wait_sessions(the_lab, timeout=sessions_timeout)
        yield the_lab
    finally:
        stack.down(the_lab)
        assert lab_namespaces(name) == []
