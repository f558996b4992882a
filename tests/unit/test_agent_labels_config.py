"""Agent label parsing, the agent JSON config, and the block allocator: pure, no root."""

from __future__ import annotations

import ipaddress
import json

import pytest

from overlay_agent import config as config_mod
from overlay_agent import labels
from overlay_agent.allocator import BlockAllocator, Exhausted
from overlay_agent.wiring import decode_alias, encode_alias
from overlay_agent.errors import ConfigError
from tests.support.configs import agent_doc as doc


@pytest.mark.parametrize(
    "lab, opted",
    [
        ({}, False),
        ({"overlay": "auto"}, True),
        ({"overlay.ipv4": "1.2.3.4"}, True),
        ({"com.example.overlay": "x"}, False),
        ({"overlay": "off"}, False),
    ],
)
def test_opt_in(lab, opted):
    assert labels.opted_in(lab) is opted


def test_parse_explicit_and_flags():
    r = labels.parse(
        {
            "overlay.ipv4": " 100.64.1.1 ",
            "overlay.ipv6": "fd00:64::1",
            "overlay.anycast": "True",
            "overlay.health": "withdraw",
        }
    )
    assert r == labels.Request(ipaddress.IPv4Address("100.64.1.1"), ipaddress.IPv6Address("fd00:64::1"), True, True)


@pytest.mark.parametrize(
    "lab, text",
    [
        ({"overlay.ipv4": "100.64.1"}, "label overlay.ipv4='100.64.1' is not an IP address"),
        ({"overlay.ipv4": "fd00::1"}, "is not an IPv4 address"),
        ({"overlay.ipv6": "100.64.0.1"}, "is not an IPv6 address"),
        ({"overlay.ipv4": "224.0.0.1"}, "is not a unicast address"),
        ({"overlay.anycast": "maybe"}, "must be true or false"),
        ({"overlay.health": "ignore"}, "must be 'withdraw'"),
        ({"overlay.ipv5": "x"}, "unknown label overlay.ipv5"),
        ({"overlay": "yes", "overlay.ipv4": "100.64.0.1"}, "must be 'auto'"),
    ],
)
def test_bad_labels_have_one_line_reasons(lab, text):
    with pytest.raises(labels.LabelError) as info:
        labels.parse(lab)
    assert text in str(info.value) and "\n" not in str(info.value)
    assert info.value.reason == "bad_label"


def test_contract_example_parses(tmp_path):
    p = tmp_path / "agent.json"
    p.write_text(json.dumps(doc()))
    c = config_mod.load(p)
    assert c.block_ipv4 == ipaddress.ip_network("100.64.0.0/26") and c.settings.route_protocol == 149
    assert c.in_pools(ipaddress.ip_address("100.64.200.1")) and not c.in_pools(ipaddress.ip_address("10.0.0.1"))
    router = config_mod.parse(doc(role="router", blocks=None))
    assert router.block_ipv4 is None


@pytest.mark.parametrize(
    "over, text",
    [
        ({"schema": 2}, "schema: 2 is not 1"),
        ({"role": "switch"}, "role: 'switch' is not one of"),
        ({"asn": True}, "asn: True is not of type integer"),
        ({"blocks": {"ipv4": "10.0.0.0/26"}}, "blocks.ipv4: 10.0.0.0/26 lies outside pools.ipv4"),
        ({"blocks": {"ipv4": "100.64.0.1/26"}}, "blocks.ipv4: '100.64.0.1/26' is not an IPv4 network"),
        ({"settings": {"route_protocol": 186}}, "route_protocol: 186 is not a route protocol number no one else owns"),
        ({"settings": {"route_protocol": 4}}, "route_protocol: 4 is not a route protocol number no one else owns"),
        ({"role": "router"}, "is not of type null (a router has no block: null)"),
        ({"shared": {"ipv4": ["10.0.0.0/24"]}}, "shared: range 10.0.0.0/24 lies outside the pools"),
        (
            {"shared": {"ipv4": ["100.64.0.0/24"]}},
            "shared: range 100.64.0.0/24 overlaps this host's block 100.64.0.0/26",
        ),
        ({"shared": {"ipv6": ["fd00:64::/100"]}}, "overlaps this host's block fd00:64::/112"),
        ({"shared": ["100.64.9.0/24"]}, "shared: ['100.64.9.0/24'] is not of type object"),
    ],
)
def test_config_errors_name_the_field(over, text):
    with pytest.raises(ConfigError) as info:
        config_mod.parse(doc(**over))
    assert text in str(info.value) and "\n" not in str(info.value)


def test_what_a_host_may_announce():
    c = config_mod.parse(doc(shared={"ipv4": ["100.64.255.0/24"], "ipv6": ["fd00:64:0:ffff::/64"]}))
    may = [str(a) for a in ("100.64.0.5", "100.64.255.9", "fd00:64::5", "fd00:64:0:ffff::9")]
    may_not = ["100.64.1.5", "fd00:64::1:5"]  # other hosts' blocks
    assert all(c.may_announce(ipaddress.ip_address(a)) for a in may)
    assert not any(c.may_announce(ipaddress.ip_address(a)) for a in may_not)
    assert config_mod.parse(doc()).shared_ipv4 == ()  # an older document: only the block


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        config_mod.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(ConfigError, match="not JSON"):
        config_mod.load(tmp_path / "bad.json")


def test_allocator_lowest_free_skips_used_network_and_broadcast():
    a = BlockAllocator(
        ipaddress.ip_network("100.64.0.0/29"),
        used=[ipaddress.ip_address("100.64.0.1"), ipaddress.ip_address("100.64.0.3"), ipaddress.ip_address("10.0.0.1")],
    )
    got = [str(a.allocate()) for _ in range(4)]
    assert got == ["100.64.0.2", "100.64.0.4", "100.64.0.5", "100.64.0.6"]
    with pytest.raises(Exhausted, match="100.64.0.0/29 has no free address"):
        a.allocate()


def test_alias_round_trip_and_foreign_aliases():
    cid = "ab" * 32
    v4, v6 = ipaddress.ip_address("100.64.0.9"), ipaddress.ip_address("fd00:64::9")
    assert decode_alias(encode_alias(cid, v4, v6, 42)) == (cid, v4, v6, 42)
    assert decode_alias(encode_alias(cid, None, v6, 0)) == (cid, None, v6, 0)
    for other in (None, "", "uplink to router", "overlay-agent x 1.2.3 - 5"):
        assert decode_alias(other) is None
