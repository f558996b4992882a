"""The agent's raw netlink dump reader (overlay_agent.rtnl_dump) against dumps captured from a real
kernel (tests/unit/data/netlink/, made by tests/support/netlink_capture.py), checked against
what the capture set up and against pyroute2's own parser reading the same bytes."""

from __future__ import annotations

import errno
import ipaddress
import json
import struct
from pathlib import Path

import pytest
from pyroute2.netlink.rtnl.marshal import MarshalRtnl

from overlay_agent import rtnl_dump as nl

DATA = Path(__file__).resolve().parent / "data" / "netlink"
META = json.loads((DATA / "meta.json").read_text())
FIXED = {"links": nl._IFINFOMSG.size, "routes4": nl._RTMSG.size, "routes6": nl._RTMSG.size}


def datagrams(name: str) -> list[bytes]:
    raw, out, offset = (DATA / f"{name}.bin").read_bytes(), [], 0
    while offset < len(raw):
        (length,) = struct.unpack_from("<I", raw, offset)
        out.append(raw[offset + 4 : offset + 4 + length])
        offset += 4 + length
    return out


def messages(name: str, grams: list[bytes] | None = None):
    return nl._messages(grams if grams is not None else datagrams(name), META["seq"][name], FIXED[name])


def idx(name: str) -> int:
    return META["ifindex"][name]


def pyroute2_routes(name: str, plen: int) -> set[tuple]:
    """The same selection (main table, unicast, host routes) made with pyroute2's parser."""
    out = set()
    for gram in datagrams(name):
        for msg in MarshalRtnl().parse(gram):
            if msg["header"]["type"] != 24 or msg["dst_len"] != plen or msg["type"] != 1:
                continue
            if (msg.get_attr("RTA_TABLE") or msg["table"]) != nl.MAIN_TABLE:
                continue
            oif = msg.get_attr("RTA_OIF")
            oifs = (oif,) if oif is not None else tuple(h["oif"] for h in msg.get_attr("RTA_MULTIPATH"))
            out.add(
                (
                    ipaddress.ip_network(f"{msg.get_attr('RTA_DST')}/{plen}"),
                    oifs,
                    msg["proto"],
                    msg.get_attr("RTA_PRIORITY") or 0,
                )
            )
    return out


def test_each_dump_spans_several_datagrams():
    for name in ("routes4", "routes6"):
        assert len(datagrams(name)) >= 2, name


def test_links_by_prefix_with_alias():
    links = nl.links_from(messages("links"), "ovc")
    assert links == [
        nl.LinkInfo("ovcaaaaaaaaaaa1", idx("ovcaaaaaaaaaaa1"), META["alias"]),
        nl.LinkInfo("ovcaaaaaaaaaaa2", idx("ovcaaaaaaaaaaa2"), None),
    ]
    every = {link.name: link.index for link in nl.links_from(messages("links"), "")}
    assert every == META["ifindex"]


@pytest.mark.parametrize("name, plen", [("routes4", 32), ("routes6", 128)])
def test_host_routes_match_pyroute2(name, plen):
    ours = nl.host_routes_from(messages(name), plen)
    assert len(ours) == len(set(ours))
    assert {(r.dst, r.oifs, r.proto, r.metric) for r in ours} == pyroute2_routes(name, plen)


def test_ipv4_cases():
    routes = {str(r.dst): r for r in nl.host_routes_from(messages("routes4"), 32)}
    one, two, other = idx("ovcaaaaaaaaaaa1"), idx("ovcaaaaaaaaaaa2"), idx("other0")
    assert routes["100.64.0.1/32"] == nl.RouteInfo(ipaddress.ip_network("100.64.0.1/32"), (one,), 149, 7)
    assert routes["100.64.0.2/32"].oifs == (one, two) and routes["100.64.0.2/32"].proto == 149
    assert routes["100.64.0.4/32"].oifs == (other,) and routes["100.64.0.4/32"].proto == 3  # boot: kept
    # a /24, another table's /32, a blackhole, the local table's /32 are not host routes of main
    for skipped in ("100.64.0.0/24", "100.64.9.9/32", "100.64.0.3/32", "10.9.0.1/32"):
        assert skipped not in routes
    many = [r for r in routes.values() if str(r.dst).startswith("100.65.")]
    assert len(many) == META["many"] and all(r.oifs == (two,) for r in many)


def test_ipv6_cases():
    routes = {str(r.dst): r for r in nl.host_routes_from(messages("routes6"), 128)}
    one, two = idx("ovcaaaaaaaaaaa1"), idx("ovcaaaaaaaaaaa2")
    # IPv6 reports metric 1024 when none was given
    assert routes["fd00:64::1/128"] == nl.RouteInfo(ipaddress.ip_network("fd00:64::1/128"), (one,), 149, 1024)
    assert routes["fd00:64::2/128"].oifs == (one, two)
    assert "fd00:64::9/128" not in routes and "fd00:64::/64" not in routes
    many = sorted((r for r in routes.values() if str(r.dst).startswith("fd00:65:")), key=lambda r: r.dst)
    assert [r.metric for r in many] == list(range(1, META["many"] + 1))


def test_other_requests_answers_are_ignored_and_done_ends_the_dump():
    grams = datagrams("routes4")
    seq = META["seq"]["routes4"]
    # the same dump under another sequence number reads as nothing (another request's answers)
    assert list(nl._messages(grams, seq + 1, FIXED["routes4"])) == []
    # datagrams after NLMSG_DONE are never read
    after = list(nl._messages(grams + [b"\xff" * 64], seq, FIXED["routes4"]))
    assert len(after) == len(list(messages("routes4")))


def test_truncated_and_error_answers():
    grams = datagrams("routes4")
    # a header claiming fewer bytes than a header ends the read instead of looping
    bad = struct.pack("=IHHII", 8, 24, 0, META["seq"]["routes4"], 0)
    assert list(nl._messages([bad], META["seq"]["routes4"], FIXED["routes4"])) == []
    # the kernel refusing the request (NLMSG_ERROR with -EINVAL) is an OSError with that errno
    err = struct.pack("=IHHII", 36, nl.NLMSG_ERROR, 0, 7, 0) + struct.pack("=i", -errno.EINVAL) + bytes(16)
    with pytest.raises(OSError) as info:
        list(nl._messages([err], 7, FIXED["routes4"]))
    assert info.value.errno == errno.EINVAL
    # an attribute with a length below its header stops the attribute walk of that message only
    first = grams[0]
    body = first[nl._NLMSGHDR.size : struct.unpack_from("=I", first)[0]]
    cut = body[: nl._RTMSG.size] + struct.pack("=HH", 2, nl.RTA_DST)
    assert nl._attrs(cut, nl._RTMSG.size, len(cut)) == {}
