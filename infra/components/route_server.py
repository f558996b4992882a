"""RouteServer: VPC Route Server keeps every route table's pool routes on a live router (docs/vpc-failover.md)."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.plan import OverlayPlan


@dataclass
class RouteServerArgs:
    plan: OverlayPlan
    vpc_id: pulumi.Input[str]
    # (az, kind) -> id: the public subnets hold the routers and the endpoints.
    subnet_ids: dict[tuple[str, str], pulumi.Input[str]]
    # (az, kind) -> id: every table that carries the pools gets the route server's FIB.
    route_table_ids: dict[tuple[str, str], pulumi.Input[str]]


class RouteServer(pulumi.ComponentResource):
    """One route server for the VPC, an endpoint in every subnet that holds a router, and
    propagation to every route table. The peers (one per router) come later, in `peer()`:
    they name the router's address, which the plan fixes, but should exist only with the
    router's ENI."""

    def __init__(self, name: str, args: RouteServerArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("overlay:network:RouteServer", name, None, opts)
        plan = args.plan
        self.plan, self.rs_name = plan, name
        child = pulumi.ResourceOptions(parent=self)
        # persist_routes "disable": when every peer is gone the routes go too; keeping them
        # (AWS's persist option) would point the tables at a dead router, the failure this
        # is here to fix. No SNS topic: the verify tool and CloudWatch report peer state.
        self.server = aws.vpc.RouteServer(
            f"{name}-server",
            amazon_side_asn=plan.route_server_asn,
            persist_routes="disable",
            sns_notifications_enabled=False,
            tags={"Name": f"{plan.stack}-route-server"},
            opts=child,
        )
        self.association = aws.vpc.RouteServerVpcAssociation(
            f"{name}-vpc", route_server_id=self.server.route_server_id, vpc_id=args.vpc_id, opts=child
        )
        after_association = pulumi.ResourceOptions(parent=self, depends_on=[self.association])
        # A route server peer must sit in its endpoint's subnet: one endpoint per subnet
        # that holds routers (the routers' public subnets).
        self.endpoints: dict[str, aws.vpc.RouteServerEndpoint] = {}
        for az in sorted({r.az for r in plan.routers}, key=plan.azs.index):
            self.endpoints[az] = aws.vpc.RouteServerEndpoint(
                f"{name}-{az}",
                route_server_id=self.server.route_server_id,
                subnet_id=args.subnet_ids[(az, "public")],
                tags={"Name": f"{plan.stack}-route-server-{az}"},
                opts=after_association,
            )
        self.propagations = [
            aws.vpc.RouteServerPropagation(
                f"{name}-{kind}-{az}",
                route_server_id=self.server.route_server_id,
                route_table_id=table_id,
                opts=after_association,
            )
            for (az, kind), table_id in sorted(
                args.route_table_ids.items(), key=lambda kv: (plan.azs.index(kv[0][0]), kv[0][1])
            )
        ]
        self.peers: dict[str, aws.vpc.RouteServerPeer] = {}
        self.register_outputs(
            {
                "route_server_id": self.server.route_server_id,
                "endpoint_addresses": {az: e.eni_address for az, e in self.endpoints.items()},
            }
        )

    def endpoint_addresses(self) -> list[pulumi.Output[str]]:
        return [e.eni_address for e in self.endpoints.values()]

    def router_doc_inputs(self, router_name: str) -> list[pulumi.Output[str]]:
        """The endpoint addresses a router peers with: those in its own subnet."""
        return [self.endpoints[self.plan.router(router_name).az].eni_address]

    def peer(self, router_name: str, after: list[pulumi.Resource]) -> aws.vpc.RouteServerPeer:
        """The route server's session to one router: over its ENI address, BFD liveness."""
        r = self.plan.router(router_name)
        self.peers[r.name] = aws.vpc.RouteServerPeer(
            f"{self.rs_name}-{r.name}",
            route_server_endpoint_id=self.endpoints[r.az].route_server_endpoint_id,
            peer_address=str(r.private_ip),
            bgp_options={"peer_asn": r.asn, "peer_liveness_detection": "bfd"},
            tags={"Name": f"{self.plan.stack}-route-server-{r.name}"},
            opts=pulumi.ResourceOptions(parent=self, depends_on=after),
        )
        return self.peers[r.name]
