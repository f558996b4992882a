"""Pairing sync loop with in-memory fakes: poll/resync/SIGHUP, cache on SSM failure, FRR diff/reload/reject."""

from __future__ import annotations

import json
import random

import pytest

from overlay_agent.frr import Frr, _parse_test, _reason, fill_password
from overlay_agent.errors import ConfigError
from overlay_agent.placeholders import BGP_PASSWORD, ONPREM_BGP_PASSWORD
from overlay_agent.ssm import Cache, Poller
from tests.support.fakes import TUNNEL_BASE as BASE
from tests.support.fakes import FRR, FakeBackend, FakeFrr, FakeNetlink, lockstep, pairing_world, tunnel


@pytest.fixture
def world(tmp_path):
    return pairing_world(tmp_path)


def test_start_applies_tunnels_frr_and_caches(world):
    sync, src, be, frr, tmp = world
    sync.start()
    assert sync.step(now=0.0)
    assert set(be.links) == {"gre-1"} and frr.reloads == 1
    assert "password pw" in " ".join(frr.running)
    assert Cache(tmp).load().revision == "1"
    doc = json.loads((tmp / "pairing.json").read_text())
    assert doc["parameters"]["ok"] and doc["tunnels"]["tunnels"][0]["state"] == "up"


def test_unchanged_revision_no_fetch_no_apply_until_resync(world):
    sync, src, be, frr, tmp = world
    sync.start()
    sync.step(now=0.0)
    diffs = frr.diffs
    assert not sync.step(now=3.0)  # poll due, revision unchanged: nothing to do
    assert src.fetches == 1 and frr.diffs == diffs
    assert sync.step(now=11.0)  # resync: FRR diffed, in sync apart from the residue, no reload
    assert frr.diffs == diffs + 1 and frr.reloads == 1


def test_new_host_tunnel_applied_without_touching_frr(world):
    sync, src, be, frr, tmp = world
    sync.start()
    sync.step(now=0.0)
    diffs, reloads = frr.diffs, frr.reloads
    src.tunnels["tunnels/router-2"] = tunnel("gre-129", 129, "10.40.144.10")
    src.rev = 2
    assert sync.step(now=3.0)
    assert set(be.links) == {"gre-1", "gre-129"}
    assert (frr.diffs, frr.reloads) == (diffs, reloads)  # same frr text: FRR not even asked


def test_sighup_polls_at_once(world):
    sync, src, be, frr, tmp = world
    sync.start()
    sync.step(now=0.0)
    src.tunnels = {}
    src.rev = 2
    assert not sync.step(now=0.5)  # not due
    sync.hup()
    assert sync.step(now=0.6)
    assert be.links == {}


def test_ssm_down_keeps_state_backs_off_and_reports(world):
    sync, src, be, frr, tmp = world
    sync.start()
    sync.step(now=0.0)
    src.down = True
    now = 0.0
    delays = []
    for _ in range(5):
        now = sync.source.next_poll + 0.01
        sync.step(now=now)
        delays.append(sync.source.next_poll - now)
    assert set(be.links) == {"gre-1"}  # nothing torn down
    st = json.loads((tmp / "pairing.json").read_text())["parameters"]
    assert st["ok"] is False and st["failures"] == 5 and "Could not connect" in st["error"]
    assert delays[-1] > delays[0]
    assert sync.source.metrics.parameters_ok._value.get() == 0


def test_restart_without_ssm_uses_cache(world, tmp_path):
    sync, src, be, frr, tmp = world
    sync.start()
    sync.step(now=0.0)
    src.down = True
    nl2 = FakeNetlink()
    be2 = FakeBackend(nl2)
    poller = Poller(src, Cache(tmp), interval=2, rng=random.Random(1))
    sync2 = lockstep(src, tmp, be2, nl2, FakeFrr(), poller=poller, resync_interval=30)
    snap = sync2.start()
    assert snap is not None and poller.state.source == "cache"
    sync2.step(now=0.0)
    assert set(be2.links) == {"gre-1"} and sync2.source.cfg.instance == "host-1"


def test_frr_rejected_previous_stays_error_reported(world):
    sync, src, be, frr, tmp = world
    sync.start()
    sync.step(now=0.0)
    before = set(frr.running)
    frr.reject = True
    src.frr = FRR + " neighbor 169.254.64.0 remote-az 5\n"
    src.rev = 2
    sync.step(now=3.0)
    assert frr.running == before
    doc = json.loads((tmp / "pairing.json").read_text())
    assert "Unknown command" in doc["frr"]["error"]
    assert sync.pairing.frr_state.applied is not None and "remote-az" not in sync.pairing.frr_state.applied
    frr.reject = False
    sync.step(now=14.0)  # the resync retries the (now accepted) text
    assert any("remote-az" in ln for ln in frr.running) and sync.pairing.frr_state.error is None


def test_bad_agent_document_keeps_previous_settings(world):
    sync, src, be, frr, tmp = world
    sync.start()
    sync.step(now=0.0)
    src.agent = "{"
    src.rev = 2
    sync.step(now=3.0)
    assert sync.source.cfg.settings.route_protocol == 149
    assert "agent: not JSON" in json.loads((tmp / "pairing.json").read_text())["parameters"]["agent_error"]


def test_fill_password():
    assert fill_password(f"a {BGP_PASSWORD} b", "s3cret") == "a s3cret b"
    assert fill_password("no placeholder", None) == "no placeholder"
    with pytest.raises(ConfigError, match="bgp-password: unusable") as e:
        fill_password(f"x {BGP_PASSWORD}", "two words\nneighbor 1.1.1.1 remote-as 1")
    assert "two words" not in str(e.value)  # never echo the secret
    with pytest.raises(ConfigError, match="was not read"):
        fill_password(f"x {BGP_PASSWORD}", None)


def test_fill_password_fills_the_onprem_password_only_where_asked():
    # Review F10: the datacenter sessions' own password; a host's text never asks for it.
    text = f"neighbor HOSTS password {BGP_PASSWORD}\nneighbor ONPREM password {ONPREM_BGP_PASSWORD}\n"
    assert (
        fill_password(text, "s3cret", onprem_password="dc-s3cret")
        == "neighbor HOSTS password s3cret\nneighbor ONPREM password dc-s3cret\n"
    )
    assert fill_password(f"neighbor X password {BGP_PASSWORD}\n", "s3cret") == "neighbor X password s3cret\n"
    with pytest.raises(
        ConfigError, match="needs the on-prem BGP password but the onprem-bgp-password parameter was not read"
    ):
        fill_password(text, "s3cret")
    with pytest.raises(ConfigError, match="onprem-bgp-password: unusable") as e:
        fill_password(text, "s3cret", onprem_password="dc secret")
    assert "dc secret" not in str(e.value)


def test_fill_password_refuses_a_placeholder_it_cannot_fill():
    # One the agent does not know (a newer program's) stays in: refused, naming the line.
    text = f"router bgp 1\n neighbor A password {BGP_PASSWORD}\n neighbor B password <<NEWER SECRET>>\n"
    with pytest.raises(ConfigError, match=r"frr: line 3 still holds the placeholder <<NEWER SECRET>>"):
        fill_password(text, "s3cret")
    with pytest.raises(ConfigError, match="line 1 still holds"):
        fill_password("neighbor B password <<NEWER SECRET>>\n", None)


def test_frr_shim_never_runs_frr_reload_on_a_config_with_a_placeholder(tmp_path):
    # The last guard before FRR: diff and reload refuse before writing or running anything.
    frr = Frr(tmp_path / "state", reload_script="/nonexistent/frr-reload.py", bindir="/nonexistent")
    for call in (frr.diff, frr.reload):
        with pytest.raises(ConfigError, match=f"line 2 still holds the placeholder {BGP_PASSWORD}"):
            call(FRR)
    assert not (tmp_path / "state").exists()


def test_agent_keeps_the_previous_frr_config_when_a_placeholder_is_left(world):
    sync, src, be, frr, tmp = world
    sync.start()
    sync.step(now=0.0)
    before, reloads = set(frr.running), frr.reloads
    src.frr = FRR + " neighbor 10.0.0.9 password <<NEWER SECRET>>\n"
    src.rev = 2
    sync.step(now=3.0)
    assert frr.running == before and frr.reloads == reloads
    assert "still holds the placeholder" in json.loads((tmp / "pairing.json").read_text())["frr"]["error"]


def test_agent_and_program_placeholders_are_the_same():
    from infra import placeholders as program
    from overlay_agent import placeholders as agent

    assert (agent.BGP_PASSWORD, agent.ONPREM_BGP_PASSWORD, agent.ALL, agent.PATTERN.pattern) == (
        program.BGP_PASSWORD,
        program.ONPREM_BGP_PASSWORD,
        program.ALL,
        program.PATTERN.pattern,
    )
    # Neither contains the other: filling one never touches the other.
    assert agent.BGP_PASSWORD not in agent.ONPREM_BGP_PASSWORD and agent.ONPREM_BGP_PASSWORD not in agent.BGP_PASSWORD
    for p in agent.ALL:
        # SSM refuses {{...}} in a value; FRR's `password LINE` takes one word.
        assert "{{" not in p and "}}" not in p and " " in p and agent.PATTERN.fullmatch(p)


def test_parse_frr_reload_test_output():
    out = "\nLines To Delete\n===============\nno hostname vm\n\nLines To Add\n============\nhostname t\nrouter bgp 1\n"
    assert _parse_test(out) == (["no hostname vm"], ["hostname t", "router bgp 1"])
    assert _parse_test("") == ([], [])


def test_reason_is_one_clean_line():
    raw = (
        "2026-11-26 10:35:59,812 \x1b[91m  ERROR\x1b[0m: vtysh failed to process new configuration: vtysh "
        "(mark file) exited with status 2: | b\"% Can't open configuration file /tmp/x/vtysh.conf due to 'No such "
        "file or directory'.\\nline 9: % Unknown command:  neighbor 10.0.0.3 remote-az 5\\n\\n\""
    )
    assert _reason(raw) == "line 9: % Unknown command:  neighbor 10.0.0.3 remote-az 5"


def test_restart_does_not_reload_an_unchanged_config(world):
    sync, src, be, frr, tmp = world
    sync.start()
    sync.step(now=0.0)
    assert frr.reloads == 1
    poller = Poller(src, Cache(tmp), interval=2, rng=random.Random(1))
    sync2 = lockstep(src, tmp, be, be.kernel, frr, poller=poller, resync_interval=30)
    sync2.start()
    sync2.step(now=0.0)  # first pass diffs (resync) but finds only the residue
    assert frr.reloads == 1 and sync2.pairing.frr_state.error is None


def test_malformed_tunnel_rejected_others_applied_logged_once(world, caplog):
    sync, src, be, frr, tmp = world
    src.tunnels["tunnels/router-2"] = json.dumps(dict(BASE, name="gre-129", key="x", remote="10.40.144.10"))
    sync.start()
    with caplog.at_level("ERROR"):
        sync.step(now=0.0)
        sync.step(now=11.0)  # resync: same error, not logged again
    assert set(be.links) == {"gre-1"}
    msgs = [r.getMessage() for r in caplog.records if "tunnels/router-2" in r.getMessage()]
    assert msgs == [
        "tunnels/router-2: key: 'x' is not of type integer or null (the GRE key (RFC 2890: a 32-bit field), or null for none)"
    ]
    doc = json.loads((tmp / "pairing.json").read_text())
    assert doc["tunnels"]["rejected"][0]["parameter"] == "tunnels/router-2"
    assert sync.pairing.metrics.tunnels_rejected._value.get() == 1


def test_a_changed_agent_document_is_handed_to_the_container_wiring(world):
    sync, src, be, frr, tmp = world
    seen = []
    sync.source.on_config(seen.append)
    sync.start()
    sync.step(now=0.0)
    assert len(seen) == 1  # the first document
    src.rev = 2  # revision moves, same document: nothing to hand over
    sync.step(now=3.0)
    assert len(seen) == 1
    doc = json.loads(src.agent)
    doc["pools"]["ipv4"].append("100.65.0.0/16")
    src.agent, src.rev = json.dumps(doc), 3
    sync.step(now=6.0)
    assert len(seen) == 2 and any(str(p) == "100.65.0.0/16" for p in seen[-1].pools_ipv4)


ONPREM6 = "! agent: ipv6 prefix-list ONPREM-V6 seq 500+ deny bogons, vpc-ipv6\n"


def test_bogon_filters_and_the_vpc_block_are_applied_and_never_skipped(world):
    # Review F13: the router's IPv6 on-prem filter needs the VPC's block from the `vpc`
    # parameter. Without it the config is refused (fail closed), never applied unfiltered.
    sync, src, be, frr, tmp = world
    src.frr = FRR + ONPREM6
    sync.start()
    sync.step(now=0.0)
    assert frr.reloads == 0 and "needs the VPC's IPv6 block" in sync.pairing.frr_state.error
    src.vpc, src.rev = '{"ipv6":"2600:1f18:4a3:6c00::/56","schema":1}', 2
    sync.step(now=100.0)
    assert frr.reloads == 1 and sync.pairing.frr_state.error is None
    assert "ipv6 prefix-list ONPREM-V6 seq 500 deny ::1/128" in frr.running
    assert "ipv6 prefix-list ONPREM-V6 seq 520 deny 2600:1f18:4a3:6c00::/56 le 128" in frr.running
    # The cache keeps the block: a restart without SSM applies the same filters.
    assert Cache(tmp).load().vpc == src.vpc
