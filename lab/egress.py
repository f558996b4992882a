"""The lab's egress path (docs/egress.md): an internet server behind the IGW, an S3 gateway endpoint stand-in, host SNAT.

- `ovl-<stack>-www`: a server on the lab's "internet" (192.0.2.80, 2001:db8:80::80),
  reachable only through the IGW: IPv4 from private subnets through the NAT gateway
  stand-in (the IGW's table SNATs each private subnet to its AZ's NAT EIP), IPv6 through the
  egress-only gateway stand-in (outbound and its replies only).
- `ovl-<stack>-s3`: a stand-in for a gateway endpoint (S3): a prefix routed by the VPC
  namespace straight to it, not through the IGW, as a gateway endpoint's prefix list is
  routed in the route tables.
- Each docker host loads the egress ruleset the program renders for its user data
  (infra.render.render_egress_nft), so the lab runs the same rules as EC2.

Both servers answer a GET with "<name> <client address>", so a test sees which address
a flow arrived from.
"""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

from infra.plan import OverlayPlan
from infra.render import render_egress_nft
from lab import daemon
from lab.topology import EIP_POOL, INET_PEER_GW, LAB_VPC_V6, LabTopology, ns_prefix
from lab.underlay import _addr, _create_ns, _route, _veth, sh, sysctl, FORWARDING, RP_LOOSE

WWW_V4 = ipaddress.ip_address("192.0.2.80")
WWW_V6 = ipaddress.ip_address("2001:db8:80::80")
WWW_V6_GW = ipaddress.ip_address("2001:db8:80::1")  # the internet's side of the server's link
# The IGW link's IPv6 transfer addresses (documentation prefix, as the IPv4 ones are).
IGW_V6_VPC = ipaddress.ip_address("2001:db8:ff::1")
IGW_V6_INET = ipaddress.ip_address("2001:db8:ff::2")
# The gateway endpoint's "prefix list" and the stand-in's address in it.
S3_PREFIX = ipaddress.ip_network("192.0.2.240/28")
S3_ADDR = ipaddress.ip_address("192.0.2.241")
S3_VPC_SIDE = ipaddress.ip_address("192.0.2.225")
# NAT gateway EIPs: one per AZ, after the routers' EIPs in the lab's EIP pool.
NAT_EIP_BASE = 200
PORT = 80

SERVER = """
import http.server, socket, sys
name = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        client = self.client_address[0].removeprefix("::ffff:")
        body = f"{name} {client}\\n".encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
class S(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()
S(("::", 80), H).serve_forever()
"""


def www_ns(stack: str) -> str:
    return ns_prefix(stack) + "www"


def s3_ns(stack: str) -> str:
    return ns_prefix(stack) + "s3"


def nat_eip(az_index: int) -> ipaddress.IPv4Address:
    return EIP_POOL.network_address + NAT_EIP_BASE + az_index


def build(plan: OverlayPlan, topo: LabTopology, state: Path) -> str:
    www, s3 = www_ns(plan.stack), s3_ns(plan.stack)
    _create_ns(www)
    _create_ns(s3)
    # The internet server, on the internet side of the IGW.
    # Point-to-point links: the far side's address as the gateway (an on-link default
    # without one would ARP/ND for every destination, and nothing answers for them).
    _veth(topo.inet_ns, "www", www, "eth0")
    _addr(topo.inet_ns, "www", f"{INET_PEER_GW}/32")
    _addr(www, "eth0", f"{WWW_V4}/32")
    _route(www, dst=f"{INET_PEER_GW}/32", oif="eth0")
    _route(www, dst="0.0.0.0/0", gateway=str(INET_PEER_GW))
    _route(topo.inet_ns, dst=f"{WWW_V4}/32", oif="www")
    if plan.ipv6:
        _addr(topo.inet_ns, "www", f"{WWW_V6_GW}/64")
        _addr(www, "eth0", f"{WWW_V6}/64")
        _route(www, dst="::/0", gateway=str(WWW_V6_GW))
        # The IGW carries IPv6 too (the VPC's /56 is globally routed on AWS).
        _addr(topo.vpc_ns, "igw", f"{IGW_V6_VPC}/64")
        _addr(topo.inet_ns, "vpc", f"{IGW_V6_INET}/64")
        _route(topo.vpc_ns, dst="::/0", gateway=str(IGW_V6_INET))
        _route(topo.inet_ns, dst=str(LAB_VPC_V6), gateway=str(IGW_V6_VPC))
        sysctl(topo.inet_ns, {"net.ipv6.conf.all.forwarding": "1"})
    # The gateway endpoint stand-in: its prefix routed inside the VPC, never via the IGW.
    _veth(topo.vpc_ns, "s3", s3, "eth0")
    _addr(topo.vpc_ns, "s3", f"{S3_VPC_SIDE}/32")
    _route(topo.vpc_ns, dst=str(S3_PREFIX), oif="s3")
    _addr(s3, "eth0", f"{S3_ADDR}/32")
    _route(s3, dst=f"{S3_VPC_SIDE}/32", oif="eth0")
    _route(s3, dst="0.0.0.0/0", gateway=str(S3_VPC_SIDE))
    sysctl(topo.vpc_ns, {**FORWARDING, **RP_LOOSE})
    for ns_name, label in ((www, "internet"), (s3, "s3-endpoint")):
        daemon.start(
            ns_name,
            [sys.executable, "-c", SERVER, label],
            log=state / "logs" / f"{label}.log",
            pidfile=state / f"{label}.pid",
        )
        daemon.wait_tcp(ns_name, "127.0.0.1", PORT, 30, f"{label} server")
    apply_host_rules(plan, topo)
    return f"{www} ({WWW_V4}{', ' + str(WWW_V6) if plan.ipv6 else ''}), {s3} ({S3_PREFIX})"


def apply_host_rules(plan: OverlayPlan, topo: LabTopology) -> None:
    """Every docker host loads the program's egress ruleset (as its user data does on EC2)."""
    rules = render_egress_nft(plan)
    for inst in topo.instances:
        if inst.role == "host":
            sh(inst.ns, "nft", "-f", "-", input=rules)


def eigw_ruleset(topo: LabTopology) -> str:
    """IPv6 through the IGW: private subnets out, and only replies back in (an egress-only gateway)."""
    return (
        "\n".join(
            [
                "table ip6 lab_eigw {",
                "  chain forward {",
                "    type filter hook forward priority filter; policy accept;",
                '    iifname "igw" ct state established,related accept',
                '    iifname "igw" drop',
                "  }",
                "}",
            ]
        )
        + "\n"
    )


def apply_eigw(topo: LabTopology) -> None:
    sh(topo.vpc_ns, "nft", "-f", "-", input="add table ip6 lab_eigw\ndelete table ip6 lab_eigw\n" + eigw_ruleset(topo))
