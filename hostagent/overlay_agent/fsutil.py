"""Files the agent writes: root-only, replaced atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_private(path: Path, text: str) -> None:
    """Write a file only root reads (0600 from creation: no window at the umask's mode).

    Status and state files name containers, addresses, label values, FRR errors and the
    applied FRR text (the BGP password); other local users (and a container that can read
    a host path) have no business with them.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its old mode through O_CREAT
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def atomic_write_json(path: Path, doc: Any, indent: int | None = None) -> None:
    """Replace `path` with `doc` as JSON, root-only: a reader (`overlay-agent status`, the
    next start) sees the old file or the new one, never half of one (rename(2) is atomic
    within a filesystem). Creates the parent directory; raises OSError."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    write_private(tmp, json.dumps(doc, indent=indent))
    os.replace(tmp, path)
