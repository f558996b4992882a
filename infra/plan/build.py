"""StackConfig -> OverlayPlan: deterministic, stable allocation by index; no I/O, no pulumi."""

from __future__ import annotations

import ipaddress
from typing import Sequence, TypeVar

from infra.config import PROJECT, StackConfig, fixed_band_end
from infra.plan.model import IPv6, Endpoint, Host, Net4, Net6, OverlayPlan, Pairing, Router, Subnet

# Instances take fixed addresses from this offset in their subnet: AWS reserves the first
# four addresses (network, VPC router, DNS, future use) and the last; 5-9 are below the
# band: the NAT gateway takes 5 (pinned), 6-9 stay free for operators.
FIXED_ADDRESS_OFFSET = 10
NAT_OFFSET = 5


def fixed_band(subnet: ipaddress.IPv4Network) -> tuple[ipaddress.IPv4Network, ...]:
    """The subnet's fixed-address band as CIDRs: offset 10 up to the middle of the subnet
    (infra.config.fixed_band_end: small subnets keep no upper half).

    The lower half is the plan's (instances take offset 10 + slot); the upper half is left
    to AWS's own assignments (interface endpoints, load balancers), which an explicit
    reservation of the band keeps out of it (EC2 User Guide, "Subnet CIDR reservations":
    AWS assigns no address from an `explicit` reservation automatically).
    """
    first = subnet.network_address + FIXED_ADDRESS_OFFSET
    last = subnet.network_address + fixed_band_end(subnet.num_addresses) - 1
    return tuple(ipaddress.summarize_address_range(first, last))


# One address family at a time: an IPv4 network's subnets are IPv4, an IPv6 one's IPv6.
_Net = TypeVar("_Net", ipaddress.IPv4Network, ipaddress.IPv6Network)


def nth_subnet(net: _Net, prefixlen: int, n: int) -> _Net:
    """The n-th subnet of `net` at `prefixlen`, by arithmetic (no enumeration)."""
    size = 1 << (net.max_prefixlen - prefixlen)
    base = int(net.network_address) + n * size
    # The network's own class, not ip_network(): an integer below 2**32 would come back IPv4.
    return type(net)((base, prefixlen))


def nth_block(pools: Sequence[_Net], prefixlen: int, n: int) -> _Net:
    """The n-th block of `prefixlen` across the pools, in pool order."""
    for pool in pools:
        count = 1 << (prefixlen - pool.prefixlen)
        if n < count:
            return nth_subnet(pool, prefixlen, n)
        n -= count
    raise IndexError("pools exhausted")  # config validation rules this out


def _subnets(cfg: StackConfig) -> tuple[Subnet, ...]:
    # The VPC is cut in 16 equal subnets: AZ i takes subnet i (private, docker hosts) and
    # subnet 8 + i (public, routers). Fixed by AZ position, so adding an AZ at the end
    # moves nothing.
    prefix = cfg.vpc_cidr.prefixlen + 4
    out = []
    for i, az in enumerate(cfg.azs):
        private = nth_subnet(cfg.vpc_cidr, prefix, i)
        public = nth_subnet(cfg.vpc_cidr, prefix, 8 + i)
        out.append(Subnet(az, i, "private", private, i if cfg.ipv6 else None, fixed_band(private)))
        out.append(
            Subnet(
                az,
                i,
                "public",
                public,
                8 + i if cfg.ipv6 else None,
                fixed_band(public),
                public.network_address + NAT_OFFSET,
            )
        )
    return tuple(out)


def _fixed_ip(subnet: ipaddress.IPv4Network, slot: int) -> ipaddress.IPv4Address:
    return subnet.network_address + FIXED_ADDRESS_OFFSET + slot


def build_plan(cfg: StackConfig) -> OverlayPlan:
    """Allocate everything by index: router j, host k and peer p own fixed slots."""
    subnets = _subnets(cfg)
    by_az = {(s.az_index, s.kind): s.cidr for s in subnets}
    n_az = len(cfg.azs)
    slices = 2 * cfg.max_routers
    slice_prefix4 = cfg.tunnel_v4.prefixlen + (slices.bit_length() - 1)
    slice_prefix6 = cfg.tunnel_v6.prefixlen + (slices.bit_length() - 1) if cfg.tunnel_v6 else None
    # Pairings per slice: the GRE key is the pairing's global /31 index + 1, unique in
    # the stack and stable (key 0 means "no key" to the kernel).
    per_slice = 1 << (31 - slice_prefix4)

    routers = []
    for j in range(cfg.router_count):
        az = j % n_az
        subnet = by_az[(az, "public")]
        routers.append(
            Router(
                name=f"router-{j + 1}",
                index=j,
                az=cfg.azs[az],
                subnet=subnet,
                private_ip=_fixed_ip(subnet, j // n_az),
                asn=cfg.router_asn,
                # Every router gets an EIP: on-prem peers need a stable public address, and
                # without one a router in a public subnet has no IPv4 egress at all (SSM,
                # packages at boot), since a pre-made ENI cannot take an auto-assigned one.
                instance_type=cfg.router_instance_type,
                eip=True,
                listen_v4=nth_subnet(cfg.tunnel_v4, slice_prefix4, j),
                listen_v6=nth_subnet(cfg.tunnel_v6, slice_prefix6, j)
                if cfg.tunnel_v6 and slice_prefix6 is not None
                else None,
            )
        )

    hosts = []
    for k in range(cfg.host_count):
        az = k % n_az
        subnet = by_az[(az, "private")]
        hosts.append(
            Host(
                name=f"host-{k + 1}",
                index=k,
                az=cfg.azs[az],
                subnet=subnet,
                private_ip=_fixed_ip(subnet, k // n_az),
                asn=cfg.host_asn + k if cfg.host_asn_mode == "per-host" else cfg.host_asn,
                instance_type=cfg.host_instance_type,
                block_v4=nth_block(cfg.pools_v4, cfg.host_block_prefix, k),
                block_v6=nth_block(cfg.pools_v6, cfg.host_ipv6_block_prefix, k) if cfg.ipv6 else None,
                ipv6_delegation=cfg.host_ipv6_delegation,
                root_volume_gb=cfg.host_root_volume_gb,
            )
        )

    def inner(slice_index: int, slot: int) -> tuple[Net4, Net6 | None, int]:
        net4 = nth_subnet(cfg.tunnel_v4, 31, slice_index * per_slice + slot)
        net6 = None
        if cfg.tunnel_v6 is not None and slice_prefix6 is not None:
            per_slice6 = 1 << (127 - slice_prefix6)
            net6 = nth_subnet(cfg.tunnel_v6, 127, slice_index * per_slice6 + slot)
        return net4, net6, slice_index * per_slice + slot + 1

    def hi6(net6: Net6 | None) -> IPv6 | None:
        return net6[1] if net6 is not None else None

    def lo6(net6: Net6 | None) -> IPv6 | None:
        return net6[0] if net6 is not None else None

    pairings = []
    for r in routers:
        for h in hosts:
            net4, net6, key = inner(r.index, h.index)
            pairings.append(
                Pairing(
                    kind="host",
                    a=Endpoint(r.name, r.asn, r.private_ip, net4[0], lo6(net6)),
                    b=Endpoint(h.name, h.asn, h.private_ip, net4[1], hi6(net6)),
                    key=key,
                    mtu=cfg.mtu,
                    inner_net_v4=net4,
                    inner_net_v6=net6,
                    a_local=r.private_ip,
                )
            )
        for p, peer in enumerate(cfg.onprem):
            net4, net6, key = inner(cfg.max_routers + r.index, p)
            pairings.append(
                Pairing(
                    kind="onprem",
                    a=Endpoint(r.name, r.asn, None, net4[0], lo6(net6)),
                    b=Endpoint(peer.name, peer.asn, peer.address, net4[1], hi6(net6)),
                    key=key,
                    mtu=cfg.onprem_mtu,
                    inner_net_v4=net4,
                    inner_net_v6=net6,
                    a_local=r.private_ip,
                )
            )

    return OverlayPlan(
        project=PROJECT,
        stack=cfg.stack,
        region=cfg.region,
        environment=cfg.environment,
        vpc_cidr=cfg.vpc_cidr,
        ipv6=cfg.ipv6,
        azs=cfg.azs,
        subnets=subnets,
        routers=tuple(routers),
        hosts=tuple(hosts),
        onprem=cfg.onprem,
        pairings=tuple(pairings),
        pools_v4=cfg.pools_v4,
        pools_v6=cfg.pools_v6,
        tunnel_v4=cfg.tunnel_v4,
        tunnel_v6=cfg.tunnel_v6,
        bgp=cfg.bgp,
        routing_mode=cfg.routing_mode,
        route_protocol=cfg.route_protocol,
        mtu=cfg.mtu,
        onprem_mtu=cfg.onprem_mtu,
        vpc_failover=cfg.vpc_failover,
        route_server_asn=cfg.route_server_asn,
        poll_interval=cfg.poll_interval,
        shared_v4=cfg.shared_v4,
        shared_v6=cfg.shared_v6,
    )
