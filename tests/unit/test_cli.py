"""Every command: `--version` (one source), the exit status convention, docs generated from the parsers."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import overlay_agent
from infra import preflight, verify
from infra.plan import __main__ as plan_main
from lab import __main__ as lab_main
from overlay_agent import cli as agent_cli
from tools import gendocs

REPO_ROOT = Path(__file__).resolve().parents[2]
MAINS = {
    "overlay-agent": agent_cli.main,
    "python -m infra.plan": plan_main.main,
    "python -m infra.verify": verify.main,
    "python -m infra.preflight": preflight.main,
    "python -m lab": lab_main.main,
}


@pytest.mark.parametrize("prog", sorted(MAINS))
def test_version_is_the_packages(prog, capsys):
    with pytest.raises(SystemExit) as info:
        MAINS[prog](["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"{prog} {overlay_agent.__version__}\n"


def test_version_is_written_once():
    agent = tomllib.loads((REPO_ROOT / "hostagent/pyproject.toml").read_text())
    assert "version" not in agent["project"] and agent["project"]["dynamic"] == ["version"]
    assert agent["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "overlay_agent.__version__"}
    root = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert "version" not in root["project"]


def test_console_script_version():
    exe = Path(sys.executable).with_name("overlay-agent")
    proc = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == f"overlay-agent {overlay_agent.__version__}"


@pytest.mark.parametrize("prog", sorted(MAINS))
def test_usage_error_is_2(prog, capsys):
    with pytest.raises(SystemExit) as info:
        MAINS[prog](["--no-such-option"])
    assert info.value.code == 2
    assert ": error: " in capsys.readouterr().err


@pytest.mark.parametrize(
    "prog, argv",
    [
        ("python -m infra.plan", ["nope"]),
        ("python -m infra.verify", ["nope"]),
        ("python -m infra.preflight", ["nope"]),
        ("python -m lab", ["status", "nope"]),
        ("overlay-agent", ["status", "--no-live", "--state-dir", "/nonexistent", "--status-file", "/nonexistent/nope"]),
    ],
)
def test_bad_input_is_2_in_one_line(prog, argv, capsys):
    assert MAINS[prog](argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and "nope" in err, err


def test_agent_run_bad_config_is_2_in_one_line(tmp_path):
    """`run` installs signal handlers and a faulthandler: a process of its own."""
    (tmp_path / "agent.json").write_text('{"role": "host", "settings": {"route_protocol": "abc"}}')
    exe = Path(sys.executable).with_name("overlay-agent")
    for path in (tmp_path / "nope.json", tmp_path / "agent.json"):
        proc = subprocess.run(
            [str(exe), "run", "--config", str(path), "--metrics-address", ""],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 2, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr, proc.stderr


def test_help_mentions_the_exit_status():
    for command, sub in gendocs.HELP_PAGES:
        assert "exit status: 0 ok; 1 a check failed" in gendocs.help_text(command, sub), command


def test_synopsis_in_agent_docs_is_the_parsers():
    text = (REPO_ROOT / "docs/agent.md").read_text()
    for sub in ("run", "status"):
        assert gendocs.usage_text("overlay-agent", [sub]) in text
