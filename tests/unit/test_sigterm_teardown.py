"""SIGTERM to a test session still tears its fixtures down (tests/conftest.py): no lab, VM or namespace is left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

TEST = """
import time
import pytest

@pytest.fixture
def resource():
    (MARKS / "up").write_text("")
    yield
    (MARKS / "torn-down").write_text("")

def test_long(resource):
    time.sleep(60)
"""


def test_sigterm_runs_fixture_teardown(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    test = tmp_path / "test_long.py"
    test.write_text(f"from pathlib import Path\nMARKS = Path({str(marks)!r})\n" + TEST)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-p", "no:cacheprovider", str(test)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        deadline = time.monotonic() + 60
        while not (marks / "up").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the inner session never set up"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (marks / "torn-down").exists(), out
    assert proc.returncode != 0, out  # interrupted: never a pass
