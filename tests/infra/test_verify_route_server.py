"""`infra.verify`'s route server checks against botocore's Stubber with the real EC2 service model.

moto (the version pinned here) implements none of the Route Server APIs, so these calls
cannot go to the moto server the rest of test_verify uses. The Stubber validates every
request and response against botocore's own model of the EC2 API, so parameter names,
filter names and response shapes are AWS's; what it cannot show is the service's behaviour.
"""

from __future__ import annotations

import dataclasses

import boto3
import pytest
from botocore.stub import Stubber

from infra.plan import build_plan
from infra.stackfile import load_stack
from infra.verify import Verifier

RS_ID = "rs-0123456789abcdef0"


def plan():
    return build_plan(dataclasses.replace(load_stack("test-use2"), vpc_failover="routeServer", router_count=2))


def _client():
    return boto3.client("ec2", region_name="us-east-2", aws_access_key_id="x", aws_secret_access_key="x")


def stub_route_server(stubber, p, *, peer_bfd="up", table_missing=None, persist="disabled"):
    tag = [{"Name": "tag:project", "Values": ["overlay"]}, {"Name": "tag:stack", "Values": [p.stack]}]
    stubber.add_response(
        "describe_route_servers",
        {
            "RouteServers": [
                {
                    "RouteServerId": RS_ID,
                    "AmazonSideAsn": p.route_server_asn,
                    "State": "available",
                    "PersistRoutesState": persist,
                }
            ]
        },
        {"Filters": tag + [{"Name": "tag:Name", "Values": [f"{p.stack}-route-server"]}]},
    )
    stubber.add_response(
        "get_route_server_associations",
        {"RouteServerAssociations": [{"RouteServerId": RS_ID, "VpcId": "vpc-1", "State": "associated"}]},
        {"RouteServerId": RS_ID},
    )
    rs_filter = [{"Name": "route-server-id", "Values": [RS_ID]}]
    stubber.add_response(
        "describe_route_server_endpoints",
        {
            "RouteServerEndpoints": [
                {
                    "RouteServerId": RS_ID,
                    "RouteServerEndpointId": f"rse-{r.az}",
                    "SubnetId": f"subnet-{r.az}",
                    "EniAddress": f"10.30.{8 + i}.5",
                    "State": "available",
                }
                for i, r in enumerate(p.routers)
            ]
        },
        {"Filters": rs_filter},
    )
    stubber.add_response(
        "describe_route_server_peers",
        {
            "RouteServerPeers": [
                {
                    "RouteServerPeerId": f"rsp-{r.name}",
                    "RouteServerId": RS_ID,
                    "PeerAddress": str(r.private_ip),
                    "State": "available",
                    "BgpStatus": {"Status": "up"},
                    "BfdStatus": {"Status": peer_bfd if r.name == "router-2" else "up"},
                    "BgpOptions": {"PeerAsn": r.asn, "PeerLivenessDetection": "bfd"},
                }
                for r in p.routers
            ]
        },
        {"Filters": rs_filter},
    )
    tables = [(az, kind) for az in p.azs for kind in ("public", "private")]
    stubber.add_response(
        "get_route_server_propagations",
        {
            "RouteServerPropagations": [
                {"RouteServerId": RS_ID, "RouteTableId": f"rtb-{kind}-{az}", "State": "available"}
                for az, kind in tables
                if (az, kind) != table_missing
            ]
        },
        {"RouteServerId": RS_ID},
    )
    for az, kind in tables:
        stubber.add_response(
            "describe_route_tables",
            {"RouteTables": [{"RouteTableId": f"rtb-{kind}-{az}"}]},
            {"Filters": tag + [{"Name": "tag:Name", "Values": [f"{p.stack}-{kind}-{az}"]}]},
        )


def run_checks(**kw):
    p = plan()
    ec2 = _client()
    with Stubber(ec2) as stubber:
        stub_route_server(stubber, p, **kw)
        v = Verifier(p, ec2, None, lambda n: "")
        v.eni_subnets = {r.name: f"subnet-{r.az}" for r in p.routers}
        v.route_server()
        stubber.assert_no_pending_responses()
    return v


def test_route_server_as_built_passes_every_check():
    v = run_checks()
    assert v.rows and all(r.ok for r in v.rows), [r for r in v.rows if not r.ok]
    checks = [r.check for r in v.rows]
    assert checks.count("route server peer up") == 2 and checks.count("route server propagation") == 4
    assert v.endpoints_by_subnet == {"subnet-us-east-2a": ["10.30.8.5"], "subnet-us-east-2b": ["10.30.9.5"]}


@pytest.mark.parametrize(
    "kw, check, detail",
    [
        ({"peer_bfd": "down"}, "route server peer up", "BFD=down"),
        ({"table_missing": ("us-east-2b", "private")}, "route server propagation", "not propagated"),
        ({"persist": "enabled"}, "route server", "PersistRoutesState=enabled"),
    ],
)
def test_each_fault_fails_its_own_check(kw, check, detail):
    bad = [r for r in run_checks(**kw).rows if not r.ok]
    assert len(bad) == 1 and bad[0].check == check and detail in bad[0].detail, bad
