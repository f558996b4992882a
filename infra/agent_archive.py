"""The agent bundle uploaded with the stack: the agent's wheel plus a wheelhouse of its pinned, hashed dependencies.

Instances install it with `pip install --no-index --require-hashes` (userdata/_common.cloud-config.j2),
so a boot needs no PyPI and gets exactly the versions the tests ran (hostagent/requirements.lock,
which `python -m infra.agent_archive lock` writes from the resolver and PyPI's files).

The bundle is reproducible: the wheel is built with a pinned setuptools and SOURCE_DATE_EPOCH,
and the tar has no mtimes, owners or modes from this machine, so the S3 object changes only
when the agent or a pin does. `python -m infra.agent_archive build` prints its path.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from infra.stackfile import REPO_ROOT

AGENT_DIR = REPO_ROOT / "hostagent"
LOCK_FILE = AGENT_DIR / "requirements.lock"
BUILD_DIR = REPO_ROOT / "build" / "agent"
BUNDLE_NAME = "overlay-agent-bundle.tar"
BUNDLE_ROOT = "overlay-agent-bundle"
_SKIP_DIRS = {"__pycache__", ".pytest_cache", "build", "dist"}
# Wheel zip entries carry this date (1980-01-01, the oldest a zip can hold) instead of the files' mtimes.
SOURCE_DATE_EPOCH = "315532800"
# Instances run Debian 12's python3 (3.11). Every dependency must exist as a pure-Python
# wheel, so one wheelhouse serves x86_64 and arm64 (Graviton) alike.
TARGET_PYTHON = "3.11"
_PURE = [
    "--only-binary=:all:",
    "--platform",
    "any",
    "--python-version",
    TARGET_PYTHON,
    "--implementation",
    "py",
    "--abi",
    "none",
]
_LOCK_LINE = re.compile(r"^([A-Za-z0-9_.-]+)==([^\s]+) --hash=sha256:([0-9a-f]{64})$")


class BundleError(RuntimeError):
    """The bundle cannot be built (pip failed, a pin has no pure wheel); the message says which."""


def _members(src: Path) -> list[Path]:
    out = []
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if any(part in _SKIP_DIRS or part.endswith(".egg-info") for part in rel.parts):
            continue
        if path.is_file() and path.suffix not in (".pyc", ".pyo"):
            out.append(path)
    return out


def read_lock(path: Path = LOCK_FILE) -> dict[str, tuple[str, str]]:
    """name (normalised) -> (version, sha256) from a lock file; comments and blank lines skipped."""
    out = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _LOCK_LINE.match(line)
        if not m:
            raise BundleError(f"{path}:{n}: {line!r} is not `name==version --hash=sha256:<hex>`")
        out[_normalise(m.group(1))] = (m.group(2), m.group(3))
    return out


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _pip(args: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args], capture_output=True, text=True, **kw
    )
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise BundleError(f"pip {args[0]} failed: {' / '.join(tail)}")
    return proc


def input_digest(src: Path = AGENT_DIR, lock: Path = LOCK_FILE) -> str:
    """What the bundle is built from: the agent's files and the lock (a cache key)."""
    h = hashlib.sha256()
    for path in _members(src):
        h.update(path.relative_to(src).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    h.update(b"lock\0" + lock.read_bytes())
    return h.hexdigest()


def build_wheel(src: Path, out: Path) -> Path:
    """The agent's wheel, built from a clean copy of its files (no egg-info or build/ of an
    editable install leaks in) by the pinned backend in hostagent/pyproject.toml."""
    with tempfile.TemporaryDirectory(prefix="overlay-agent-src-") as tmp:
        copy = Path(tmp) / "overlay-agent"
        for path in _members(src):
            dest = copy / path.relative_to(src)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)
        out.mkdir(parents=True, exist_ok=True)
        _pip(
            ["wheel", "--quiet", "--no-deps", "--no-cache-dir", "-w", str(out), str(copy)],
            env={**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH, "PYTHONHASHSEED": "0"},
        )
    wheels = sorted(out.glob("overlay_agent-*.whl"))
    if len(wheels) != 1:
        raise BundleError(f"expected one overlay_agent wheel in {out}, found {[w.name for w in wheels]}")
    return wheels[0]


def download_wheelhouse(lock: Path, out: Path) -> list[Path]:
    """The locked dependencies as pure-Python wheels, each checked against its hash by pip."""
    out.mkdir(parents=True, exist_ok=True)
    _pip(["download", "--quiet", "--no-deps", *_PURE, "--require-hashes", "-r", str(lock), "-d", str(out)])
    pins = read_lock(lock)
    wheels = sorted(out.glob("*.whl"))
    got = {_normalise(w.name.split("-")[0]) for w in wheels}
    missing = sorted(set(pins) - got)
    if missing:
        raise BundleError(f"{lock}: no wheel downloaded for {', '.join(missing)}")
    return wheels


def bundle_bytes(agent_wheel: Path, deps: list[Path], lock: Path) -> bytes:
    """The tar instances fetch: requirements.txt (every wheel by hash) and wheels/."""
    name, version = agent_wheel.name.split("-")[:2]
    reqs = (
        lock.read_text().rstrip("\n") + f"\n{name.replace('_', '-')}=={version} --hash=sha256:{_sha256(agent_wheel)}\n"
    )
    files = {f"{BUNDLE_ROOT}/requirements.txt": reqs.encode()}
    for w in sorted([agent_wheel, *deps], key=lambda p: p.name):
        files[f"{BUNDLE_ROOT}/wheels/{w.name}"] = w.read_bytes()
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for arc in sorted(files):
            info = tarfile.TarInfo(arc)
            info.size, info.mtime, info.mode = len(files[arc]), 0, 0o644
            tar.addfile(info, io.BytesIO(files[arc]))
    return raw.getvalue()


def build_bundle(src: Path = AGENT_DIR, lock: Path = LOCK_FILE, out_dir: Path = BUILD_DIR) -> Path:
    """The bundle for these inputs, built once and kept under out_dir/<input digest>/."""
    digest = input_digest(src, lock)
    path = out_dir / digest[:16] / BUNDLE_NAME
    if path.exists():
        return path
    with tempfile.TemporaryDirectory(prefix="overlay-agent-bundle-") as tmp:
        agent = build_wheel(src, Path(tmp) / "agent")
        deps = download_wheelhouse(lock, Path(tmp) / "deps")
        data = bundle_bytes(agent, deps, lock)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_bytes(data)
    partial.replace(path)  # atomic: a concurrent build never sees half a bundle
    return path


def write_lock(src: Path = AGENT_DIR, lock: Path = LOCK_FILE) -> dict[str, str]:
    """Resolve the agent's dependencies (pip's resolver, as an install would), fetch each as a
    pure-Python wheel and write `name==version --hash=sha256:...` lines. Run after changing a
    pin in hostagent/pyproject.toml; tests/infra/test_agent_archive.py checks the two agree."""
    with tempfile.TemporaryDirectory(prefix="overlay-agent-lock-") as tmp:
        report = Path(tmp) / "report.json"
        _pip(["install", "--quiet", "--dry-run", "--ignore-installed", "--report", str(report), str(src)])
        pins = {
            _normalise(i["metadata"]["name"]): i["metadata"]["version"]
            for i in json.loads(report.read_text())["install"]
            if _normalise(i["metadata"]["name"]) != "overlay-agent"
        }
        dl = Path(tmp) / "wheels"
        _pip(["download", "--quiet", "--no-deps", *_PURE, "-d", str(dl), *[f"{n}=={v}" for n, v in pins.items()]])
        hashes = {_normalise(w.name.split("-")[0]): _sha256(w) for w in dl.glob("*.whl")}
    lines = [
        "# The agent's runtime dependencies, resolved and hashed by `python -m infra.agent_archive lock`.",
        "# Instances install exactly these (pip --no-index --require-hashes); do not edit by hand.",
    ]
    lines += [f"{n}=={pins[n]} --hash=sha256:{hashes[n]}" for n in sorted(pins)]
    lock.write_text("\n".join(lines) + "\n")
    return pins


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m infra.agent_archive", description=__doc__.splitlines()[0])
    p.add_argument("command", choices=("build", "lock"))
    args = p.parse_args(argv)
    try:
        if args.command == "lock":
            pins = write_lock()
            print(f"{LOCK_FILE}: {len(pins)} pins")
        else:
            print(build_bundle())
    except BundleError as exc:
        print(f"agent bundle: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
