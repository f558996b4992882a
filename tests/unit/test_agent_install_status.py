"""`overlay-agent status` shows what the boot install (overlay-agent-install, user data) recorded."""

from __future__ import annotations

import json

from overlay_agent import cli


def _status(tmp_path, capsys, *extra):
    rc = cli.main(
        ["status", "--no-live", "--state-dir", str(tmp_path), "--status-file", str(tmp_path / "none.json"), *extra]
    )
    return rc, capsys.readouterr().out


def test_status_shows_a_failed_install_and_fails(tmp_path, capsys):
    (tmp_path / "install.json").write_text(
        json.dumps({"state": "failed", "detail": "apt-get update (exit 1)", "at": "2026-12-01T20:00:00Z", "attempt": 3})
    )
    rc, out = _status(tmp_path, capsys)
    assert rc == 1
    assert "install: failed (apt-get update (exit 1)) at 2026-12-01T20:00:00Z, attempt 3" in out


def test_status_json_carries_the_install_record(tmp_path, capsys):
    rec = {"state": "installed", "detail": "overlay-agent 0.1.0, bundle sha256 ab12", "at": "x", "attempt": 1}
    (tmp_path / "install.json").write_text(json.dumps(rec))
    rc, out = _status(tmp_path, capsys, "--json")
    assert rc == 0 and json.loads(out)["install"] == rec


def test_status_without_anything_is_one_line_error(tmp_path, capsys):
    rc = cli.main(["status", "--no-live", "--state-dir", str(tmp_path), "--status-file", str(tmp_path / "no.json")])
    assert rc == 2
