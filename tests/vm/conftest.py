"""The vm tier's image is built in the background from the start of the session.

Building the lab image from nothing (debootstrap, then image/provision.sh in a chroot) takes
minutes; the VM tests sort last, so the build overlaps the other tiers instead of adding to
the run. It runs at the idle CPU scheduling class (SCHED_IDLE: only on a core nothing else
wants, so the other tiers' timing tests keep their CPU) and idle I/O priority. The VM
fixture's own `image.build()` takes the same build lock, so it waits for this build and
then finds the image ready (or, had it failed, builds it in the foreground and says why).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lab.vm import image

_BUILD: dict[str, subprocess.Popen[bytes]] = {}


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
    if os.environ.get("OVERLAY_VM_BACKGROUND_BUILD", "1") == "0" or not _selected(session):
        return
    if image.current().ready() or image.missing_host_tools():
        return
    image.CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    log = image.CACHE_ROOT / "background-build.log"
    with open(log, "ab") as out:
        _BUILD["proc"] = subprocess.Popen(
            ["chrt", "--idle", "0", "ionice", "-c", "3", sys.executable, "-m", "lab.vm.image"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=Path(__file__).resolve().parents[2],
        )


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A build still running when the session ends (the vm tests never got to it: -x, a
    failure, ^C) is stopped; the build removes its mounts on the way out."""
    proc = _BUILD.pop("proc", None)
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
