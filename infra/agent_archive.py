"""Builds the agent's source package (hostagent/) as a reproducible .tar.gz for upload with the stack."""
from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

from infra.stackfile import REPO_ROOT

AGENT_DIR = REPO_ROOT / "hostagent"
BUILD_DIR = REPO_ROOT / "build" / "agent"
ARCHIVE_NAME = "overlay-agent.tar.gz"
_SKIP_DIRS = {"__pycache__", ".pytest_cache", "build", "dist"}


def _members(src: Path) -> list[Path]:
    out = []
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if any(part in _SKIP_DIRS or part.endswith(".egg-info") for part in rel.parts):
            continue
        if path.is_file() and path.suffix not in (".pyc", ".pyo"):
            out.append(path)
    return out


def archive_bytes(src: Path = AGENT_DIR) -> bytes:
    """pip-installable source tree under `overlay-agent/`: same files, same bytes (no mtimes,
    owners or modes from this machine), so the S3 object changes only when the agent does."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in _members(src):
            info = tarfile.TarInfo(f"overlay-agent/{path.relative_to(src).as_posix()}")
            data = path.read_bytes()
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def build_archive(src: Path = AGENT_DIR, out_dir: Path = BUILD_DIR) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / ARCHIVE_NAME
    data = archive_bytes(src)
    if not path.exists() or path.read_bytes() != data:
        path.write_bytes(data)
    return path
