"""VPC failover (docs/vpc-failover.md): config, plan report, router FRR text, the agent's route-server fill-in."""

from __future__ import annotations

import re

import dataclasses
import json

import pytest

from infra.config import ConfigError, parse
from infra.parameters import build_parameters, route_server_doc
from infra.plan import build_plan
from infra.plan.report import diff, plan_data, to_markdown
from infra.render import ROUTE_SERVER_MARKER, render_frr
from infra.rules import failover_targets, route_server_announcements, route_server_ingress
from infra.stackfile import load_stack
from overlay_agent import frr as agent_frr
from overlay_agent.errors import ConfigError as AgentConfigError
from overlay_agent.ssm import Snapshot


def raw(**vpc):
    return {
        "region": "eu-west-1",
        "vpc": {"cidr": "10.20.0.0/16", "azs": ["a", "b", "c"], **vpc},
        "routers": {"count": 2},
        "hosts": {"count": 3},
        "pools": {"ipv4": ["10.96.0.0/16"], "ipv6": ["fd10:96::/48"]},
        "onprem": [{"name": "dc1", "address": "198.51.100.1", "asn": 64600}],
    }


def rs_plan(stack="prod-euw1"):
    return build_plan(dataclasses.replace(load_stack(stack), vpc_failover="routeServer"))


def test_failover_defaults_to_static_and_prod_uses_route_server():
    assert parse(raw(), "s").vpc_failover == "static"
    assert parse(raw(failover="routeServer"), "s").vpc_failover == "routeServer"
    assert load_stack("prod-euw1").vpc_failover == "routeServer"


@pytest.mark.parametrize(
    "vpc, match",
    [
        ({"failover": "bgp"}, r"^overlay:vpc.failover = 'bgp': must be one of: routeServer, static$"),
        (
            {"failover": "routeServer", "routeServerAsn": 65000},
            r"routeServerAsn = 65000: must differ from overlay:routers.asn",
        ),
        ({"failover": "routeServer", "routeServerAsn": 65100}, r"must differ from overlay:hosts.asn"),
        ({"failover": "routeServer", "routeServerAsn": 64600}, r"must differ from overlay:onprem\[0\].asn"),
        ({"failover": "routeServer", "routeServerAsn": 23456}, r"reserved ASN"),
    ],
)
def test_bad_failover_config_is_one_line(vpc, match):
    with pytest.raises(ConfigError, match=match) as exc:
        parse(raw(**vpc), "s")
    assert "\n" not in str(exc.value)


def test_one_fib_every_table_prefers_router_1_and_router_2_takes_over():
    plan = rs_plan()
    ann = route_server_announcements(plan)
    assert [(a.router, a.med, a.prepend) for a in ann] == [("router-1", 0, 0), ("router-2", 100, 1)]
    assert failover_targets(plan) == [(az, "router-1", ["router-2"]) for az in plan.azs]
    static = build_plan(load_stack("test-use2"))
    assert failover_targets(static) == [(az, "router-1", []) for az in static.azs]


def test_report_says_who_is_preferred_who_takes_over_and_what_crosses_azs():
    text = to_markdown(rs_plan())
    section = text.split("## VPC failover")[1].split("##")[0]
    assert "VPC Route Server (AS64512)" in section
    assert "| eu-west-1a | router-1 | router-2 |" in section
    assert "| router-2 | eu-west-1b | 100 | 1 |" in section
    assert "Cross-AZ: the tables of eu-west-1b, eu-west-1c send pool traffic to another AZ's router." in section
    static = to_markdown(build_plan(load_stack("test-use2")))
    assert "nothing (the route stays on a dead router)" in static


def test_diff_names_a_failover_change():
    old = plan_data(build_plan(load_stack("test-use2")))
    new = plan_data(build_plan(dataclasses.replace(load_stack("test-use2"), vpc_failover="routeServer")))
    assert "setting vpc_failover: static -> routeServer" in diff(old, new)


def test_router_frr_announces_the_pools_with_its_preference_and_takes_nothing():
    plan = rs_plan()
    r1, r2 = render_frr(plan, "router-1"), render_frr(plan, "router-2")
    for text in (r1, r2):
        assert ROUTE_SERVER_MARKER in text
        assert "neighbor ROUTE-SERVER remote-as 64512" in text and "neighbor ROUTE-SERVER bfd" in text
        assert text.count("neighbor ROUTE-SERVER route-map RS-IN in") == 2  # v4 and v6
        assert "route-map RS-IN deny 10" in text

    def route_map(text, name):
        return text.split(f"route-map {name} permit 10\n")[1].split("!")[0]

    assert route_map(r1, "RS-OUT") == " match ip address prefix-list POOL-V4\n set metric 0\n"
    assert route_map(r2, "RS6-OUT").endswith(" set metric 100\n set as-path prepend 65000\n")
    # Held (the rendered default, until the agent sees the hosts back): worse than every
    # router's planned announcement on MED and AS-path length, in the planned order.
    assert route_map(r1, "RS-HOLD-OUT").endswith(" set metric 200\n set as-path prepend 65000 65000\n")
    assert route_map(r2, "RS6-HOLD-OUT").endswith(" set metric 300\n set as-path prepend 65000 65000 65000\n")
    for text in (r1, r2):
        assert "neighbor ROUTE-SERVER route-map RS-HOLD-OUT out" in text
        assert "neighbor ROUTE-SERVER route-map RS6-HOLD-OUT out" in text
        assert "neighbor ROUTE-SERVER route-map RS-OUT out" not in text
    # Hosts and static stacks have none of it.
    assert "ROUTE-SERVER" not in render_frr(plan, "host-1")
    assert "ROUTE-SERVER" not in render_frr(build_plan(load_stack("test-use2")), "router-1")


def test_held_announcements_lose_to_every_planned_one_and_keep_the_order():
    # gen-large: 8 routers. Whichever AWS compares first (AS-path length or MED), any
    # router with its hosts back beats every held one, and held ones keep the plan order.
    from tests.support.render_plans import generated_plan

    plan = dataclasses.replace(generated_plan("gen-large"), vpc_failover="routeServer")
    ann = route_server_announcements(plan)
    assert len(ann) == 8
    planned = [(a.prepend, a.med) for a in ann]
    held = [(a.hold_prepend, a.hold_med) for a in ann]
    assert planned == sorted(planned) and held == sorted(held)
    assert max(p for p, _ in planned) < min(p for p, _ in held)
    assert max(m for _, m in planned) < min(m for _, m in held)


def test_agent_swaps_in_the_planned_announcement_only_when_told():
    plan = rs_plan()
    doc = route_server_doc(plan, ["10.20.128.5"])
    for r in ("router-1", "router-2"):
        text = render_frr(plan, r)
        held = agent_frr.fill_route_server(text, doc)
        assert "route-map RS-HOLD-OUT out" in held and "route-map RS6-HOLD-OUT out" in held
        preferred = agent_frr.fill_route_server(text, doc, preferred=True)
        assert "route-map RS-HOLD-OUT out" not in preferred and "route-map RS6-HOLD-OUT out" not in preferred
        assert preferred.count("  neighbor ROUTE-SERVER route-map RS-OUT out\n") == 1
        assert preferred.count("  neighbor ROUTE-SERVER route-map RS6-OUT out\n") == 1
        # Only those two lines differ; the route-map definitions stay.
        diff = [(a, b) for a, b in zip(held.splitlines(), preferred.splitlines()) if a != b]
        assert len(diff) == 2 and len(held.splitlines()) == len(preferred.splitlines())
        assert "route-map RS-HOLD-OUT permit 10" in preferred


def test_the_marker_is_the_same_string_in_program_and_agent():
    assert agent_frr.ROUTE_SERVER_MARKER == ROUTE_SERVER_MARKER


def test_agent_fills_in_the_endpoints_from_the_parameter():
    plan = rs_plan()
    text = render_frr(plan, "router-1")
    doc = route_server_doc(plan, ["10.20.128.7", "10.20.128.5"])
    filled = agent_frr.fill_route_server(text, doc)
    assert ROUTE_SERVER_MARKER not in filled
    assert " neighbor 10.20.128.5 peer-group ROUTE-SERVER\n neighbor 10.20.128.7 peer-group ROUTE-SERVER\n" in filled
    # No parameter yet: the peer group stays empty (the marker is a comment FRR ignores).
    assert agent_frr.fill_route_server(text, None) == text
    assert agent_frr.fill_route_server("no marker", doc) == "no marker"
    for bad, line in (
        ("{", "not JSON"),
        (
            '{"schema": 1, "asn": 1, "endpoints": ["10.0.0.1; neighbor x"]}',
            "endpoints[0]: '10.0.0.1; neighbor x' is not",
        ),
        ('{"schema": 1, "asn": 1}', "missing key 'endpoints'"),
        ('{"schema": 1, "asn": 1, "endpoints": ["fd00::1"]}', "endpoints[0]: 'fd00::1' is not an IPv4 address"),
    ):
        with pytest.raises(AgentConfigError, match=f"^route-server: {re.escape(line)}"):
            agent_frr.fill_route_server(text, bad)


def test_route_server_parameter_is_in_the_routers_set_and_moves_their_revision():
    plan = rs_plan()
    base = build_parameters(plan, lambda n: render_frr(plan, n))
    docs = {"router-1": route_server_doc(plan, ["10.20.128.5"]), "router-2": route_server_doc(plan, ["10.20.129.5"])}
    withrs = build_parameters(plan, lambda n: render_frr(plan, n), route_server=docs.get)
    extra = set(withrs) - set(base)
    assert extra == {f"/overlay/prod-euw1/instances/{r}/route-server" for r in docs}
    assert json.loads(withrs["/overlay/prod-euw1/instances/router-1/route-server"].value) == {
        "schema": 1,
        "asn": 64512,
        "endpoints": ["10.20.128.5"],
    }
    for r in ("router-1", "router-2"):
        name = f"/overlay/prod-euw1/instances/{r}/revision"
        assert base[name].value != withrs[name].value
    assert (
        base["/overlay/prod-euw1/instances/host-1/revision"] == withrs["/overlay/prod-euw1/instances/host-1/revision"]
    )


def test_snapshot_carries_the_route_server_document_through_the_cache():
    snap = Snapshot("r1", "{}", "frr", {}, None, 1.0, '{"endpoints": []}')
    assert Snapshot.from_json(json.loads(json.dumps(snap.to_json()))) == snap
    old = {"revision": "r1", "agent": None, "frr": None, "tunnels": {}, "password": None}
    assert Snapshot.from_json(old).route_server is None


def test_route_server_rules_bgp_and_bfd_only_from_the_endpoints():
    rules = route_server_ingress(["10.20.129.9", "10.20.128.5"])
    assert [(r.protocol, r.from_port, r.to_port, r.cidrs_v4) for r in rules] == [
        ("tcp", 179, 179, ("10.20.128.5/32", "10.20.129.9/32")),
        ("udp", 3784, 3784, ("10.20.128.5/32", "10.20.129.9/32")),
        ("udp", 4784, 4784, ("10.20.128.5/32", "10.20.129.9/32")),
    ]
