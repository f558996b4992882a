"""The lab's topology from a plan: namespaces, links and addresses standing for the VPC, internet and on-prem; pure."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from infra.plan import OverlayPlan, nth_subnet

# Lab-only addressing, outside anything a stack may use for its VPC or pools:
# TEST-NET-1 for the IGW and the internet's transfer addresses, TEST-NET-3 for EIPs.
IGW_VPC_SIDE = ipaddress.ip_address("192.0.2.1")
IGW_INET_SIDE = ipaddress.ip_address("192.0.2.2")
INET_PEER_GW = ipaddress.ip_address("192.0.2.129")
EIP_POOL = ipaddress.ip_network("203.0.113.0/24")
EIP_BASE = 10
# On-prem LANs behind each on-prem router (the "datacenter" the clients live in).
ONPREM_LAN_V4 = ipaddress.ip_network("192.168.240.0/20")
ONPREM_LAN_V6 = ipaddress.ip_network("fd10:250::/48")
# The VPC-native instance (in the VPC, not part of the overlay) takes this offset in
# the first private subnet, far above the plan's fixed slots (10 + k div #AZ).
NATIVE_OFFSET = 200
# The VPC's IPv6 /56 comes from AWS at creation; the lab stands in with a ULA /56 and
# gives subnet i the /64 the plan assigns it (Subnet.ipv6_netnum), as AWS would.
LAB_VPC_V6 = ipaddress.ip_network("fd4c:ab00::/56")
# AWS route tables are per subnet; the lab's VPC namespace models one per AZ with a
# policy rule per bridge; table ids start here.
AZ_TABLE_BASE = 100


@dataclass(frozen=True)
class Segment:
    """A subnet bridge in the VPC namespace; the VPC router holds .1 like AWS's."""

    bridge: str
    cidr: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address
    az_index: int
    kind: str
    cidr_v6: ipaddress.IPv6Network | None = None

    @property
    def gateway_v6(self) -> ipaddress.IPv6Address | None:
        return self.cidr_v6.network_address + 1 if self.cidr_v6 else None


@dataclass(frozen=True)
class Instance:
    name: str
    role: str  # "router", "host" or "native"
    ns: str
    segment: Segment
    address: ipaddress.IPv4Address
    vpc_port: str  # its veth's end in the VPC namespace (a bridge port)
    eip: ipaddress.IPv4Address | None

    @property
    def address_v6(self) -> ipaddress.IPv6Address | None:
        """The same host part as its IPv4 address, in its subnet's /64 (None without IPv6)."""
        if self.segment.cidr_v6 is None:
            return None
        return self.segment.cidr_v6.network_address + (int(self.address) - int(self.segment.cidr.network_address))


@dataclass(frozen=True)
class OnPremSite:
    name: str
    ns: str
    client_ns: str
    public: ipaddress.IPv4Address
    inet_port: str
    lan_v4: ipaddress.IPv4Network
    lan_v6: ipaddress.IPv6Network
    router_lan_v4: ipaddress.IPv4Address
    router_lan_v6: ipaddress.IPv6Address
    client_v4: ipaddress.IPv4Address
    client_v6: ipaddress.IPv6Address


@dataclass(frozen=True)
class LabTopology:
    stack: str
    vpc_ns: str
    inet_ns: str
    segments: tuple[Segment, ...]
    instances: tuple[Instance, ...]
    sites: tuple[OnPremSite, ...]
    az_tables: tuple[tuple[int, str], ...]  # (table, router name) per AZ

    @property
    def namespaces(self) -> tuple[str, ...]:
        out = [self.vpc_ns, self.inet_ns]
        out += [i.ns for i in self.instances]
        for s in self.sites:
            out += [s.ns, s.client_ns]
        return tuple(out)

    def instance(self, name: str) -> Instance:
        return next(i for i in self.instances if i.name == name)


def ns_prefix(stack: str) -> str:
    # Namespace names are free-form, but keep them short and recognisable: `ovl-<stack>-`.
    return f"ovl-{stack}-"


def build(plan: OverlayPlan) -> LabTopology:
    prefix = ns_prefix(plan.stack)
    segments = []
    for s in plan.subnets:
        # bridge names live in the VPC namespace only; 15-character limit
        bridge = f"br-{'pub' if s.kind == 'public' else 'prv'}{s.az_index}"
        v6 = nth_subnet(LAB_VPC_V6, 64, s.ipv6_netnum) if s.ipv6_netnum is not None else None
        segments.append(Segment(bridge, s.cidr, s.cidr.network_address + 1, s.az_index, s.kind, v6))
    seg = {(s.az_index, s.kind): s for s in segments}
    az_index = {az: i for i, az in enumerate(plan.azs)}

    instances = []
    for r in plan.routers:
        eip = EIP_POOL.network_address + EIP_BASE + r.index if r.eip else None
        instances.append(
            Instance(
                r.name,
                "router",
                prefix + r.name,
                seg[(az_index[r.az], "public")],
                r.private_ip,
                f"p-{r.name}"[:15],
                eip,
            )
        )
    for h in plan.hosts:
        instances.append(
            Instance(
                h.name,
                "host",
                prefix + h.name,
                seg[(az_index[h.az], "private")],
                h.private_ip,
                f"p-{h.name}"[:15],
                None,
            )
        )
    native_seg = seg[(0, "private")]
    instances.append(
        Instance(
            "native",
            "native",
            prefix + "native",
            native_seg,
            native_seg.cidr.network_address + NATIVE_OFFSET,
            "p-native",
            None,
        )
    )

    sites = []
    for i, peer in enumerate(plan.onprem):
        lan4 = list(ONPREM_LAN_V4.subnets(new_prefix=24))[i]
        lan6 = list(ONPREM_LAN_V6.subnets(new_prefix=64))[i] if plan.ipv6 else ONPREM_LAN_V6
        sites.append(
            OnPremSite(
                name=peer.name,
                ns=prefix + peer.name,
                client_ns=prefix + peer.name + "-cl",
                public=peer.address,
                inet_port=f"s-{peer.name}"[:15],
                lan_v4=lan4,
                lan_v6=lan6,
                router_lan_v4=lan4.network_address + 1,
                router_lan_v6=lan6.network_address + 1,
                client_v4=lan4.network_address + 10,
                client_v6=lan6.network_address + 10,
            )
        )

    # Per-AZ route tables: the pools go to the router in that AZ; AZs without a router
    # use router (AZ index mod #routers), as an operator would point them.
    tables = []
    for i, az in enumerate(plan.azs):
        in_az = [r for r in plan.routers if r.az == az]
        router = in_az[0] if in_az else plan.routers[i % len(plan.routers)]
        tables.append((AZ_TABLE_BASE + i, router.name))

    return LabTopology(
        stack=plan.stack,
        vpc_ns=prefix + "vpc",
        inet_ns=prefix + "inet",
        segments=tuple(segments),
        instances=tuple(instances),
        sites=tuple(sites),
        az_tables=tuple(tables),
    )
