"""`python -m lab.seed STACK --endpoint URL`: publish a stack's parameters to an SSM endpoint (the lab's moto)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import boto3

from infra.config import ConfigError
from infra.parameters import build_parameters
from infra.plan import build_plan
from infra.publish import put_parameters
from infra.render import render_frr
from infra.stackfile import STACKS_DIR, load_stack
from lab.ssm import LAB_ONPREM_PASSWORD, LAB_PASSWORD, LAB_POLL_INTERVAL, LAB_RESYNC_INTERVAL
from lab.topology import LAB_VPC_V6


def route_server_docs(plan):
    """Each router's `route-server` parameter with the lab's endpoint addresses (routeServer mode)."""
    if plan.vpc_failover != "routeServer":
        return None
    from infra.parameters import route_server_doc
    from lab import route_server, topology

    topo = topology.build(plan)
    routers = {r.name for r in plan.routers}
    return lambda name: (
        route_server_doc(plan, route_server.router_endpoints(plan, topo, name)) if name in routers else None
    )


def client(endpoint: str, region: str):
    # moto accepts any credentials; real ones are never needed or read here.
    return boto3.client(
        "ssm", endpoint_url=endpoint, region_name=region, aws_access_key_id="lab", aws_secret_access_key="lab"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab.seed")
    p.add_argument("stack")
    p.add_argument("--endpoint", required=True)
    p.add_argument("--region", required=True)
    p.add_argument("--stacks-dir", type=Path, default=STACKS_DIR)
    args = p.parse_args(argv)
    try:
        plan = build_plan(load_stack(args.stack, args.stacks_dir))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    params = build_parameters(
        plan,
        lambda name: render_frr(plan, name),
        poll_interval=LAB_POLL_INTERVAL,
        resync_interval=LAB_RESYNC_INTERVAL,
        route_server=route_server_docs(plan),
        vpc_ipv6=str(LAB_VPC_V6),
    )
    written = put_parameters(
        client(args.endpoint, args.region), params, LAB_PASSWORD, onprem_password=LAB_ONPREM_PASSWORD, prune=True
    )
    print(json.dumps({"written": written}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
