"""The vm tier's lab boots in the background from the start of the session.

Building the lab image (when the cache has none) and two first boots under software emulation
take minutes of both cores; the VM tests sort last, so this work overlaps the other tiers
instead of adding to the run. `python -m lab up --vms vmlab` starts as the session starts, at
the idle CPU scheduling class (SCHED_IDLE: only on a core nothing else wants, so the other
tiers' timing tests keep their CPU) and the lowest I/O priority (lab/vm/background.py). The VM
fixture raises it to normal priority and waits for it. OVERLAY_VM_BACKGROUND=0 boots in the
fixture instead (the image built there too, when missing).
"""

from __future__ import annotations

import os

import pytest

from lab import stack
from lab.vm import background

from .test_vm_stack import STACK, STACKS


def _selected(session: pytest.Session) -> bool:
    """A vm test will run: collected, not deselected, not skipped by its own conditions."""
    for item in session.items:
        if item.get_closest_marker("vm") is None:
            continue
        if any(m.args and m.args[0] is True for m in item.iter_markers("skipif")):
            continue
        return True
    return False


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.option.collectonly or os.environ.get("OVERLAY_VM_BACKGROUND", "1") == "0":
        return
    if not _selected(session):
        return
    background.start(STACK, STACKS, stack.STATE_ROOT / f"{STACK}.background.log")


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A background lab the vm tests never took over (-x, a failure, ^C) is stopped and
    removed: `lab up` removes what it built when stopped, and `down` whatever it had finished."""
    launch = background.current(STACK)
    if launch is None or launch.claimed:
        return
    background.stop(launch)
    stack.down(stack.Lab.load(STACK, STACKS, say=lambda _line: None), quiet=True)
