"""The lab's stand-in for VPC Route Server (stacks with vpc.failover routeServer): one FRR in the VPC namespace.

What AWS documents, and how the lab does it (docs/lab.md, "Route Server emulation"):

- Endpoints: an address in each subnet that holds routers. AWS picks it; the lab takes
  offset 5 (the band the plan leaves to operators) on the subnet's bridge in the VPC
  namespace, and publishes it in the routers' `route-server` parameters exactly as the
  program does from the endpoints' outputs.
- Peers: one BGP session per router, between the endpoint in its subnet and its ENI
  address, opened by the router (the endpoint is passive, as AWS's), BFD for liveness
  (`peer_liveness_detection = bfd`).
- RIB -> one FIB -> every propagated table: bgpd holds the RIB and selects ONE best path
  per pool (no ECMP: a VPC route has one target) by BGP attributes (AS path, then MED,
  as AWS's example); zebra installs it in the VPC namespace's main table. The per-AZ
  tables (policy rules by ingress bridge, lab/underlay.py) hold no pool route in this
  mode, so their lookups fall through to the main table: every table sees the same best
  route, as with AWS's single FIB.
- A peer lost (BFD down): its paths leave the RIB, the FIB is recomputed and the tables
  follow at once. Persisted routes are off, as the program sets them.
"""

from __future__ import annotations

import ipaddress

from infra.plan import OverlayPlan
from lab.topology import LabTopology

NAME = "route-server"
# The endpoint's host offset in its subnet (AWS assigns one; 5-9 is the operators' band).
ENDPOINT_OFFSET = 5
DAEMONS = ("zebra", "bgpd", "bfdd")


def endpoints(plan: OverlayPlan, topo: LabTopology) -> dict[str, ipaddress.IPv4Address]:
    """AZ -> the endpoint address in that AZ's public subnet (AZs that hold routers)."""
    out = {}
    for az in plan.azs:
        if any(r.az == az for r in plan.routers):
            seg = next(s for s in topo.segments if s.kind == "public" and s.az_index == plan.azs.index(az))
            out[az] = seg.cidr.network_address + ENDPOINT_OFFSET
    return out


def router_endpoints(plan: OverlayPlan, topo: LabTopology, router: str) -> list[str]:
    return [str(endpoints(plan, topo)[plan.router(router).az])]


def frr_config(plan: OverlayPlan, topo: LabTopology) -> str:
    """The emulated route server: accepts exactly the pools from each router, sends nothing back."""
    eps = endpoints(plan, topo)
    b = plan.bgp
    lines = [
        "frr defaults datacenter",
        f"hostname {NAME}",
        "log syslog informational",
        "!",
        "! Only the pools, exactly; anything else a peer announces stays out of the FIB.",
        *[f"ip prefix-list POOLS-V4 seq {5 * i} permit {p}" for i, p in enumerate(plan.pools_v4, 1)],
        *[f"ipv6 prefix-list POOLS-V6 seq {5 * i} permit {p}" for i, p in enumerate(plan.pools_v6, 1)],
        "route-map PEER-IN permit 10",
        " match ip address prefix-list POOLS-V4",
        "!",
        "route-map PEER-IN6 permit 10",
        " match ipv6 address prefix-list POOLS-V6",
        # A router on the endpoint's subnet sends its ENI's global IPv6 address and its
        # link-local one as next hop; bgpd would install the link-local one. A VPC route's
        # target is the peer's ENI: take the global address, which names the router.
        " set ipv6 next-hop prefer-global",
        "!",
        "route-map PEER-OUT deny 10",
        "!",
        "bfd",
        " profile ROUTERS",
        f"  transmit-interval {b.bfd_interval_ms}",
        f"  receive-interval {b.bfd_interval_ms}",
        f"  detect-multiplier {b.bfd_multiplier}",
        " exit",
        " !",
        "exit",
        "!",
        f"router bgp {plan.route_server_asn}",
        f" bgp router-id {min(eps.values())}",
        " no bgp default ipv4-unicast",
        " bgp graceful-restart-disable",
        " neighbor ROUTERS peer-group",
        # AWS: the peer device initiates the session; the endpoint only accepts.
        " neighbor ROUTERS passive",
        f" neighbor ROUTERS timers {b.keepalive} {b.hold}",
        " neighbor ROUTERS bfd",
        " neighbor ROUTERS bfd profile ROUTERS",
    ]
    for r in plan.routers:
        lines += [
            f" neighbor {r.private_ip} remote-as {r.asn}",
            f" neighbor {r.private_ip} peer-group ROUTERS",
            f" neighbor {r.private_ip} update-source {eps[r.az]}",
        ]
    lines += [
        " !",
        " address-family ipv4 unicast",
        "  neighbor ROUTERS activate",
        "  neighbor ROUTERS route-map PEER-IN in",
        "  neighbor ROUTERS route-map PEER-OUT out",
        "  ! One target per route, as in a VPC route table.",
        "  maximum-paths 1",
        " exit-address-family",
    ]
    if plan.ipv6:
        lines += [
            " !",
            " address-family ipv6 unicast",
            "  neighbor ROUTERS activate",
            "  neighbor ROUTERS route-map PEER-IN6 in",
            "  neighbor ROUTERS route-map PEER-OUT out",
            "  maximum-paths 1",
            " exit-address-family",
        ]
    lines += ["exit", "!"]
    return "\n".join(lines) + "\n"
