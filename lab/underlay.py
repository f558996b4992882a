"""Builds and removes the lab's underlay with pyroute2: namespaces, subnet bridges, IGW with 1:1 NAT, internet, on-prem LANs."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import subprocess
import time
from typing import Iterator

from pyroute2 import NetNS, netns as pr_netns
from pyroute2.netlink.exceptions import NetlinkError

from infra.plan import OverlayPlan
from lab.topology import IGW_INET_SIDE, IGW_VPC_SIDE, INET_PEER_GW, EIP_POOL, LabTopology, ns_prefix


IFA_F_NODAD = 0x02  # include/uapi/linux/if_addr.h


class LabError(RuntimeError):
    """A lab step failed; the message names the step and the object."""


@contextlib.contextmanager
def ns(name: str) -> Iterator[NetNS]:
    handle = NetNS(name)
    try:
        yield handle
    finally:
        handle.close()


def sh(ns_name: str | None, *args: str, input: str | None = None, check: bool = True) -> str:
    cmd = (["ip", "netns", "exec", ns_name] if ns_name else []) + list(args)
    proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()[:300]}")
    return proc.stdout


FORWARDING = {"net.ipv4.ip_forward": "1", "net.ipv6.conf.all.forwarding": "1"}
# Tunnels and the VPC route tables make paths asymmetric (in on one interface, out on
# another); strict reverse-path filtering would drop them, as on a real EC2 router.
RP_LOOSE = {"net.ipv4.conf.all.rp_filter": "2", "net.ipv4.conf.default.rp_filter": "2"}
# ECMP by flow (addresses and ports), as the instances' cloud-config sets it: Linux hashes
# IPv4 on addresses only by default (policy 0), sending every flow between two hosts one way.
ECMP_L4 = {"net.ipv4.fib_multipath_hash_policy": "1", "net.ipv6.fib_multipath_hash_policy": "1"}


def sysctl(ns_name: str, values: dict[str, str]) -> None:
    # /proc/sys/net is per network namespace; write it from inside the namespace.
    sh(ns_name, "sysctl", "-q", "-w", *(f"{k}={v}" for k, v in values.items()))


def _create_ns(name: str) -> None:
    pr_netns.create(name)
    with ns(name) as n:
        n.link("set", index=n.link_lookup(ifname="lo")[0], state="up")
    # Every lab address is unique by plan: duplicate address detection only holds new
    # IPv6 addresses (link-locals included) tentative for a second after each link appears.
    sysctl(name, {"net.ipv6.conf.all.accept_dad": "0", "net.ipv6.conf.default.accept_dad": "0"})


def _veth(ns_a: str, if_a: str, ns_b: str, if_b: str, mtu: int = 1500) -> None:
    with ns(ns_a) as a:
        try:
            a.link("add", ifname=if_a, kind="veth", mtu=mtu, peer={"ifname": if_b, "net_ns_fd": ns_b, "mtu": mtu})
        except NetlinkError as exc:
            raise LabError(f"veth {ns_a}/{if_a} <-> {ns_b}/{if_b}: {exc}") from exc
        a.link("set", index=a.link_lookup(ifname=if_a)[0], state="up")
    with ns(ns_b) as b:
        b.link("set", index=b.link_lookup(ifname=if_b)[0], state="up")


def _addr(ns_name: str, ifname: str, cidr: str) -> None:
    iface = ipaddress.ip_interface(cidr)
    with ns(ns_name) as n:
        kw = {}
        if iface.version == 6:
            kw["flags"] = IFA_F_NODAD  # addresses are unique by plan; DAD only delays them a second
        n.addr(
            "add", index=n.link_lookup(ifname=ifname)[0], address=str(iface.ip), prefixlen=iface.network.prefixlen, **kw
        )


def _route(ns_name: str, **kw) -> None:
    with ns(ns_name) as n:
        if "oif" in kw and isinstance(kw["oif"], str):
            kw["oif"] = n.link_lookup(ifname=kw["oif"])[0]
        if "gateway" not in kw:
            kw.setdefault("scope", 253)  # RT_SCOPE_LINK: on-link, usable as a next hop
        n.route("replace", **kw)


def build_underlay(plan: OverlayPlan, topo: LabTopology, underlay_mtu: int) -> None:
    """Create every namespace and link of the topology; raises LabError naming the step."""
    for name in topo.namespaces:
        _create_ns(name)

    vpc = topo.vpc_ns
    sysctl(vpc, {**FORWARDING, **RP_LOOSE})
    with ns(vpc) as n:
        for seg in topo.segments:
            n.link("add", ifname=seg.bridge, kind="bridge", mtu=underlay_mtu)
            idx = n.link_lookup(ifname=seg.bridge)[0]
            n.addr("add", index=idx, address=str(seg.gateway), prefixlen=seg.cidr.prefixlen)
            if seg.cidr_v6 is not None:
                n.addr("add", index=idx, address=str(seg.gateway_v6), prefixlen=64, flags=IFA_F_NODAD)
            n.link("set", index=idx, state="up")

    for inst in topo.instances:
        wire_instance(topo, inst, underlay_mtu)

    # The VPC's route tables: per AZ, the container pools go to that AZ's router ENI.
    # Policy rules by ingress bridge stand in for "this subnet's route table".
    # With vpc.failover routeServer the tables hold no pool route: the lab's route server
    # (lab/route_server.py) installs its one best path per pool in the main table, where
    # every AZ table's lookup falls through, as AWS writes one FIB into every table.
    with ns(vpc) as n:
        for table, router_name in topo.az_tables:
            if plan.vpc_failover == "routeServer":
                break
            router = topo.instance(router_name)
            for pool in plan.pools_v4:
                n.route("replace", dst=str(pool), gateway=str(router.address), table=table)
            for pool in plan.pools_v6 if router.address_v6 else ():
                n.route("replace", dst=str(pool), gateway=str(router.address_v6), table=table)
        if plan.vpc_failover == "routeServer":
            from lab.route_server import endpoints

            for az, address in endpoints(plan, topo).items():
                seg = next(s for s in topo.segments if s.kind == "public" and s.az_index == plan.azs.index(az))
                n.addr(
                    "add", index=n.link_lookup(ifname=seg.bridge)[0], address=str(address), prefixlen=seg.cidr.prefixlen
                )
        for seg in topo.segments:
            table = topo.az_tables[seg.az_index][0]
            for family in (2, 10) if seg.cidr_v6 is not None else (2,):  # AF_INET, AF_INET6
                n.rule(
                    "add",
                    table=table,
                    priority=1000 + seg.az_index * 10 + (seg.kind == "public"),
                    iifname=seg.bridge,
                    family=family,
                )
        if plan.routing_mode == "static":
            for h in plan.hosts:
                n.route("replace", dst=str(h.block_v4), gateway=str(h.private_ip))

    # Internet gateway: a transfer link to the "internet" namespace and 1:1 NAT for EIPs.
    _veth(vpc, "igw", topo.inet_ns, "vpc")
    _addr(vpc, "igw", f"{IGW_VPC_SIDE}/32")
    _addr(topo.inet_ns, "vpc", f"{IGW_INET_SIDE}/32")
    _route(vpc, dst=f"{IGW_INET_SIDE}/32", oif="igw")
    _route(vpc, dst="0.0.0.0/0", gateway=str(IGW_INET_SIDE))
    _route(topo.inet_ns, dst=f"{IGW_VPC_SIDE}/32", oif="vpc")
    _route(topo.inet_ns, dst=str(EIP_POOL), gateway=str(IGW_VPC_SIDE))
    sysctl(topo.inet_ns, {**FORWARDING, **RP_LOOSE})
    apply_nat(topo)

    for site in topo.sites:
        _veth(topo.inet_ns, site.inet_port, site.ns, "wan")
        _addr(topo.inet_ns, site.inet_port, f"{INET_PEER_GW}/32")
        _route(topo.inet_ns, dst=f"{site.public}/32", oif=site.inet_port)
        _addr(site.ns, "wan", f"{site.public}/32")
        _route(site.ns, dst=f"{INET_PEER_GW}/32", oif="wan")
        _route(site.ns, dst="0.0.0.0/0", gateway=str(INET_PEER_GW))
        _veth(site.ns, "lan", site.client_ns, "eth0")
        _addr(site.ns, "lan", f"{site.router_lan_v4}/{site.lan_v4.prefixlen}")
        _addr(site.client_ns, "eth0", f"{site.client_v4}/{site.lan_v4.prefixlen}")
        _route(site.client_ns, dst="0.0.0.0/0", gateway=str(site.router_lan_v4))
        if plan.ipv6:
            _addr(site.ns, "lan", f"{site.router_lan_v6}/{site.lan_v6.prefixlen}")
            _addr(site.client_ns, "eth0", f"{site.client_v6}/{site.lan_v6.prefixlen}")
            _route(site.client_ns, dst="::/0", gateway=str(site.router_lan_v6))
        sysctl(site.ns, {**FORWARDING, **RP_LOOSE, **ECMP_L4})


def wire_instance(topo: LabTopology, inst, underlay_mtu: int, create: bool = False) -> None:
    """One instance on its subnet: a veth into the subnet's bridge, its fixed address, the VPC router as gateway."""
    if create:
        _create_ns(inst.ns)
    _veth(inst.ns, "eth0", topo.vpc_ns, inst.vpc_port, underlay_mtu)
    with ns(topo.vpc_ns) as n:
        n.link("set", index=n.link_lookup(ifname=inst.vpc_port)[0], master=n.link_lookup(ifname=inst.segment.bridge)[0])
    _addr(inst.ns, "eth0", f"{inst.address}/{inst.segment.cidr.prefixlen}")
    _route(inst.ns, dst="0.0.0.0/0", gateway=str(inst.segment.gateway))
    if inst.address_v6 is not None:
        _addr(inst.ns, "eth0", f"{inst.address_v6}/64")
        _route(inst.ns, dst="::/0", gateway=str(inst.segment.gateway_v6))
    if inst.role != "native":
        # EC2 instances here have source/dest check off and forward.
        sysctl(inst.ns, {**FORWARDING, **RP_LOOSE, **ECMP_L4})


def apply_nat(topo: LabTopology) -> None:
    # Replace our table whole (add-then-delete makes the delete safe when it is absent).
    sh(topo.vpc_ns, "nft", "-f", "-", input="add table ip lab_igw\ndelete table ip lab_igw\n" + nat_ruleset(topo))


def nat_ruleset(topo: LabTopology) -> str:
    """nftables for the IGW: 1:1 NAT per EIP, and nothing else private leaves to the internet."""
    routers = [i for i in topo.instances if i.eip is not None]
    lines = ["table ip lab_igw {", "  chain prerouting_eip {", "    type nat hook prerouting priority dstnat;"]
    lines += [f'    iifname "igw" ip daddr {r.eip} dnat to {r.address}' for r in routers]
    lines += ["  }", "  chain postrouting_eip {", "    type nat hook postrouting priority srcnat;"]
    lines += [f'    oifname "igw" ip saddr {r.address} snat to {r.eip}' for r in routers]
    # Each AZ's NAT gateway (collapsed into the IGW here): its private subnet leaves with
    # the AZ's NAT EIP (203.0.113.200 + AZ index); a source outside the subnets (a
    # container's own address) has no NAT mapping and is dropped below.
    private = [s for s in topo.segments if s.kind == "private"]
    lines += [
        f'    oifname "igw" ip saddr {s.cidr} snat to {EIP_POOL.network_address + 200 + s.az_index}' for s in private
    ]
    lines += ["  }", "  chain forward_igw {", "    type filter hook forward priority filter; policy accept;"]
    # Like an IGW: only addresses with an EIP (or behind a NAT gateway) reach the internet.
    allowed = ", ".join([str(r.address) for r in routers] + [str(s.cidr) for s in private])
    if allowed:
        lines.append(f'    oifname "igw" ip saddr != {{ {allowed} }} drop')
    else:
        lines.append('    oifname "igw" drop')
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def lab_namespaces(stack: str) -> list[str]:
    prefix = ns_prefix(stack)
    return sorted(n for n in pr_netns.listnetns() if n.startswith(prefix))


def kill_namespace_processes(name: str, grace: float = 3.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = [int(p) for p in sh(None, "ip", "netns", "pids", name, check=False).split()]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and sh(None, "ip", "netns", "pids", name, check=False).strip():
            time.sleep(0.05)


def remove_namespaces(stack: str) -> list[str]:
    """Kill what runs in the lab's namespaces and delete them; never raises."""
    names = lab_namespaces(stack)
    for name in names:
        kill_namespace_processes(name)
    for name in names:
        with contextlib.suppress(Exception):
            pr_netns.remove(name)
    return names
