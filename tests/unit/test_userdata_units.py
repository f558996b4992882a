"""The systemd units and drop-ins the user data writes pass systemd's own parser (`systemd-analyze verify`)."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from infra.render import render_template, user_data_context
from tests.support.render_plans import AGENT_KEY, BUCKET, all_plans

PLANS = all_plans()
# systemd warns and goes on for what it does not understand (a misspelt key is silently
# ignored at boot: `ConditionPathIsExecutable=` once was). These are the parser's words for it.
PARSE_ERRORS = re.compile(r"Unknown key|Unknown section|Unknown lvalue|Failed to parse|Invalid|bad-setting|Missing '='")
# Units of the image's packages the overlay's units refer to; empty stand-ins here.
IMAGE_UNITS = ("frr.service", "docker.service", "docker.socket", "network-online.target")


def _parse_errors(*units: Path, unit_dir: Path) -> list[str]:
    """systemd-analyze verify's complaints about what it could not parse in `units`, with
    only `unit_dir` on the unit path (drop-ins and stand-ins are found there)."""
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *map(str, units)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"SYSTEMD_UNIT_PATH": f"{unit_dir}:", "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"},
    )
    return [line for line in (proc.stdout + proc.stderr).splitlines() if PARSE_ERRORS.search(line)]


def _units(role: str, gre_backend: str) -> dict[str, str]:
    plan = PLANS["lab"]
    name = (plan.routers if role == "router" else plan.hosts)[0].name
    ctx = user_data_context(
        plan, name, bucket=BUCKET, agent_key=AGENT_KEY, parameter_path=f"/overlay/lab/instances/{name}"
    )
    text = render_template(f"{role}.cloud-config.j2", dataclasses.replace(ctx, gre_backend=gre_backend))
    return {
        f["path"]: f["content"]
        for f in yaml.safe_load(text)["write_files"]
        if f["path"].startswith("/etc/systemd/system/")
    }


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze (Debian's systemd) not installed")
@pytest.mark.parametrize("gre_backend", ["kernel", "userspace"])
@pytest.mark.parametrize("role", ["router", "host"])
def test_units_parse_cleanly(tmp_path: Path, role: str, gre_backend: str) -> None:
    units = _units(role, gre_backend)
    assert "/etc/systemd/system/overlay-agent.service" in units
    assert ("/etc/systemd/system/overlay-gre.service" in units) == (gre_backend == "userspace")
    unit_dir = tmp_path / "system"
    for path, content in units.items():
        out = unit_dir / Path(path).relative_to("/etc/systemd/system")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(content)
    for name in IMAGE_UNITS:
        if not (unit_dir / name).exists():
            kind = name.rsplit(".", 1)[1]
            body = {"service": "[Service]\nExecStart=/bin/true\n", "socket": "[Socket]\nListenStream=/run/x.sock\n"}
            (unit_dir / name).write_text(f"[Unit]\nDescription=stand-in\n{body.get(kind, '')}")
    names = sorted(p.name for p in unit_dir.glob("overlay-*.service"))
    assert not _parse_errors(*(unit_dir / n for n in names), unit_dir=unit_dir)
    if role == "host":  # the drop-in is read with docker.service: a bad key in it shows here
        assert (unit_dir / "docker.service.d" / "10-overlay-forwarding.conf").exists()
        assert not _parse_errors(unit_dir / "docker.service", unit_dir=unit_dir)


def test_a_misspelt_key_is_caught(tmp_path: Path) -> None:
    """The check above can fail: systemd's parser reports the key that broke before this test existed."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed")
    unit = tmp_path / "t.service"
    unit.write_text("[Unit]\nConditionPathIsExecutable=/bin/true\n[Service]\nExecStart=/bin/true\n")
    assert _parse_errors(unit, unit_dir=tmp_path)
