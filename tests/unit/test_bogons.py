"""Review F13: the import filters' bogon entries and the VPC's IPv6 block, written by the agent at the program's markers."""

from __future__ import annotations

import ipaddress
import re

import pytest

from infra.parameters import TIERS, build_parameters, instance_path, vpc_doc
from infra.render import BOGONS_SEQ, RenderError, bogons_marker, render_frr
from overlay_agent.errors import ConfigError
from overlay_agent.frr import BOGONS_V4, BOGONS_V6, FILTER_MARKER, fill_bogons, fill_password
from tests.support.render_plans import all_plans

PLANS = all_plans()
VPC6 = "2600:1f18:4a3:6c00::/56"
VPC_DOC = '{"ipv6":"%s","schema":1}' % VPC6


def _entries(text: str, name: str) -> list[tuple[int, str]]:
    """(seq, action and prefix) of every entry of prefix-list `name`."""
    out = []
    for m in re.finditer(rf"^ipv?6? ?prefix-list {re.escape(name)} seq (\d+) (.*)$", text, re.M):
        out.append((int(m.group(1)), m.group(2)))
    return out


def test_the_list_covers_what_the_review_names():
    # link-local (IMDS .254, DNS .253, time sync .123), loopback, multicast, class E, "this network";
    # link-local, loopback, AWS's IPv6 service range, multicast.
    v4 = [ipaddress.ip_network(b) for b in BOGONS_V4]
    for addr in (
        "169.254.169.254",
        "169.254.169.253",
        "169.254.169.123",
        "127.0.0.1",
        "224.0.0.5",
        "239.255.255.250",
        "240.0.0.1",
        "255.255.255.255",
        "0.1.2.3",
    ):
        assert any(ipaddress.ip_address(addr) in n for n in v4), addr
    v6 = [ipaddress.ip_network(b) for b in BOGONS_V6]
    for addr in ("fe80::1", "::1", "fd00:ec2::254", "fd00:ec2::123", "ff02::5"):
        assert any(ipaddress.ip_address(addr) in n for n in v6), addr
    # Nothing a datacenter may legitimately announce: RFC 1918, CGNAT (pools live there), ULA, global.
    for addr in ("10.1.2.3", "172.16.0.1", "192.168.1.1", "100.64.0.1", "8.8.8.8"):
        assert not any(ipaddress.ip_address(addr) in n for n in v4), addr
    for addr in ("fd10:96::1", "2001:db8::1", "2600:1f18::1"):
        assert not any(ipaddress.ip_address(addr) in n for n in v6), addr


@pytest.mark.parametrize("stack", sorted(PLANS))
def test_every_rendered_marker_is_one_the_agent_fills(stack):
    plan = PLANS[stack]
    for inst in (plan.routers[0], plan.hosts[0]):
        text = render_frr(plan, inst.name)
        markers = [line for line in text.splitlines() if line.startswith("! agent:")]
        assert markers and all(FILTER_MARKER.match(m) for m in markers), markers
        lists = ("ONPREM-V4", "ONPREM-V6") if inst in plan.routers else ("ROUTERS-V4", "ROUTERS-V6")
        vpc = VPC_DOC if inst in plan.routers else None
        filled = fill_bogons(fill_password(text, "pw", onprem_password="dc-pw"), vpc)
        for name in lists[: 2 if plan.ipv6 else 1]:
            entries = _entries(filled, name)
            denied = {rest for seq, rest in entries if seq >= BOGONS_SEQ and rest.startswith("deny")}
            if name.endswith("V4"):
                want = {f"deny {b} le 32" for b in BOGONS_V4}
            else:
                want = {"deny ::1/128", "deny fe80::/10 le 128", "deny fd00:ec2::/32 le 128", "deny ff00::/8 le 128"}
                if name == "ONPREM-V6":
                    want.add(f"deny {VPC6} le 128")
            assert denied == want, (inst.name, name, denied)
            # The bogons come before the one final catch-all permit (hosts permit the exact
            # pools first); sequence numbers unique.
            seqs = [seq for seq, _ in entries]
            assert len(seqs) == len(set(seqs))
            assert [seq for seq, rest in entries if rest.startswith("permit") and seq >= BOGONS_SEQ] == [1000]
            assert all(" le " not in rest for seq, rest in entries if rest.startswith("permit") and seq < 1000)
        if not plan.ipv6:
            assert "ONPREM-V6" not in filled and "ROUTERS-V6" not in filled


def test_routers_of_ipv6_stacks_get_a_vpc_parameter_and_hosts_do_not():
    plan = PLANS["lab"]
    params = build_parameters(plan, lambda n: render_frr(plan, n), vpc_ipv6=VPC6)
    for inst in plan.instances:
        p = params.get(f"{instance_path(plan, inst.name)}/vpc")
        if inst in plan.routers:
            assert p is not None and p.value == vpc_doc(plan, VPC6) == VPC_DOC and p.tier == TIERS["vpc"] == "Standard"
        else:
            assert p is None
    # Without the block (plan-only) there is none; its revision covers it.
    plain = build_parameters(plan, lambda n: render_frr(plan, n))
    router = instance_path(plan, plan.routers[0].name)
    assert f"{router}/vpc" not in plain
    assert plain[f"{router}/revision"].value != params[f"{router}/revision"].value
    v4only = PLANS["gen-v4only"]
    assert not [
        n for n in build_parameters(v4only, lambda n: render_frr(v4only, n), vpc_ipv6=VPC6) if n.endswith("/vpc")
    ]


def test_the_marker_stays_and_its_entries_follow_it():
    text = "a\n! agent: ip prefix-list L seq 500+ deny bogons\nb\n"
    out = fill_bogons(text, None)
    lines = out.splitlines()
    assert lines[:2] == ["a", "! agent: ip prefix-list L seq 500+ deny bogons"] and lines[-1] == "b"
    assert lines[2:-1] == [f"ip prefix-list L seq {500 + 5 * i} deny {b} le 32" for i, b in enumerate(BOGONS_V4)]
    # No marker: the text is untouched.
    assert fill_bogons("router bgp 1\n", None) == "router bgp 1\n"
    # Idempotent on already-filled text? No: the agent fills the parameter's text, once per apply.


def test_a_missing_vpc_block_is_refused_not_skipped():
    text = "! agent: ipv6 prefix-list ONPREM-V6 seq 500+ deny bogons, vpc-ipv6\n"
    with pytest.raises(ConfigError, match="line 1 needs the VPC's IPv6 block but the vpc parameter was not read"):
        fill_bogons(text, None)
    for bad in ('{"ipv6": "10.0.0.0/8"}', '{"ipv6": "2600:1f18::/96"}', "not json", '{"schema": 1}'):
        with pytest.raises(ConfigError, match="^vpc: "):
            fill_bogons(text, bad)


def test_an_unknown_agent_marker_is_refused():
    with pytest.raises(ConfigError, match="line 2 is an agent marker this agent does not know"):
        fill_bogons("x\n! agent: ip prefix-list L seq 500+ deny martians\n", None)
    with pytest.raises(ConfigError, match="vpc-ipv6 belongs in an ipv6 prefix-list"):
        fill_bogons("! agent: ip prefix-list L seq 500+ deny bogons, vpc-ipv6\n", VPC_DOC)


def test_render_refuses_a_vpc_block_in_an_ipv4_list():
    assert bogons_marker("ipv6", "X", vpc_ipv6=True) == "! agent: ipv6 prefix-list X seq 500+ deny bogons, vpc-ipv6"
    with pytest.raises(RenderError, match="vpc_ipv6"):
        bogons_marker("ip", "X", vpc_ipv6=True)
