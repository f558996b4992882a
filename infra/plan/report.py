"""The plan as a reviewer reads it: markdown tables, JSON, a Mermaid topology, and a plan diff; pure."""

from __future__ import annotations

import json
import re
from typing import Any

from infra.config import SSM_DEFAULT_TPS, SSM_STANDARD_PARAMETERS
from infra.parameters import build_parameters
from infra.plan.model import OverlayPlan, to_data

# EC2's default Elastic IP quota per region (EC2 User Guide, "Elastic IP address quota").
EIP_DEFAULT_QUOTA = 5

REPORT_SCHEMA = 1
# GitHub renders Mermaid with an edge limit (500 by default); past this many hosts the
# diagram groups them per AZ so it still renders in a pull request.
MERMAID_MAX_HOSTS = 24


def plan_data(plan: OverlayPlan) -> dict[str, Any]:
    data: dict[str, Any] = to_data(plan)
    data["schema"] = REPORT_SCHEMA
    return data


def to_json(plan: OverlayPlan) -> str:
    return json.dumps(plan_data(plan), indent=2, sort_keys=True) + "\n"


def quota_lines(plan: OverlayPlan) -> list[str]:
    """The stack against the account's default quotas it shares with everything else in the region."""
    instances = len(plan.routers) + len(plan.hosts)
    tps = instances / plan.poll_interval
    # Any IPv6 block stands in for AWS's here (routers' `vpc`): only the count matters.
    standard = sum(
        1 for p in build_parameters(plan, lambda name: "", vpc_ipv6="::/56").values() if p.tier == "Standard"
    )
    eips = sum(1 for r in plan.routers if r.eip) + len(plan.azs)
    return [
        f"- SSM polling: {instances} instances every {plan.poll_interval} s = {tps:.1f} requests/s of the "
        f"account's default {SSM_DEFAULT_TPS} per region ({100 * tps / SSM_DEFAULT_TPS:.0f} %, shared with "
        "every other SSM reader there)",
        f"- SSM Standard parameters: {standard} of {SSM_STANDARD_PARAMETERS:,} per account and region",
        f"- EIPs: {eips} ({sum(1 for r in plan.routers if r.eip)} routers + {len(plan.azs)} NAT gateways) of the "
        f"default quota of {EIP_DEFAULT_QUOTA} per region: any EIP already in the account counts too",
    ]


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join("" if c is None else str(c) for c in row) + " |" for row in rows]
    return out


def to_markdown(plan: OverlayPlan) -> str:
    b = plan.bgp
    lines = [
        f"# Plan for stack `{plan.stack}` ({plan.region}, {plan.environment})",
        "",
        f"- VPC {plan.vpc_cidr}{' + IPv6 /56 from AWS' if plan.ipv6 else ''}, AZs: {', '.join(plan.azs)}",
        f"- Container pools: {', '.join(map(str, plan.pools_v4 + plan.pools_v6))}",
        f"- Tunnel pools: {plan.tunnel_v4}{', ' + str(plan.tunnel_v6) if plan.tunnel_v6 else ''}; "
        f"MTU {plan.mtu} in the VPC, {plan.onprem_mtu} to on-prem",
        f"- BGP: keepalive {b.keepalive}s, hold {b.hold}s, BFD {b.bfd_interval_ms} ms x {b.bfd_multiplier}, "
        f"max-prefix {b.max_prefix}, on-prem gets {b.announce}, graceful restart "
        f"{'on' if b.graceful_restart else 'off'}",
        f"- VPC routing mode: {plan.routing_mode}; route protocol {plan.route_protocol}",
        f"- {len(plan.routers)} routers, {len(plan.hosts)} docker hosts, {len(plan.onprem)} on-prem peers, "
        f"{len(plan.pairings)} pairings",
        *quota_lines(plan),
        "",
        "## Subnets",
        "",
        *_table(
            ["AZ", "kind", "IPv4", "IPv6 /64 index", "reserved for fixed addresses", "NAT gateway"],
            [
                [s.az, s.kind, s.cidr, s.ipv6_netnum, ", ".join(map(str, s.reserved)), s.nat_ip or ""]
                for s in plan.subnets
            ],
        ),
        "",
        "## Instances",
        "",
        *_table(
            ["name", "role", "AZ", "private IP", "ASN", "type", "IPv4 block", "IPv6 block", "EIP"],
            [
                [r.name, "router", r.az, r.private_ip, r.asn, r.instance_type, "", "", "yes" if r.eip else "no"]
                for r in plan.routers
            ]
            + [
                [h.name, "host", h.az, h.private_ip, h.asn, h.instance_type, h.block_v4, h.block_v6 or "", ""]
                for h in plan.hosts
            ],
        ),
        "",
        "## Pairings",
        "",
        *_table(
            [
                "router",
                "peer",
                "kind",
                "outer (router -> peer)",
                "GRE key",
                "interface",
                "inner IPv4",
                "inner IPv6",
                "MTU",
                "ASNs",
            ],
            [
                [
                    p.a.name,
                    p.b.name,
                    p.kind,
                    f"{p.a_local}{' (EIP)' if p.kind == 'onprem' else ''} -> {p.b.outer}",
                    p.key,
                    p.ifname,
                    f"{p.a.inner_v4} / {p.b.inner_v4}",
                    f"{p.a.inner_v6} / {p.b.inner_v6}" if p.inner_net_v6 else "",
                    p.mtu,
                    f"{p.a.asn} / {p.b.asn}",
                ]
                for p in plan.pairings
            ],
        ),
    ]
    lines += ["", "## VPC failover", "", *_failover(plan)]
    if plan.onprem:
        lines += [
            "",
            "## On-prem peers",
            "",
            *_table(
                ["name", "public address", "ASN", "routers"],
                [[o.name, o.address, o.asn, ", ".join(r.name for r in plan.routers)] for o in plan.onprem],
            ),
        ]
    return "\n".join(lines) + "\n"


def _failover(plan: OverlayPlan) -> list[str]:
    # Imported here: infra.rules imports the plan package.
    from infra.rules import failover_targets, route_server_announcements

    rows = [
        [az, pref, " -> ".join(takeover) or "nothing (the route stays on a dead router)"]
        for az, pref, takeover in failover_targets(plan)
    ]
    if plan.vpc_failover == "routeServer":
        head = [
            f"VPC Route Server (AS{plan.route_server_asn}), BFD liveness: one FIB, so every route table "
            "prefers the same router; the pools move to the next live router when it goes.",
            "",
        ]
        head += _table(
            ["router", "AZ", "MED", "AS-path prepends"],
            [[a.router, a.az, a.med, a.prepend] for a in route_server_announcements(plan)],
        )
        cross = [az for az, pref, _ in failover_targets(plan) if plan.router(pref).az != az]
        if cross:
            head += ["", f"Cross-AZ: the tables of {', '.join(cross)} send pool traffic to another AZ's router."]
        head.append("")
    else:
        head = [
            "static: each AZ's tables send the pools to one router ENI; nothing moves the route when "
            "that router fails.",
            "",
        ]
    return head + _table(["AZ tables", "prefer", "takeover order"], rows)


def _mid(name: str) -> str:
    # Prefixed so a peer's name can never collide with a subgraph id or Mermaid keyword.
    return "n_" + name.replace("-", "_")


def to_mermaid(plan: OverlayPlan) -> str:
    """A flowchart: AZs as subgraphs, GRE pairings as edges, on-prem peers on the left."""
    lines = ["flowchart LR"]
    group_hosts = len(plan.hosts) > MERMAID_MAX_HOSTS
    if plan.onprem:
        lines.append('  subgraph onprem_peers["on-prem"]')
        lines += [f'    {_mid(o.name)}(["{o.name}<br/>AS{o.asn}<br/>{o.address}"])' for o in plan.onprem]
        lines.append("  end")
    for i, az in enumerate(plan.azs):
        lines.append(f'  subgraph az{i}["{az}"]')
        lines += [
            f'    {_mid(r.name)}{{{{"{r.name}<br/>{r.private_ip}<br/>AS{r.asn}"}}}}' for r in plan.routers if r.az == az
        ]
        hosts = [h for h in plan.hosts if h.az == az]
        if group_hosts and hosts:
            lines.append(f'    hosts_az{i}["{len(hosts)} docker hosts<br/>{hosts[0].name} .. {hosts[-1].name}"]')
        else:
            lines += [f'    {_mid(h.name)}["{h.name}<br/>{h.private_ip}<br/>{h.block_v4}"]' for h in hosts]
        lines.append("  end")
    seen = set()
    for p in plan.pairings:
        if p.kind == "onprem":
            lines.append(f"  {_mid(p.b.name)} <-- GRE {p.key} --> {_mid(p.a.name)}")
            continue
        if group_hosts:
            target = f"hosts_az{plan.azs.index(plan.host(p.b.name).az)}"
            if (p.a.name, target) in seen:
                continue
            seen.add((p.a.name, target))
            lines.append(f"  {_mid(p.a.name)} <-- GRE --> {target}")
        else:
            lines.append(f"  {_mid(p.a.name)} <-- GRE {p.key} --> {_mid(p.b.name)}")
    return "\n".join(lines) + "\n"


# -- diff ---------------------------------------------------------------------------


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else k))
        return out
    return {prefix: value}


def _changes(old: dict[str, Any], new: dict[str, Any], skip: tuple[str, ...] = ()) -> list[str]:
    fo, fn = _flatten(old), _flatten(new)
    return [
        f"{k} {fo.get(k)} -> {fn.get(k)}" for k in sorted(set(fo) | set(fn)) if k not in skip and fo.get(k) != fn.get(k)
    ]


def diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What a config change does to the plan, one line per instance, pairing or setting."""
    lines: list[str] = []
    settings = (
        "region",
        "environment",
        "vpc_cidr",
        "ipv6",
        "azs",
        "pools_v4",
        "pools_v6",
        "tunnel_v4",
        "tunnel_v6",
        "bgp",
        "routing_mode",
        "route_protocol",
        "mtu",
        "onprem_mtu",
        "vpc_failover",
        "route_server_asn",
    )
    for key in settings:
        if old.get(key) != new.get(key):
            if isinstance(new.get(key), dict):
                lines += [f"setting {c}" for c in _changes({key: old.get(key)}, {key: new.get(key)})]
            else:
                lines.append(f"setting {key}: {_fmt(old.get(key))} -> {_fmt(new.get(key))}")

    def index(data: dict[str, Any], section: str) -> dict[str, dict[str, Any]]:
        return {item["name"]: item for item in data.get(section, [])}

    old_pairs = {p["id"]: p for p in old.get("pairings", [])}
    new_pairs = {p["id"]: p for p in new.get("pairings", [])}
    added_names: set[str] = set()
    removed_names: set[str] = set()
    for section, label in (("routers", "router"), ("hosts", "host"), ("onprem", "on-prem peer")):
        o, n = index(old, section), index(new, section)
        for name in sorted(set(n) - set(o), key=_natural):
            peers = sorted(
                (
                    p["a"]["name"] if p["b"]["name"] == name else p["b"]["name"]
                    for pid, p in new_pairs.items()
                    if pid not in old_pairs and name in (p["a"]["name"], p["b"]["name"])
                ),
                key=_natural,
            )
            added_names.add(name)
            detail = _instance_summary(n[name])
            lines.append(f"{label} {name} added{detail}: pairings to {', '.join(peers) or 'none'}")
        for name in sorted(set(o) - set(n), key=_natural):
            removed_names.add(name)
            gone = sum(
                1 for pid, p in old_pairs.items() if pid not in new_pairs and name in (p["a"]["name"], p["b"]["name"])
            )
            lines.append(f"{label} {name} removed (with {gone} pairings)")
        for name in sorted(set(o) & set(n), key=_natural):
            changed = _changes(o[name], n[name])
            if changed:
                lines.append(f"{label} {name} changed: {'; '.join(changed)}")
    for pid in sorted(set(new_pairs) - set(old_pairs), key=_natural):
        p = new_pairs[pid]
        if not added_names & {p["a"]["name"], p["b"]["name"]}:
            lines.append(f"pairing {pid} added (key {p['key']}, {p['inner_net_v4']})")
    for pid in sorted(set(old_pairs) - set(new_pairs), key=_natural):
        p = old_pairs[pid]
        if not removed_names & {p["a"]["name"], p["b"]["name"]}:
            lines.append(f"pairing {pid} removed")
    for pid in sorted(set(old_pairs) & set(new_pairs), key=_natural):
        changed = _changes(old_pairs[pid], new_pairs[pid])
        if changed:
            lines.append(f"pairing {pid} changed: {'; '.join(changed)}")
    return lines


def _instance_summary(item: dict[str, Any]) -> str:
    parts = [item.get(k) for k in ("az", "private_ip", "block_v4") if item.get(k)]
    if "address" in item:
        parts.append(item["address"])
    return f" ({', '.join(map(str, parts))})" if parts else ""


def _fmt(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


def _natural(text: str) -> list[int | str]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]
