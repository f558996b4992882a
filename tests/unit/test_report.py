"""The plan report: markdown, JSON, Mermaid for every stack, and the plan diff a reviewer reads."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from infra.plan import build_plan
from infra.plan.report import MERMAID_MAX_HOSTS, diff, plan_data, to_markdown, to_mermaid
from infra.stackfile import REPO_ROOT, list_stacks, load_stack, stack_path
from tests.support.configs import plan_for


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "infra.plan", *args], capture_output=True, text=True, cwd=REPO_ROOT)


@pytest.mark.parametrize("stack", list_stacks())
def test_markdown_lists_every_instance_and_pairing(stack):
    plan = build_plan(load_stack(stack))
    proc = cli(stack)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for inst in plan.instances:
        assert f"| {inst.name} |" in out
        assert str(inst.private_ip) in out
    for h in plan.hosts:
        assert str(h.block_v4) in out
    for p in plan.pairings:
        assert f"| {p.a.name} | {p.b.name} | {p.kind} |" in out
        assert f"{p.a.inner_v4} / {p.b.inner_v4}" in out
    for peer in plan.onprem:
        assert f"| {peer.name} | {peer.address} | {peer.asn} |" in out


@pytest.mark.parametrize("stack", list_stacks())
def test_json_round_trips_the_plan(stack):
    proc = cli(stack, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data == json.loads(json.dumps(plan_data(build_plan(load_stack(stack)))))
    assert data["schema"] == 1


def _mermaid_nodes_and_edges(text: str):
    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    opened = sum(1 for line in lines if line.strip().startswith("subgraph "))
    closed = sum(1 for line in lines if line.strip() == "end")
    assert opened == closed
    edges = [line for line in lines if "<--" in line]
    return lines, edges


@pytest.mark.parametrize("stack", list_stacks())
def test_mermaid_has_a_node_per_instance_and_an_edge_per_pairing(stack):
    plan = build_plan(load_stack(stack))
    proc = cli(stack, "--format", "mermaid")
    assert proc.returncode == 0, proc.stderr
    lines, edges = _mermaid_nodes_and_edges(proc.stdout)
    assert len(edges) == len(plan.pairings)
    for inst in plan.instances:
        assert any(f"n_{inst.name.replace('-', '_')}" in line and inst.name in line for line in lines)


def test_mermaid_groups_large_stacks():
    plan = plan_for(routers=4, hosts=MERMAID_MAX_HOSTS + 30, n_az=3, onprem=2)
    _, edges = _mermaid_nodes_and_edges(to_mermaid(plan))
    # one edge per router and AZ group, plus the on-prem pairings
    assert len(edges) == 4 * 3 + 4 * 2


def test_mermaid_renders_with_mermaid_cli_syntax_rules():
    """Node ids never collide with subgraph ids, even for a peer named like one."""
    plan = plan_for(routers=1, hosts=2, n_az=1, onprem=1)
    text = to_mermaid(plan)
    ids = [
        line.split("[")[0].split("(")[0].split("{")[0].strip() for line in text.splitlines() if line.startswith("    ")
    ]
    subgraphs = [line.split()[1].split("[")[0] for line in text.splitlines() if "subgraph" in line]
    assert not set(ids) & set(subgraphs)


def test_diff_reports_added_host_with_its_pairings(tmp_path):
    old = plan_data(plan_for(routers=2, hosts=6, n_az=3, onprem=1))
    new = plan_data(plan_for(routers=2, hosts=7, n_az=3, onprem=1))
    assert diff(old, new) == ["host host-7 added (az-0, 10.20.0.12, 10.96.1.128/26): pairings to router-1, router-2"]
    assert diff(new, old) == ["host host-7 removed (with 2 pairings)"]
    assert diff(old, old) == []


def test_diff_reports_added_router_and_setting_changes():
    old = plan_data(plan_for(routers=2, hosts=2, n_az=2, onprem=1))
    raw_new = plan_for(routers=3, hosts=2, n_az=2, onprem=1)
    new = plan_data(raw_new)
    new["bgp"]["max_prefix"] = 9999
    lines = diff(old, new)
    assert "setting bgp.max_prefix 2000 -> 9999" in lines
    assert "router router-3 added (az-0, 10.20.128.11): pairings to dc0, host-1, host-2" in lines


def test_cli_diff_against_old_stack_yaml(tmp_path):
    doc = yaml.safe_load(stack_path("lab").read_text())
    doc["config"]["overlay:hosts"]["count"] -= 1
    old = tmp_path / "old.yaml"
    old.write_text(yaml.safe_dump(doc))
    proc = cli("lab", "--diff", str(old))
    assert proc.returncode == 0, proc.stderr
    assert "- host host-2 added (lab-b, 10.40.16.10, 10.99.1.0/24): pairings to router-1, router-2" in proc.stdout
    proc_json = cli("lab", "--format", "json")
    (tmp_path / "same.json").write_text(proc_json.stdout)
    assert "No changes." in cli("lab", "--diff", str(tmp_path / "same.json")).stdout


def test_cli_diff_bad_file_is_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    proc = cli("lab", "--diff", str(bad))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "not valid JSON" in proc.stderr


def test_markdown_is_pure_function_of_plan():
    plan = build_plan(load_stack("lab"))
    assert to_markdown(plan) == to_markdown(build_plan(load_stack("lab")))


MERMAID_CHECK = REPO_ROOT / "tools" / "mermaid-check" / "check.mjs"


def mermaid_parse(text: str) -> subprocess.CompletedProcess:
    return subprocess.run(["node", str(MERMAID_CHECK)], input=text, capture_output=True, text=True, timeout=60)


@pytest.mark.node
@pytest.mark.parametrize("stack", list_stacks())
def test_mermaid_parses_with_mermaid_itself(stack):
    """Mermaid's own parser (as GitHub renders it) accepts every stack's diagram."""
    proc = mermaid_parse(to_mermaid(build_plan(load_stack(stack))))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok flowchart")


@pytest.mark.node
def test_mermaid_parser_rejects_a_broken_diagram():
    proc = mermaid_parse("flowchart LR\n  a[x] <-- GRE --> b[[y]\n")
    assert proc.returncode == 1 and "invalid mermaid" in proc.stderr


@pytest.mark.node
def test_mermaid_large_grouped_stack_parses():
    plan = plan_for(routers=4, hosts=200, n_az=3, onprem=2)
    assert mermaid_parse(to_mermaid(plan)).returncode == 0
