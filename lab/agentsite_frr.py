"""Minimal FRR configs for the agent site (lab/agentsite.py): a docker host redistributing its container routes to one router.

Kept in one place so the tests can switch to the rendered userdata/ templates later.
Two sessions over one veth: IPv4 unicast over the /31, IPv6 unicast over the /127.
"""

from __future__ import annotations

HOST_ASN = 65101
ROUTER_ASN = 65000
HOST_V4, ROUTER_V4 = "169.254.64.9", "169.254.64.8"
HOST_V6, ROUTER_V6 = "fd00:7e::9", "fd00:7e::8"


def host_config(pools4: list[str], pools6: list[str]) -> str:
    """The host announces kernel routes (ours: protocol 149) that are /32 or /128 inside the pools."""
    lines = ["frr defaults datacenter", "hostname host"]
    for i, p in enumerate(pools4):
        lines.append(f"ip prefix-list OVERLAY4 seq {5 + i} permit {p} ge 32")
    for i, p in enumerate(pools6):
        lines.append(f"ipv6 prefix-list OVERLAY6 seq {5 + i} permit {p} ge 128")
    lines += [
        "route-map OVERLAY-REDIST permit 10",
        " match ip address prefix-list OVERLAY4",
        "route-map OVERLAY-REDIST permit 20",
        " match ipv6 address prefix-list OVERLAY6",
        "route-map OVERLAY-REDIST deny 100",
        f"router bgp {HOST_ASN}",
        f" bgp router-id {HOST_V4}",
        " no bgp ebgp-requires-policy",
        f" neighbor {ROUTER_V4} remote-as {ROUTER_ASN}",
        f" neighbor {ROUTER_V6} remote-as {ROUTER_ASN}",
        " address-family ipv4 unicast",
        "  redistribute kernel route-map OVERLAY-REDIST",
        f"  no neighbor {ROUTER_V6} activate",
        " exit-address-family",
        " address-family ipv6 unicast",
        "  redistribute kernel route-map OVERLAY-REDIST",
        f"  neighbor {ROUTER_V6} activate",
        " exit-address-family",
    ]
    return "\n".join(lines) + "\n"


def router_config() -> str:
    return (
        "\n".join(
            [
                "frr defaults datacenter",
                "hostname router",
                f"router bgp {ROUTER_ASN}",
                f" bgp router-id {ROUTER_V4}",
                " no bgp ebgp-requires-policy",
                f" neighbor {HOST_V4} remote-as {HOST_ASN}",
                f" neighbor {HOST_V6} remote-as {HOST_ASN}",
                " address-family ipv4 unicast",
                f"  no neighbor {HOST_V6} activate",
                " exit-address-family",
                " address-family ipv6 unicast",
                f"  neighbor {HOST_V6} activate",
                " exit-address-family",
            ]
        )
        + "\n"
    )
