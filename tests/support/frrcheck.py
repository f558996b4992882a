"""FRR's own config checks for rendered configs: `vtysh -C` (exit status) and `bgpd -C` (output)."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

FRR_DIR = Path("/usr/lib/frr")
BGPD = FRR_DIR / "bgpd"
# bgpd -C reports a bad line as "[EC 100663304] No such command on config line N: ..."
# (100663304 is the config-read error class), a file it cannot read under the same
# class, and refusals of a well-formed command as lines starting with "%"; it always
# exits 0. Other log lines are not about the file (e.g. no zebra to talk to in -C mode).
_BGPD_ERROR = re.compile(
    r"\[EC 100663304\]|^%|No such command|Unknown command|Command incomplete|"
    r"Ambiguous command|configuration file",
    re.M,
)
# Lines of the integrated config that belong to other daemons (zebra, staticd, bfdd, vtysh):
# bgpd would report them as unknown, so its view of the file leaves them out.
_NOT_BGPD_LINE = re.compile(r"^(ip route |ipv6 route |service integrated-vtysh-config)")


def have_frr() -> bool:
    return BGPD.exists() and shutil.which("vtysh") is not None


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    tool: str
    output: str


def bgpd_view(text: str) -> str:
    """The integrated config minus other daemons' lines and the `bfd` block (bfdd's)."""
    out, in_bfd = [], False
    for line in text.splitlines():
        if in_bfd:
            if line == "exit":
                in_bfd = False
            continue
        if line == "bfd":
            in_bfd = True
            continue
        if _NOT_BGPD_LINE.match(line):
            continue
        out.append(line)
    return "\n".join(out) + "\n"


def vtysh_check(text: str) -> CheckResult:
    """`vtysh -C -f FILE`: every daemon's grammar, checked by vtysh; the exit status decides."""
    with tempfile.NamedTemporaryFile("w", suffix=".conf", prefix="ovt-frr-") as f:
        f.write(text)
        f.flush()
        proc = subprocess.run(["vtysh", "-C", "-f", f.name], capture_output=True, text=True, timeout=60)
    return CheckResult(proc.returncode == 0, "vtysh -C", (proc.stdout + proc.stderr).strip())


def bgpd_check(text: str) -> CheckResult:
    """`bgpd -C -f FILE` on bgpd's view: bgpd's semantic checks; it exits 0, so read its output."""
    with tempfile.NamedTemporaryFile("w", suffix=".conf", prefix="ovt-bgpd-") as f:
        f.write(bgpd_view(text))
        f.flush()
        # bgpd drops to the frr user before it reads the file.
        Path(f.name).chmod(0o644)
        proc = subprocess.run([str(BGPD), "-C", "-f", f.name], capture_output=True, text=True, timeout=60)
    output = (proc.stdout + proc.stderr).strip()
    return CheckResult(proc.returncode == 0 and not _BGPD_ERROR.search(output), "bgpd -C", output)


FRR_RELOAD = FRR_DIR / "frr-reload.py"


def have_frr_reload() -> bool:
    return FRR_RELOAD.exists()


def reload_diff(netns: str, vty_dir: Path, workdir: Path, text: str) -> tuple[list[str], list[str]]:
    """What `frr-reload.py --test` would change to bring a running FRR to `text`: (delete, add).

    The agent applies configs with frr-reload; a config that round-trips (empty diff once
    applied) reloads without touching anything, and never has a line FRR would undo."""
    path = workdir / "reload-test.conf"
    path.write_text(text)
    path.chmod(0o644)
    proc = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            netns,
            str(FRR_RELOAD),
            "--test",
            "--stdout",
            "--vty_socket",
            str(vty_dir),
            "--confdir",
            str(workdir),
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"frr-reload.py --test failed ({proc.returncode}): {proc.stderr.strip()[-600:]}")
    delete: list[str] = []
    add: list[str] = []
    current = None
    for line in proc.stdout.splitlines():
        if line.startswith("Lines To Delete"):
            current = delete
        elif line.startswith("Lines To Add"):
            current = add
        elif current is not None and line.strip() and not set(line.strip()) <= {"="}:
            current.append(line)
    return delete, add


# The VPC's IPv6 block in FRR tests: what AWS would assign (2600:1f00::/24 is AWS's), given
# to routers in their `vpc` parameter.
TEST_VPC_V6 = "2600:1f18:4a3:6c00::/56"
# The on-prem sessions' own password in FRR tests (review F10: not the hosts' one).
TEST_ONPREM_PASSWORD = "dc-only-md5-in-test"


def router_text_as_applied(plan, router: str, password: str, onprem_password: str = TEST_ONPREM_PASSWORD) -> str:
    """A router's FRR text as its agent applies it: the `frr` parameter with the password
    filled in, the bogon filters and the VPC's IPv6 block (TEST_VPC_V6, from its `vpc`
    parameter; overlay_agent.frr.fill_bogons), plus the per-host import filters it renders
    from its tunnels/<host> parameters (overlay_agent.tunnels.host_filters). Without them a
    router takes only the shared ranges."""
    from infra.parameters import build_parameters, instance_path
    from infra.render import render_frr
    from overlay_agent.frr import fill_bogons, fill_password
    from overlay_agent.tunnels import host_filters, parse_tunnels

    params = build_parameters(plan, lambda n: render_frr(plan, n), vpc_ipv6=TEST_VPC_V6)
    base = instance_path(plan, router) + "/"
    tunnels = {n[len(base) :]: p.value for n, p in params.items() if n.startswith(base + "tunnels/")}
    good, bad = parse_tunnels(tunnels)
    assert not bad, bad
    vpc = params[base + "vpc"].value if base + "vpc" in params else None
    text = fill_bogons(fill_password(params[base + "frr"].value, password, onprem_password=onprem_password), vpc)
    return text.rstrip("\n") + "\n" + host_filters(good.values())


def host_text_as_applied(plan, host: str, password: str) -> str:
    """A docker host's FRR text as its agent applies it: password and bogon filters filled in."""
    from infra.render import render_frr
    from overlay_agent.frr import fill_bogons, fill_password

    return fill_bogons(fill_password(render_frr(plan, host), password), None)
