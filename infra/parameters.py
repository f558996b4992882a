"""The SSM parameter set of docs/contracts.md, per instance, from the plan; pure (no pulumi, no I/O)."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Callable

from overlay_agent import schemas
from overlay_agent.errors import ConfigError

from infra import placeholders
from infra.plan.model import Host, OverlayPlan, Pairing, Router

SCHEMA = schemas.VERSION  # the documents' `schema` key (overlay_agent/schemas/common.schema.json)
ROUTE_PROTOCOL_NAME = "overlay"
# How often the agent polls its `revision` parameter and resyncs everything. SSM's
# GetParameter throughput is shared by the whole account and region (40 TPS by default),
# so 200 instances at one poll per 15 s stay near 13 TPS.
POLL_INTERVAL = 15
RESYNC_INTERVAL = 30
# GRE outer TTL: the default Linux TTL; tunnels cross the VPC or the internet.
TUNNEL_TTL = 64
# SSM String parameter value limits: 4 KB in the standard tier, 8 KB in the advanced
# tier (billed per parameter, $0.05 a month).
STANDARD_MAX = 4096
ADVANCED_MAX = 8192
# One tier per parameter kind, never chosen by size: SSM cannot move a parameter from
# Advanced back to Standard, so pulumi-aws replaces it, and with a fixed name the
# replacement's create fails (ParameterAlreadyExists) or its delete removes the new one
# (review F12). `frr` texts cross 4 KB as routers or on-prem peers are added (and drop
# back when removed), so they are always Advanced; the JSON documents stay far below 4 KB.
TIERS = {
    "agent": "Standard",
    "frr": "Advanced",
    "tunnels": "Standard",
    "revision": "Standard",
    "route-server": "Standard",
    "vpc": "Standard",
}
# The placeholder the `frr` parameter carries where the BGP password goes; the agent
# fills it in on the instance from the SecureString parameter (infra/placeholders.py).
PASSWORD_PLACEHOLDER = placeholders.BGP_PASSWORD
# SSM PutParameter API reference (botocore's ssm service-2.json, PutParameterRequest.Value):
# "Parameters can't be referenced or nested in the values of other parameters. You can't
# include values wrapped in double brackets {{}} or {{ssm:parameter-name}} in a parameter
# value."
SSM_NESTED = re.compile(r"\{\{.*?\}\}", re.S)

FrrRenderer = Callable[[str], str]


class ParameterError(ValueError):
    """A parameter the plan produces cannot be stored in SSM (one line: name, reason)."""


@dataclass(frozen=True)
class Parameter:
    """One SSM parameter. `value` is None only for the SecureString the caller supplies."""

    name: str
    type: str  # "String" or "SecureString"
    value: str | None
    instance: str | None  # the instance whose set this belongs to; None for stack-wide
    tier: str = "Standard"


# The parameter names are the agent's (overlay_agent.schemas): one definition for both sides.
def root(plan: OverlayPlan) -> str:
    return f"/{plan.project}/{plan.stack}"


def instance_path(plan: OverlayPlan, instance: str) -> str:
    """The prefix of one instance's parameters (what its user data and IAM policy name)."""
    return schemas.instance_path(plan.project, plan.stack, instance)


def password_name(plan: OverlayPlan) -> str:
    """The sessions inside the stack (routers and docker hosts)."""
    return schemas.password_name(plan.project, plan.stack)


def onprem_password_name(plan: OverlayPlan) -> str:
    """The datacenter sessions' own password: stacks with on-prem peers; routers read it, hosts may not."""
    return schemas.onprem_password_name(plan.project, plan.stack)


def _dump(doc: Any) -> str:
    # Sorted and compact: the same plan always gives byte-identical values, so a
    # `pulumi up` with nothing changed updates nothing and revisions stay put.
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def document(schema: str, doc: dict[str, Any], name: str) -> str:
    """A document checked against the agent's schema for it (overlay_agent/schemas), as its parameter value.

    The agent validates what it reads with the same file: a value the agent would refuse
    is a ParameterError here, at `pulumi preview`, not a tunnel missing on an instance.
    """
    try:
        schemas.validate(schema, doc, name)
    except ConfigError as exc:
        raise ParameterError(str(exc)) from None
    return _dump(doc)


def agent_doc(
    plan: OverlayPlan,
    inst: Router | Host,
    *,
    poll_interval: float = POLL_INTERVAL,
    resync_interval: float = RESYNC_INTERVAL,
) -> dict[str, Any]:
    is_host = isinstance(inst, Host)
    blocks = None
    if isinstance(inst, Host):
        blocks = {"ipv4": str(inst.block_v4), "ipv6": str(inst.block_v6) if inst.block_v6 else None}
    return {
        "schema": SCHEMA,
        "project": plan.project,
        "stack": plan.stack,
        "instance": inst.name,
        "role": "host" if is_host else "router",
        "asn": inst.asn,
        "underlay": {"address": str(inst.private_ip)},
        "blocks": blocks,
        "pools": {"ipv4": [str(p) for p in plan.pools_v4], "ipv6": [str(p) for p in plan.pools_v6]},
        # What any host may announce besides its own block (docs/contracts.md).
        "shared": {
            "ipv4": [str(p) for p in plan.shared_v4],
            "ipv6": [str(p) for p in plan.shared_v6] if plan.ipv6 else [],
        },
        "settings": {
            "route_protocol": plan.route_protocol,
            "route_protocol_name": ROUTE_PROTOCOL_NAME,
            "poll_interval": poll_interval,
            "resync_interval": resync_interval,
        },
    }


def tunnel_doc(p: Pairing, side: str, host: Host | None = None) -> dict[str, Any]:
    """One tunnel as seen from side "a" (the router) or "b" (the host).

    A router's tunnel to a host carries that host's block and index: the router's agent
    filters the host's announcements with them (docs/frr.md "Who may announce what").
    """
    me, peer = (p.a, p.b) if side == "a" else (p.b, p.a)
    local = p.a_local if side == "a" else p.b.outer
    # A host's remote is the router's private address (inside the VPC); the router's
    # remote is the host's private address or the on-prem peer's public one.
    remote = p.b.outer if side == "a" else p.a_local
    inner6 = None
    if p.inner_net_v6 is not None:
        inner6 = {"local": str(me.inner_v6), "remote": str(peer.inner_v6), "prefixlen": p.inner_net_v6.prefixlen}
    return {
        "schema": SCHEMA,
        "name": p.ifname,
        "peer": peer.name,
        "kind": p.kind,
        "local": str(local),
        "remote": str(remote),
        "key": p.key,
        "ttl": TUNNEL_TTL,
        "mtu": p.mtu,
        "inner_ipv4": {"local": str(me.inner_v4), "remote": str(peer.inner_v4), "prefixlen": p.inner_net_v4.prefixlen},
        "inner_ipv6": inner6,
        "peer_asn": peer.asn,
        **(
            {
                "peer_blocks": {"ipv4": str(host.block_v4), "ipv6": str(host.block_v6) if host.block_v6 else None},
                "peer_index": host.index,
            }
            if host is not None and side == "a"
            else {}
        ),
    }


def route_server_doc(plan: OverlayPlan, endpoints: list[str]) -> str:
    """A router's `route-server` parameter (routeServer mode): the route server's ASN and the
    addresses of its endpoints in the router's subnet, which AWS assigns at creation."""
    doc = {"schema": SCHEMA, "asn": plan.route_server_asn, "endpoints": sorted(endpoints)}
    return document("route-server", doc, "route-server")


def vpc_doc(plan: OverlayPlan, ipv6_block: str) -> str:
    """A router's `vpc` parameter (IPv6 stacks): the VPC's IPv6 block, which AWS assigns when
    it creates the VPC. The router's agent denies it from on-prem (docs/frr.md, bogons)."""
    return document("vpc", {"schema": SCHEMA, "ipv6": ipv6_block}, "vpc")


def revision(params: list[Parameter]) -> str:
    """A stable hash over one instance's parameters (names and values, order-free)."""
    h = hashlib.sha256()
    for p in sorted(params, key=lambda p: p.name):
        h.update(p.name.encode() + b"\0" + (p.value or "").encode() + b"\0")
    return h.hexdigest()[:16]


def kind_of(name: str, instance_base: str) -> str:
    """agent, frr, tunnels or revision: the part of an instance parameter's name after its path."""
    return name[len(instance_base) + 1 :].split("/", 1)[0]


def _string(name: str, value: str, instance: str, kind: str) -> Parameter:
    nested = SSM_NESTED.search(value)
    if nested:
        raise ParameterError(
            f"{name}: value contains {nested.group(0)[:40]!r}; SSM refuses values "
            "wrapped in double brackets {{...}} (PutParameter)"
        )
    tier = TIERS[kind]
    limit = STANDARD_MAX if tier == "Standard" else ADVANCED_MAX
    if len(value.encode()) > limit:
        raise ParameterError(
            f"{name}: value is {len(value.encode())} bytes; {tier}-tier parameters hold at most {limit}"
        )
    return Parameter(name=name, type="String", value=value, instance=instance, tier=tier)


def instance_parameters(
    plan: OverlayPlan,
    inst: Router | Host,
    frr_text: FrrRenderer,
    *,
    poll_interval: float = POLL_INTERVAL,
    resync_interval: float = RESYNC_INTERVAL,
    route_server: str | None = None,
    vpc: str | None = None,
) -> list[Parameter]:
    """agent, frr, tunnels/<peer>, route-server and vpc (routers, when given) and revision (last) for one instance.

    `route_server` is the router's route_server_doc text, known only once AWS has created
    the endpoints, `vpc` its vpc_doc text, known once AWS has created the VPC: the program
    computes this set again with them inside an apply (values only).
    """
    base = instance_path(plan, inst.name)
    frr = frr_text(inst.name)
    out = [
        _string(
            f"{base}/agent",
            document(
                "agent",
                agent_doc(plan, inst, poll_interval=poll_interval, resync_interval=resync_interval),
                f"{base}/agent",
            ),
            inst.name,
            "agent",
        ),
        _string(f"{base}/frr", frr, inst.name, "frr"),
    ]
    side = "a" if isinstance(inst, Router) else "b"
    hosts = {h.name: h for h in plan.hosts} if side == "a" else {}
    for p in plan.pairings_of(inst.name):
        peer = p.b.name if side == "a" else p.a.name
        host = hosts.get(p.b.name) if p.kind == "host" else None
        name = f"{base}/tunnels/{peer}"
        out.append(_string(name, document("tunnel", tunnel_doc(p, side, host), name), inst.name, "tunnels"))
    if route_server is not None and isinstance(inst, Router):
        out.append(_string(f"{base}/route-server", route_server, inst.name, "route-server"))
    if vpc is not None and isinstance(inst, Router):
        out.append(_string(f"{base}/vpc", vpc, inst.name, "vpc"))
    out.append(_string(f"{base}/revision", revision(out), inst.name, "revision"))
    return out


def build_parameters(
    plan: OverlayPlan,
    frr_text: FrrRenderer,
    *,
    poll_interval: float | None = None,
    resync_interval: float = RESYNC_INTERVAL,
    route_server: Callable[[str], str | None] | None = None,
    vpc_ipv6: str | None = None,
) -> dict[str, Parameter]:
    """Every parameter of the stack by name: each instance's set, then the BGP password(s).

    `frr_text(instance_name)` renders that instance's frr.conf (infra.render.render_frr)
    with the password placeholder; `route_server(router_name)`, when given, that router's
    route-server parameter text (None: none). `vpc_ipv6`, the VPC's IPv6 block, gives each
    router of an IPv6 stack its `vpc` parameter. The password parameter's value is None: the caller
    supplies it (a Pulumi secret, or the lab's own); so for the on-prem password, present
    when the stack has on-prem peers.
    """
    params: dict[str, Parameter] = {}
    if poll_interval is None:
        poll_interval = plan.poll_interval  # overlay:agent.pollInterval (default POLL_INTERVAL)
    for inst in plan.instances:
        for p in instance_parameters(
            plan,
            inst,
            frr_text,
            poll_interval=poll_interval,
            resync_interval=resync_interval,
            route_server=route_server(inst.name) if route_server else None,
            vpc=vpc_doc(plan, vpc_ipv6) if vpc_ipv6 and plan.ipv6 else None,
        ):
            params[p.name] = p
    params[password_name(plan)] = Parameter(password_name(plan), "SecureString", None, None)
    if plan.onprem:
        params[onprem_password_name(plan)] = Parameter(onprem_password_name(plan), "SecureString", None, None)
    return params
