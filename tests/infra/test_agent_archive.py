"""The agent bundle uploaded with the stack: the agent wheel plus a hashed wheelhouse, built reproducibly."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import tomllib
from importlib import metadata

import pytest

from infra.agent_archive import (
    AGENT_DIR,
    BUNDLE_ROOT,
    LOCK_FILE,
    BundleError,
    _normalise,
    build_bundle,
    input_digest,
    read_lock,
)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_bundle(out_dir=tmp_path_factory.mktemp("bundle"))


def _offline_install(venv, root, *extra: str) -> subprocess.CompletedProcess[str]:
    """pip as overlay-agent-install runs it: no index, every wheel from the bundle, checked by hash."""
    return subprocess.run(
        [
            str(venv / "bin/pip"),
            "install",
            "--disable-pip-version-check",
            *extra,
            "--no-index",
            "--require-hashes",
            "--find-links",
            str(root / "wheels"),
            "-r",
            str(root / "requirements.txt"),
        ],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PIP_CONFIG_FILE": "/dev/null"},
    )


def test_lock_pins_what_the_tests_run():
    """Instances get exactly the versions this tree's tests ran: the lock agrees with the agent's
    own pins (hostagent/pyproject.toml) and with what is installed in the test virtualenv."""
    lock = read_lock()
    deps = tomllib.loads((AGENT_DIR / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        name, version = dep.split("==")
        assert lock[_normalise(name)][0] == version, (
            f"{name}: pyproject pins {version}, the lock {lock[_normalise(name)]}"
        )
    for name, (version, _) in lock.items():
        assert metadata.version(name) == version, (
            f"{name}: the lock has {version}, the tests run {metadata.version(name)}"
        )


def test_bundle_holds_the_wheel_and_every_dependency_by_hash(bundle):
    with tarfile.open(bundle) as tar:
        members = tar.getmembers()
        assert all(m.mtime == 0 and m.uid == 0 and m.mode == 0o644 for m in members)
        names = [m.name for m in members]
        reqs = tar.extractfile(f"{BUNDLE_ROOT}/requirements.txt").read().decode()
    wheels = sorted(n.rsplit("/", 1)[1] for n in names if n.endswith(".whl"))
    assert any(w.startswith("overlay_agent-0.1.0-py3-none-any") for w in wheels)
    assert all(w.endswith("-none-any.whl") for w in wheels)  # pure: one bundle for x86_64 and arm64
    pinned = [line for line in reqs.splitlines() if line and not line.startswith("#")]
    assert len(pinned) == len(wheels) == len(read_lock()) + 1
    assert all(" --hash=sha256:" in line for line in pinned)


def test_bundle_installs_without_an_index_and_runs(bundle, tmp_path):
    """What overlay-agent-install does on an instance: no PyPI, every file checked by hash."""
    with tarfile.open(bundle) as tar:
        tar.extractall(tmp_path, filter="data")
    root = tmp_path / BUNDLE_ROOT
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    proc = _offline_install(venv, root, "--quiet")
    assert proc.returncode == 0, proc.stderr
    out = subprocess.run([str(venv / "bin/overlay-agent"), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "status" in out.stdout
    # The schemas ship as package data: the installed agent validates a document with them.
    check = (
        "from overlay_agent import schemas; print(schemas.bootstrap('overlay', 'lab', 'host-1', 'host', 'eu-west-1'))"
    )
    out = subprocess.run([str(venv / "bin/python"), "-c", check], capture_output=True, text=True)
    assert out.returncode == 0 and "/overlay/lab/instances/host-1" in out.stdout, out.stderr
    # A tampered wheel is refused.
    wheel = next((root / "wheels").glob("six-*.whl"))
    wheel.write_bytes(wheel.read_bytes() + b"x")
    proc = _offline_install(venv, root, "--force-reinstall")
    assert proc.returncode != 0 and "HASHES" in proc.stderr.upper()


def test_bundle_is_reproducible(bundle, tmp_path):
    """Built again from scratch (fresh wheel build, fresh download): the same bytes, so the S3
    object changes only when the agent or a pin does."""
    again = build_bundle(out_dir=tmp_path)
    assert again != bundle and again.read_bytes() == bundle.read_bytes()
    assert build_bundle(out_dir=tmp_path) == again  # cached by input digest


def test_input_digest_follows_the_sources_and_the_lock(tmp_path):
    src = tmp_path / "agent"
    (src / "pkg").mkdir(parents=True)
    (src / "pyproject.toml").write_text("[project]\nname='x'\n")
    (src / "pkg" / "__init__.py").write_text("A = 1\n")
    (src / "pkg" / "__pycache__").mkdir()
    (src / "pkg" / "__pycache__" / "x.pyc").write_bytes(b"junk")
    lock = tmp_path / "lock"
    lock.write_text("six==1.17.0 --hash=sha256:" + "0" * 64 + "\n")
    first = input_digest(src, lock)
    (src / "pkg" / "__pycache__" / "x.pyc").write_bytes(b"other")
    assert input_digest(src, lock) == first  # build leftovers do not count
    (src / "pkg" / "__init__.py").write_text("A = 2\n")
    second = input_digest(src, lock)
    assert second != first
    lock.write_text("six==1.16.0 --hash=sha256:" + "0" * 64 + "\n")
    assert input_digest(src, lock) != second


def test_a_bad_lock_line_names_the_line(tmp_path):
    lock = tmp_path / "lock"
    lock.write_text("# comment\nsix>=1.0\n")
    with pytest.raises(BundleError, match=r"lock:2: 'six>=1.0' is not"):
        read_lock(lock)
    assert LOCK_FILE.exists()


def test_bundle_bytes_are_the_uploaded_object(bundle):
    data = bundle.read_bytes()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert tar.getnames()[0] == f"{BUNDLE_ROOT}/requirements.txt"
