"""Review F14: a stack's SSM polling load and Standard-parameter count, stated in the plan and refused past the defaults."""

from __future__ import annotations

import copy

import pytest

from infra.config import ConfigError, parse, ssm_polling_tps, ssm_standard_parameters
from infra.parameters import build_parameters
from infra.plan import build_plan
from infra.plan.report import to_markdown
from infra.stackfile import list_stacks, load_stack
from tests.support.configs import BASE


def _cfg(**changes):
    raw = copy.deepcopy(BASE)
    raw["vpc"]["cidr"] = "10.0.0.0/16"  # /20 subnets: 2,038 fixed addresses per AZ
    raw["pools"] = {"ipv4": ["10.96.0.0/12"], "ipv6": ["fd10:96::/40"]}
    raw["tunnels"] = {
        "ipv4": "169.254.64.0/18" if changes.get("big_tunnels") is None else "100.64.0.0/12",
        "ipv6": "fd10:7e::/64",
    }
    raw["routers"]["maxRouters"] = 8
    for key, value in changes.items():
        if key == "big_tunnels":
            continue
        section, _, name = key.partition(".")
        raw.setdefault(section, {})[name] = value
    return raw


@pytest.mark.parametrize("stack", list_stacks())
def test_standard_count_is_the_parameter_sets(stack):
    plan = build_plan(load_stack(stack))
    params = build_parameters(plan, lambda name: "", vpc_ipv6="2600:1f18:1:2300::/56")
    assert ssm_standard_parameters(load_stack(stack)) == sum(p.tier == "Standard" for p in params.values())


def test_polling_past_40_per_second_is_refused_with_the_figure():
    # 610 instances every 15 s: 40.7 requests/s.
    with pytest.raises(
        ConfigError,
        match=r"^overlay:agent.pollInterval = 15: 610 instances polling every 15 s make "
        r"40.7 SSM requests/s, over the account's default 40 \(shared by the "
        r"region\); poll every 16 s or more$",
    ):
        parse(_cfg(**{"hosts.count": 608, "big_tunnels": True}), "t")
    # The same stack at a longer interval is fine, and stated in the plan report.
    cfg = parse(_cfg(**{"hosts.count": 608, "agent.pollInterval": 16, "big_tunnels": True}), "t")
    assert ssm_polling_tps(cfg) == pytest.approx(610 / 16)
    report = to_markdown(build_plan(cfg))
    assert "- SSM polling: 610 instances every 16 s = 38.1 requests/s of the account's default 40" in report


def test_standard_parameters_past_10000_are_refused_with_the_figure():
    with pytest.raises(
        ConfigError,
        match=r"^overlay:hosts.count = 2490: the stack needs 14950 Standard SSM "
        r"parameters; an account holds at most 10000 per region$",
    ):
        parse(_cfg(**{"hosts.count": 2490, "routers.count": 2, "agent.pollInterval": 90, "big_tunnels": True}), "t")


def test_report_states_every_quota_for_every_stack():
    for stack in list_stacks():
        cfg = load_stack(stack)
        text = to_markdown(build_plan(cfg))
        assert f"SSM Standard parameters: {ssm_standard_parameters(cfg)} of 10,000" in text
        assert "requests/s of the account's default 40" in text and "EIPs:" in text
