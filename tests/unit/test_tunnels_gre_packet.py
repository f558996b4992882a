"""GRE framing (RFC 2784/2890) and the userspace daemon's control requests, without root."""

from __future__ import annotations

import json
import struct

from hypothesis import given, strategies as st

from overlay_agent.gre import packet
from overlay_agent.gre.userspace import Daemon


@given(key=st.one_of(st.none(), st.integers(0, 2**32 - 1)), v6=st.booleans(), payload=st.binary(max_size=64))
def test_header_round_trip(key, v6, payload):
    proto = packet.PROTO_IPV6 if v6 else packet.PROTO_IPV4
    frame = packet.header(proto, key) + payload
    assert packet.decode(frame) == (key, proto, 8 if key is not None else 4)
    assert frame[packet.decode(frame)[2] :] == payload


def test_key_on_the_wire_is_rfc2890():
    assert packet.header(packet.PROTO_IPV4, 5) == bytes.fromhex("2000 0800 00000005")
    assert packet.header(packet.PROTO_IPV6, None) == bytes.fromhex("0000 86dd")


def test_checksum_and_sequence_fields_are_skipped():
    flags = packet.FLAG_CSUM | packet.FLAG_KEY | packet.FLAG_SEQ
    frame = (
        struct.pack("!HH", flags, 0x0800) + b"\xaa\xbb\x00\x00" + struct.pack("!I", 77) + b"\x00\x00\x00\x09" + b"IP"
    )
    assert packet.decode(frame) == (77, 0x0800, 16)


def test_unusable_frames():
    assert packet.decode(b"\x20\x00\x08") is None  # truncated header
    assert packet.decode(struct.pack("!HH", packet.FLAG_KEY, 0x0800) + b"\x00\x00") is None  # truncated key
    assert packet.decode(struct.pack("!HH", 0x0001, 0x880B)) is None  # version 1 (PPTP)
    assert packet.decode(struct.pack("!HH", packet.FLAG_ROUTING, 0x0800)) is None  # RFC 1701 routing


def test_control_errors_are_one_line_replies(tmp_path):
    d = Daemon(tmp_path)
    assert d.handle(b"{nope")["ok"] is False
    assert d.handle(json.dumps({"op": "reboot"}).encode()) == {"ok": False, "error": "unknown op 'reboot'"}
    reply = d.handle(
        json.dumps(
            {
                "op": "put",
                "tunnel": {"name": "gre-1", "local": "10.0.0.1", "remote": "::1", "key": 1, "ttl": 64, "mtu": 1400},
            }
        ).encode()
    )
    assert reply == {"ok": False, "error": "tunnel: remote: '::1' is not an IPv4 address"}
    assert d.handle(json.dumps({"op": "list"}).encode())["tunnels"] == []
