"""Properties of rendering over generated stacks: every instance renders, routers ignore hosts, limits hold."""

from __future__ import annotations

import re

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infra.config import parse
from infra.parameters import ADVANCED_MAX
from infra.plan import build_plan
from infra.render import (
    ONPREM_PASSWORD_PLACEHOLDER,
    PASSWORD_PLACEHOLDER,
    USER_DATA_LIMIT,
    render_frr,
    render_onprem_frr,
    render_user_data,
)
from tests.support.render_plans import AGENT_KEY, BUCKET, fake_eips, random_raw

knobs = st.fixed_dictionaries(
    {
        "routers": st.integers(1, 8),
        "hosts": st.integers(1, 40),
        "n_az": st.integers(1, 4),
        "onprem": st.integers(0, 7),
        "ipv6": st.booleans(),
        "per_host": st.booleans(),
        "graceful_restart": st.booleans(),
        "specifics": st.booleans(),
        "pools": st.integers(1, 3),
    }
)


def _plan(k):
    return build_plan(parse(random_raw(**k), "prop"))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(knobs)
def test_every_instance_renders_within_limits(k):
    plan = _plan(k)
    for inst in plan.instances:
        frr = render_frr(plan, inst.name)
        assert len(frr.encode()) <= ADVANCED_MAX
        assert PASSWORD_PLACEHOLDER in frr
        ud = render_user_data(
            plan, inst.name, bucket=BUCKET, agent_key=AGENT_KEY, parameter_path=f"/overlay/prop/instances/{inst.name}"
        )
        assert ud.startswith("#cloud-config\n") and len(ud.encode()) <= USER_DATA_LIMIT
        assert isinstance(yaml.safe_load(ud), dict)
    for peer in plan.onprem:
        assert ONPREM_PASSWORD_PLACEHOLDER in render_onprem_frr(plan, peer.name, fake_eips(plan))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(knobs, st.integers(1, 20))
def test_routers_text_ignores_hosts(k, more):
    small = _plan(k)
    big = _plan({**k, "hosts": k["hosts"] + more})
    for r in small.routers:
        assert render_frr(small, r.name) == render_frr(big, r.name)
    # Existing hosts' texts do not move either.
    for h in small.hosts:
        assert render_frr(small, h.name) == render_frr(big, h.name)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(knobs)
def test_hosts_peer_with_every_router_and_nothing_else(k):
    plan = _plan(k)
    host = plan.hosts[-1]
    text = render_frr(plan, host.name)
    peers = re.findall(r"^ neighbor (\S+) peer-group ROUTERS6?$", text, re.M)
    want = [str(p.a.inner_v4) for p in plan.pairings if p.kind == "host" and p.b.name == host.name]
    if plan.ipv6:
        want += [str(p.a.inner_v6) for p in plan.pairings if p.kind == "host" and p.b.name == host.name]
    assert sorted(peers) == sorted(want)
    assert len(peers) == len(plan.routers) * (2 if plan.ipv6 else 1)
