"""Every rendered FRR config passes FRR's own checks (`vtysh -C`, `bgpd -C`); every user data passes `cloud-init schema`."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infra import placeholders
from infra.config import parse
from infra.plan import build_plan
from infra.render import (
    ONPREM_PASSWORD_PLACEHOLDER,
    PASSWORD_PLACEHOLDER,
    render_frr,
    render_onprem_frr,
    render_user_data,
)
from overlay_agent.frr import fill_password
from tests.support.frrcheck import bgpd_check, bgpd_view, have_frr, vtysh_check
from tests.support.render_plans import AGENT_KEY, BUCKET, all_plans, fake_eips, random_raw

PLANS = all_plans()
needs_frr = pytest.mark.skipif(not have_frr(), reason="FRR (bgpd, vtysh) not installed")


PASSWORD = "frr-check-secret"
ONPREM_PASSWORD = "frr-check-onprem-secret"


def _filled(plan, name):
    """An instance's rendered text with both passwords filled in (the agent's fill)."""
    return fill_password(render_frr(plan, name), PASSWORD, onprem_password=ONPREM_PASSWORD)


def _configs(plan, filled=True):
    """(label, text): every router, up to four hosts, every on-prem side (with and without networks),
    the password filled in with the agent's own fill (as on an instance), or left as the placeholder."""

    def fill(text):
        return fill_password(text, PASSWORD, onprem_password=ONPREM_PASSWORD) if filled else text

    hosts = plan.hosts if len(plan.hosts) <= 4 else plan.hosts[:2] + plan.hosts[-2:]
    for inst in plan.routers + hosts:
        yield inst.name, fill(render_frr(plan, inst.name))
    for peer in plan.onprem:
        yield f"onprem {peer.name}", fill(render_onprem_frr(plan, peer.name, fake_eips(plan)))
        nets6 = ("2001:db8:100::/48",) if plan.ipv6 else ()
        yield (
            f"onprem {peer.name} +networks",
            fill(
                render_onprem_frr(plan, peer.name, fake_eips(plan), networks_v4=("192.168.0.0/16",), networks_v6=nets6)
            ),
        )


@needs_frr
@pytest.mark.frr
@pytest.mark.parametrize("stack", sorted(PLANS))
def test_vtysh_and_bgpd_accept_every_rendered_config(stack):
    failures = []
    for label, text in _configs(PLANS[stack]):
        for result in (vtysh_check(text), bgpd_check(text)):
            if not result.ok:
                failures.append(f"{stack} {label}: {result.tool}: {result.output[-600:]}")
    assert not failures, "\n".join(failures)


@needs_frr
@pytest.mark.frr
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.fixed_dictionaries(
        {
            "routers": st.integers(1, 8),
            "hosts": st.integers(1, 30),
            "n_az": st.integers(1, 4),
            "onprem": st.integers(0, 7),
            "ipv6": st.booleans(),
            "per_host": st.booleans(),
            "graceful_restart": st.booleans(),
            "specifics": st.booleans(),
            "pools": st.integers(1, 3),
        }
    )
)
def test_generated_plans_pass_both_checks(knobs):
    plan = build_plan(parse(random_raw(**knobs), "prop"))
    texts = [render_frr(plan, plan.routers[-1].name), render_frr(plan, plan.hosts[-1].name)]
    texts += [render_onprem_frr(plan, p.name, fake_eips(plan)) for p in plan.onprem[:1]]
    for text in (fill_password(t, PASSWORD, onprem_password=ONPREM_PASSWORD) for t in texts):
        for result in (vtysh_check(text), bgpd_check(text)):
            assert result.ok, f"{knobs}: {result.tool}: {result.output[-600:]}"


@needs_frr
@pytest.mark.frr
@pytest.mark.parametrize("stack", sorted(PLANS))
def test_frr_refuses_every_config_whose_placeholder_was_left_in(stack):
    # Review F2: the placeholder is never a valid FRR token. Were the password never filled
    # in (an old agent, a bug), FRR must refuse the config, not take the placeholder as the
    # TCP MD5 key. `neighbor X password LINE` takes one word; the placeholder has two.
    for label, text in _configs(PLANS[stack], filled=False):
        holders = [
            n
            for n, line in enumerate(text.splitlines(), 1)
            if placeholders.PATTERN.search(line) and not line.startswith("!")
        ]
        assert holders, f"{stack} {label}: no placeholder"
        for result in (vtysh_check(text), bgpd_check(text)):
            assert not result.ok, f"{stack} {label}: {result.tool} accepted the placeholder as a password"
        # vtysh names the first placeholder line (comments aside).
        assert f"line {holders[0]}: % Unknown command" in vtysh_check(text).output


@needs_frr
@pytest.mark.frr
def test_a_one_word_placeholder_would_be_taken_as_the_password():
    # Why the placeholder has a space: both the old `{{BGP_PASSWORD}}` and the review's
    # `@@BGP_PASSWORD@@` pass FRR's checks, so a config left unfilled would run with them.
    text = render_frr(PLANS["lab"], "router-1")
    for one_word in ("{{BGP_PASSWORD}}", "@@BGP_PASSWORD@@"):
        assert vtysh_check(
            text.replace(PASSWORD_PLACEHOLDER, one_word).replace(ONPREM_PASSWORD_PLACEHOLDER, ONPREM_PASSWORD)
        ).ok


# Both checks are needed: each catches a fault the other lets through.
BGPD_ONLY_FAULT = ("neighbor HOSTS peer-group\n", "")  # a listen range naming a group never created
VTYSH_ONLY_FAULT = ("  receive-interval ", "  receive-intervall ")  # a typo inside bfdd's block


@needs_frr
@pytest.mark.frr
def test_bgpd_catches_what_vtysh_lets_through():
    text = _filled(PLANS["lab"], "router-1").replace(*BGPD_ONLY_FAULT)
    assert vtysh_check(text).ok, "vtysh -C now catches this fault; pick another"
    result = bgpd_check(text)
    assert not result.ok
    assert "peer-group" in result.output


@needs_frr
@pytest.mark.frr
def test_vtysh_catches_what_bgpd_lets_through():
    text = _filled(PLANS["lab"], "router-1").replace(*VTYSH_ONLY_FAULT)
    assert bgpd_check(text).ok, "bgpd -C now sees this fault; pick another"
    result = vtysh_check(text)
    assert not result.ok
    assert "receive-intervall" in result.output


@needs_frr
@pytest.mark.frr
def test_bgpd_check_reads_its_output_not_its_exit_status():
    # bgpd -C exits 0 on an unknown command; the checker still fails it.
    text = _filled(PLANS["lab"], "host-1").replace("maximum-paths", "maximum-pathz")
    proc_ok = bgpd_check(text)
    assert not proc_ok.ok and "No such command" in proc_ok.output


def test_bgpd_view_drops_only_other_daemons_lines():
    text = render_frr(PLANS["prod-euw1"], "router-1")
    view = bgpd_view(text)
    assert "ip route " not in view and "\nbfd\n" not in view and "receive-interval" not in view
    assert "router bgp 65000" in view and "ip prefix-list POOL-HOST-V4" in view
    # Nothing of bgpd's is lost: every BGP, prefix-list and route-map line is still there.
    kept = view.splitlines()
    for line in text.splitlines():
        if line.lstrip().startswith(
            (
                "neighbor",
                "bgp ",
                "ip prefix-list",
                "ipv6 prefix-list",
                "route-map",
                "match ",
                "aggregate-address",
                "address-family",
                "router bgp",
            )
        ):
            assert line in kept, line


# -- user data ----------------------------------------------------------------------

CLOUD_INIT = shutil.which("cloud-init")
needs_cloud_init = pytest.mark.skipif(CLOUD_INIT is None, reason="cloud-init not installed (Debian package)")


def _schema(text: str) -> subprocess.CompletedProcess:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="ovt-ud-") as f:
        f.write(text)
        f.flush()
        return subprocess.run(
            [CLOUD_INIT, "schema", "--config-file", f.name], capture_output=True, text=True, timeout=60
        )


@needs_cloud_init
@pytest.mark.parametrize("stack", sorted(PLANS))
def test_cloud_init_schema_accepts_user_data(stack):
    plan = PLANS[stack]
    hosts = plan.hosts if len(plan.hosts) <= 4 else plan.hosts[:2] + plan.hosts[-2:]
    for inst in plan.routers[:4] + hosts:
        text = render_user_data(
            plan,
            inst.name,
            bucket=BUCKET,
            agent_key=AGENT_KEY,
            parameter_path=f"/{plan.project}/{plan.stack}/instances/{inst.name}",
        )
        proc = _schema(text)
        out = proc.stdout + proc.stderr
        # cloud-init 22.4: exit 0 and "Valid cloud-config" when valid; deprecations are listed too.
        assert proc.returncode == 0 and "Valid cloud-config" in out, f"{stack} {inst.name}: {out}"
        assert "deprecat" not in out.lower(), f"{stack} {inst.name}: {out}"


@needs_cloud_init
@pytest.mark.parametrize("role", ["router-1", "host-1"])
def test_cloud_init_schema_accepts_userspace_gre_variant(role):
    """The variant for kernels without ip_gre: overlay-gre.service beside the agent."""
    import dataclasses

    from infra.render import render_template, user_data_context

    ctx = dataclasses.replace(
        user_data_context(
            PLANS["lab"], role, bucket=BUCKET, agent_key=AGENT_KEY, parameter_path=f"/overlay/lab/instances/{role}"
        ),
        gre_backend="userspace",
    )
    text = render_template(f"{ctx.role}.cloud-config.j2", ctx)
    proc = _schema(text)
    assert proc.returncode == 0 and "Valid cloud-config" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    files = {f["path"]: f["content"] for f in yaml.safe_load(text)["write_files"]}
    gre = files["/etc/systemd/system/overlay-gre.service"]
    assert "-m overlay_agent.gre --state-dir /var/lib/overlay-agent" in gre and "Restart=always" in gre
    agent = files["/etc/systemd/system/overlay-agent.service"]
    assert "Wants=network-online.target frr.service" in agent and "overlay-gre.service" in agent
    assert "--gre-backend userspace --gre-daemon systemd" in agent and "KillMode" not in agent


@needs_cloud_init
def test_cloud_init_schema_check_can_fail():
    text = render_user_data(
        PLANS["lab"], "host-1", bucket=BUCKET, agent_key=AGENT_KEY, parameter_path="/overlay/lab/instances/host-1"
    )
    proc = _schema(text.replace("    permissions: ", "    permission: ", 1))
    assert proc.returncode != 0 and "permission" in proc.stdout + proc.stderr


def _load_user_data_nft_twice(netns: str, instance: str, nft_path: str, table: str) -> tuple[str, dict]:
    """Render prod-euw1's user data for `instance`, load its nftables file `nft_path` into
    `netns` twice (it must be re-runnable: its systemd unit may run again) and list `table`.
    Returns the listing and the user data's files."""
    text = render_user_data(
        PLANS["prod-euw1"],
        instance,
        bucket=BUCKET,
        agent_key=AGENT_KEY,
        parameter_path=f"/overlay/prod-euw1/instances/{instance}",
    )
    files = {f["path"]: f["content"] for f in yaml.safe_load(text)["write_files"]}
    with tempfile.TemporaryDirectory(prefix="ovt-nft-") as tmp:
        path = Path(tmp) / Path(nft_path).name
        path.write_text(files[nft_path])
        for _ in range(2):
            subprocess.run(
                ["ip", "netns", "exec", netns, "nft", "-f", str(path)], check=True, capture_output=True, text=True
            )
        listing = subprocess.run(
            ["ip", "netns", "exec", netns, "nft", "list", "table", "inet", table],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    return listing, files


@pytest.mark.root
@pytest.mark.skipif(shutil.which("nft") is None, reason="nftables not installed")
def test_mss_clamp_rules_load_in_nftables(netns):
    # The router's MSS clamping rules, loaded for real into a scratch namespace.
    listing, _ = _load_user_data_nft_twice(netns, "router-1", "/etc/overlay-agent/mss-clamp.nft", "overlay_mss")
    assert "maxseg size set rt mtu" in listing
    assert listing.count("chain forward") == 1


@needs_frr
@pytest.mark.frr
@pytest.mark.parametrize("stack", ["prod-euw1", "gen-large", "gen-v4only"])
def test_route_server_config_with_its_endpoints_filled_in_passes_both_checks(stack):
    """A router's text as the agent applies it in routeServer mode (docs/vpc-failover.md)."""
    import dataclasses

    from infra.parameters import route_server_doc
    from overlay_agent.frr import fill_route_server

    plan = dataclasses.replace(PLANS[stack], vpc_failover="routeServer")
    failures = []
    for r in plan.routers:
        doc = route_server_doc(plan, ["10.20.128.5", "10.20.128.6"])
        # Held (as rendered) and planned (the agent's swap once the hosts are back).
        for preferred in (False, True):
            text = fill_route_server(_filled(plan, r.name), doc, preferred=preferred)
            assert "neighbor 10.20.128.6 peer-group ROUTE-SERVER" in text
            assert ("route-map RS-OUT out" in text) is preferred
            for result in (vtysh_check(text), bgpd_check(text)):
                if not result.ok:
                    failures.append(f"{stack} {r.name} preferred={preferred}: {result.tool}: {result.output[-600:]}")
    assert not failures, "\n".join(failures)


def test_egress_rules_load_in_nftables(netns):
    # A docker host's egress NAT (docs/egress.md), loaded for real twice (re-runnable).
    listing, files = _load_user_data_nft_twice(netns, "host-1", "/etc/overlay-agent/egress.nft", "overlay_egress")
    assert "ip saddr @pools4 ip daddr != @keep4 masquerade" in listing
    assert "ip6 saddr @pools6 ip6 daddr != @pools6 masquerade" in listing
    assert listing.count("chain postrouting") == 1
    assert "/etc/overlay-agent/egress.nft" in files["/etc/systemd/system/overlay-egress.service"]
