"""The agent package uploaded with the stack: a reproducible source archive of hostagent/."""
from __future__ import annotations

import io
import tarfile

from infra.agent_archive import AGENT_DIR, archive_bytes, build_archive


def test_archive_is_reproducible_and_holds_only_the_package(tmp_path):
    one, two = archive_bytes(), archive_bytes()
    assert one == two  # no mtimes or owners: the S3 object changes only when the agent does
    with tarfile.open(fileobj=io.BytesIO(one)) as tar:
        names = tar.getnames()
        assert all(m.mtime == 0 and m.uid == 0 and m.mode == 0o644 for m in tar.getmembers())
    assert "overlay-agent/pyproject.toml" in names
    assert "overlay-agent/overlay_agent/__init__.py" in names
    assert all(n.startswith("overlay-agent/") for n in names)
    assert not [n for n in names if "__pycache__" in n or ".egg-info" in n or n.endswith(".pyc")]
    want = {f"overlay-agent/{p.relative_to(AGENT_DIR).as_posix()}"
            for p in (AGENT_DIR / "overlay_agent").rglob("*.py") if "__pycache__" not in p.parts}
    assert want <= set(names)


def test_build_archive_rewrites_only_on_change(tmp_path):
    src = tmp_path / "agent"
    (src / "pkg").mkdir(parents=True)
    (src / "pyproject.toml").write_text("[project]\nname='x'\n")
    (src / "pkg" / "__init__.py").write_text("A = 1\n")
    path = build_archive(src, tmp_path / "out")
    first = path.stat().st_mtime_ns
    assert build_archive(src, tmp_path / "out").stat().st_mtime_ns == first
    (src / "pkg" / "__init__.py").write_text("A = 2\n")
    assert build_archive(src, tmp_path / "out").read_bytes() != archive_bytes(tmp_path / "nothing")
    with tarfile.open(path) as tar:
        assert tar.extractfile("overlay-agent/pkg/__init__.py").read() == b"A = 2\n"
