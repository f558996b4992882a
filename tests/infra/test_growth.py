"""Adding a host changes only its resources and the routers' tunnel parameters (program run for N and N+1)."""

from __future__ import annotations

import json

import pytest

from infra.plan import build_plan
from infra.stackfile import load_stack
from tests.infra.mockrun import run_program

STACK = "prod-euw1"


@pytest.fixture(scope="module")
def runs():
    n = load_stack(STACK).host_count
    return n, run_program(STACK), run_program(STACK, {"hosts.count": n + 1})


def _same(a, b) -> bool:
    """Inputs equal, assets compared by their path (asset objects have no equality)."""

    def norm(o):
        return json.dumps(o, sort_keys=True, default=lambda x: getattr(x, "path", repr(x)))

    return norm(a.inputs) == norm(b.inputs)


def _owner(run, rec):
    """The top-level component a resource belongs to (its own name for top-level ones)."""
    by_urn = {r.urn: r for r in run.resources}
    while rec.parent in by_urn:
        rec = by_urn[rec.parent]
    return rec.name


def test_adding_a_host_touches_only_its_resources_and_router_tunnel_parameters(runs):
    n, before, after = runs
    new = f"host-{n + 1}"
    plan = build_plan(load_stack(STACK))
    old = {r.urn: r for r in before.resources}
    cur = {r.urn: r for r in after.resources}
    assert set(old) - set(cur) == set(), "nothing is removed"

    added = {cur[u].name for u in set(cur) - set(old)}
    own = {cur[u].name for u in set(cur) - set(old) if _owner(after, cur[u]) == new}
    assert own >= {new, f"{new}-eni", f"{new}-instance", f"{new}-agent", f"{new}-frr", f"{new}-revision"}
    assert added - own == {f"{r.name}-tunnels-{new}" for r in plan.routers}

    changed = {old[u].name for u in set(old) & set(cur) if not _same(old[u], cur[u])}
    assert changed == {f"{r.name}-revision" for r in plan.routers}
    # Nothing else moves: not the routers' instances, ENIs, frr or agent parameters, not the VPC.
    for r in plan.routers:
        for part in ("instance", "eni", "eip", "frr", "agent"):
            u = next(x.urn for x in before.resources if x.name == f"{r.name}-{part}")
            assert _same(old[u], cur[u]) and old[u].protect == cur[u].protect
            assert set(old[u].dependencies) == set(cur[u].dependencies)


def test_outputs_grow_by_the_new_host_pairings(runs):
    n, before, after = runs
    new = f"host-{n + 1}"
    added = [p for p in after.outputs["pairings"] if p not in before.outputs["pairings"]]
    assert {p["peer"] for p in added} == {new}
    assert after.outputs["routerAddresses"] == before.outputs["routerAddresses"]
