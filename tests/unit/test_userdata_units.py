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
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *(str(unit_dir / n) for n in names)],
        capture_output=True,
        text=True,
        timeout=60,
        # Only our unit directory: drop-ins (docker.service.d) and stand-ins are found here.
        env={"SYSTEMD_UNIT_PATH": f"{unit_dir}:", "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"},
    )
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if PARSE_ERRORS.search(line)]
    assert not errors, "\n".join(errors)
    if role == "host":  # the drop-in was read with docker.service: a bad key in it shows above
        dropin = unit_dir / "docker.service.d" / "10-overlay-forwarding.conf"
        assert dropin.exists()
        proc = subprocess.run(
            ["systemd-analyze", "verify", "--man=no", str(unit_dir / "docker.service")],
            capture_output=True,
            text=True,
            timeout=60,
            env={"SYSTEMD_UNIT_PATH": f"{unit_dir}:", "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"},
        )
        assert not [line for line in (proc.stdout + proc.stderr).splitlines() if PARSE_ERRORS.search(line)]


def test_a_misspelt_key_is_caught(tmp_path: Path) -> None:
    """The check above can fail: systemd's parser reports the key that broke before this test existed."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed")
    unit = tmp_path / "t.service"
    unit.write_text("[Unit]\nConditionPathIsExecutable=/bin/true\n[Service]\nExecStart=/bin/true\n")
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True)
    assert [line for line in proc.stderr.splitlines() if PARSE_ERRORS.search(line)]
