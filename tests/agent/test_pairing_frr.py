"""The FRR shim against real FRR in a namespace: frr-reload applies deltas without a restart; a rejected config
leaves the previous one running and says why."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab import frr as frr_mod
from overlay_agent.errors import CommandError
from overlay_agent.frr import Frr, fill_password
from overlay_agent.placeholders import BGP_PASSWORD

pytestmark = [pytest.mark.root, pytest.mark.frr]

BASE = f"""frr defaults datacenter
hostname r
!
router bgp 65000
 bgp router-id 10.0.0.1
 neighbor 10.0.0.2 remote-as 65001
 neighbor 10.0.0.2 password {BGP_PASSWORD}
exit
!
"""


@pytest.fixture
def frr(netns, tmp_path):
    if not frr_mod.available() or not Path("/usr/lib/frr/frr-reload.py").exists():
        pytest.skip("needs FRR and frr-reload.py (Debian frr, frr-pythontools)")
    f = frr_mod.FRR(netns, "r")
    try:
        f.start("frr defaults datacenter\n")
        yield f, Frr(tmp_path / "agent", vty_socket=str(f.vty_dir), confdir=str(f.dir))
    finally:
        f.stop()


def running(f) -> str:
    return f.vtysh("show running-config")


def test_reload_applies_delta_without_restart(frr):
    f, shim = frr
    pids = {d: p.pid for d, p in f.procs.items()}
    text = fill_password(BASE, "s3cret")
    assert shim.differs(text)
    shim.reload(text)
    assert "neighbor 10.0.0.2 password s3cret" in running(f)
    more = text.replace(
        " neighbor 10.0.0.2 password s3cret\n",
        " neighbor 10.0.0.2 password s3cret\n neighbor 10.0.0.3 remote-as 65003\n",
    )
    shim.reload(more, previous=text)
    out = running(f)
    assert "neighbor 10.0.0.3 remote-as 65003" in out and "neighbor 10.0.0.2 remote-as 65001" in out
    assert {d: p.pid for d, p in f.procs.items()} == pids and f.running()  # never a restart
    delete, add = shim.diff(more)
    # Only FRR's own residue may remain (8.4 keeps the system hostname): no BGP line differs.
    assert not [ln for ln in delete + add if "hostname" not in ln]
    peers = {s.peer for s in shim.sessions()}
    assert peers == {"10.0.0.2", "10.0.0.3"}
    # The filled-in file holds the password: only the agent can read it.
    assert oct((Path(shim.state_dir) / "frr.desired.conf").stat().st_mode & 0o777) == "0o600"


def test_rejected_config_keeps_previous_and_reports(frr):
    f, shim = frr
    good = fill_password(BASE, "s3cret")
    shim.reload(good)
    before = running(f)
    bad = good.replace(
        " neighbor 10.0.0.2 remote-as 65001\n", " neighbor 10.0.0.2 remote-as 65001\n neighbor 10.0.0.9 remote-az 5\n"
    )
    with pytest.raises(CommandError) as exc:
        shim.reload(bad, previous=good)
    err = exc.value
    assert err.returncode != 0 and err.cmd[1].endswith("frr-reload.py")
    assert "Unknown command" in str(err) and "remote-az" in str(err) and "\n" not in str(err)
    assert running(f) == before
