"""GRE framing (RFC 2784 with the RFC 2890 key and sequence extensions): pure encode and decode."""

from __future__ import annotations

import struct

# Flag bits of the first 16-bit word (RFC 2784 section 2, RFC 2890 section 2).
FLAG_CSUM = 0x8000
FLAG_ROUTING = 0x4000  # RFC 1701 source routing: deprecated, never accepted
FLAG_KEY = 0x2000
FLAG_SEQ = 0x1000
VERSION_MASK = 0x0007

PROTO_IPV4 = 0x0800
PROTO_IPV6 = 0x86DD

_HDR = struct.Struct("!HH")
_HDR_KEY = struct.Struct("!HHI")


def header(proto: int, key: int | None) -> bytes:
    """The GRE header we send: no checksum, no sequence, the key when the tunnel has one."""
    if key is None:
        return _HDR.pack(0, proto)
    return _HDR_KEY.pack(FLAG_KEY, proto, key)


def decode(datagram: bytes, offset: int = 0) -> tuple[int | None, int, int] | None:
    """Parse the GRE header at `offset`: (key, protocol type, payload offset), or None if unusable.

    Checksum and sequence fields are skipped, not verified: the underlay (IP, and the
    inner protocols' own checksums) already covers corruption, and the kernel's ip_gre
    also accepts out-of-order packets unless told otherwise.
    """
    if len(datagram) < offset + 4:
        return None
    flags, proto = _HDR.unpack_from(datagram, offset)
    if flags & (FLAG_ROUTING | VERSION_MASK):
        return None  # version 1 is PPTP's enhanced GRE; routing is obsolete
    pos = offset + 4
    if flags & FLAG_CSUM:
        pos += 4
    key = None
    if flags & FLAG_KEY:
        if len(datagram) < pos + 4:
            return None
        (key,) = struct.unpack_from("!I", datagram, pos)
        pos += 4
    if flags & FLAG_SEQ:
        pos += 4
    if len(datagram) < pos:
        return None
    return key, proto, pos
