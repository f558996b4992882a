"""The OverlayPlan: frozen dataclasses describing every address, instance and pairing of a stack."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, fields
from typing import Any

from infra.config import BgpConfig, OnPremPeer

IPv4 = ipaddress.IPv4Address
IPv6 = ipaddress.IPv6Address
Net4 = ipaddress.IPv4Network
Net6 = ipaddress.IPv6Network


@dataclass(frozen=True)
class Subnet:
    az: str
    az_index: int
    kind: str  # "public" (routers) or "private" (docker hosts)
    cidr: Net4
    # The VPC's IPv6 /56 is assigned by AWS at creation; the plan fixes only which /64
    # of it each subnet takes.
    ipv6_netnum: int | None
    # The fixed-address band (instances' planned addresses, now and as the stack grows),
    # reserved with an explicit subnet CIDR reservation so AWS never hands one of them to
    # an ENI it creates itself (NAT gateway, interface endpoint, ...): review F15.
    reserved: tuple[Net4, ...] = ()
    # Public subnets: the NAT gateway's own address, pinned below the band.
    nat_ip: ipaddress.IPv4Address | None = None


@dataclass(frozen=True)
class Router:
    name: str
    index: int
    az: str
    subnet: Net4
    private_ip: IPv4
    asn: int
    instance_type: str
    eip: bool
    listen_v4: Net4
    listen_v6: Net6 | None


@dataclass(frozen=True)
class Host:
    name: str
    index: int
    az: str
    subnet: Net4
    private_ip: IPv4
    asn: int
    instance_type: str
    block_v4: Net4
    block_v6: Net6 | None
    # A delegated IPv6 /80 on the host's ENI (overlay:hosts.ipv6Delegation) and its root
    # volume's size: what the program needs beyond addressing, so it reads the plan alone.
    ipv6_delegation: bool = False
    root_volume_gb: int = 20


@dataclass(frozen=True)
class Endpoint:
    """One side of a pairing: who, its outer (underlay) address and its inner addresses."""

    name: str
    asn: int
    outer: IPv4 | None  # None: a router's EIP, known only once AWS allocates it
    inner_v4: IPv4
    inner_v6: IPv6 | None


@dataclass(frozen=True)
class Pairing:
    """A GRE tunnel plus its BGP sessions. `a` is always the router."""

    kind: str  # "host" or "onprem"
    a: Endpoint
    b: Endpoint
    key: int
    mtu: int
    inner_net_v4: Net4
    inner_net_v6: Net6 | None
    # The address a's tunnel uses as its source; for on-prem pairings this is the router's
    # private address (the EIP is a 1:1 NAT in front of it).
    a_local: IPv4

    @property
    def id(self) -> str:
        return f"{self.a.name}~{self.b.name}"

    @property
    def ifname(self) -> str:
        # Linux caps interface names at 15 characters (IFNAMSIZ - 1); keys are unique.
        return f"gre-{self.key}"


@dataclass(frozen=True)
class OverlayPlan:
    project: str
    stack: str
    region: str
    environment: str
    vpc_cidr: Net4
    ipv6: bool
    azs: tuple[str, ...]
    subnets: tuple[Subnet, ...]
    routers: tuple[Router, ...]
    hosts: tuple[Host, ...]
    onprem: tuple[OnPremPeer, ...]
    pairings: tuple[Pairing, ...]
    pools_v4: tuple[Net4, ...]
    pools_v6: tuple[Net6, ...]
    tunnel_v4: Net4
    tunnel_v6: Net6 | None
    bgp: BgpConfig
    routing_mode: str
    route_protocol: int
    mtu: int
    onprem_mtu: int
    # docs/vpc-failover.md: "routeServer" (VPC Route Server re-points the tables) or "static".
    vpc_failover: str = "static"
    route_server_asn: int = 64512
    poll_interval: int = 15  # overlay:agent.pollInterval
    # The only addresses more than one host may announce (moves, anycast); each host's
    # block is its own (docs/plan.md "Who may announce what").
    shared_v4: tuple[Net4, ...] = ()
    shared_v6: tuple[Net6, ...] = ()

    def router(self, name: str) -> Router:
        return next(r for r in self.routers if r.name == name)

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    def pairings_of(self, name: str) -> tuple[Pairing, ...]:
        return tuple(p for p in self.pairings if name in (p.a.name, p.b.name))

    @property
    def instances(self) -> tuple[Router | Host, ...]:
        return self.routers + self.hosts

    def host_limit(self, version: int) -> int:
        """How many /32s (/128s) one host may announce: its block plus the shared ranges (max-prefix)."""
        if not self.hosts:
            return 1
        block = self.hosts[0].block_v4 if version == 4 else self.hosts[0].block_v6
        shared = self.shared_v4 if version == 4 else self.shared_v6
        if block is None:
            return 1
        return min(4294967295, block.num_addresses + sum(n.num_addresses for n in shared))


def to_data(value: Any) -> Any:
    """Plain JSON-able data (addresses as strings) from any plan object."""
    if hasattr(value, "__dataclass_fields__"):
        out = {f.name: to_data(getattr(value, f.name)) for f in fields(value)}
        if isinstance(value, Pairing):
            out["id"], out["ifname"] = value.id, value.ifname
        return out
    if isinstance(value, (tuple, list)):
        return [to_data(v) for v in value]
    if isinstance(value, dict):
        return {k: to_data(v) for k, v in value.items()}
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address, ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return str(value)
    return value
