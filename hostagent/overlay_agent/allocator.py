"""Lowest-free address allocation from the host's block; the set of used addresses is rebuilt from the kernel and Docker."""

from __future__ import annotations

import ipaddress
from typing import Iterable

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class Exhausted(Exception):
    """No free address left in the block."""


class BlockAllocator:
    """Hands out the lowest free host address of one block.

    There is no state file: the caller seeds `used` from what the kernel (wired veths,
    routes) and Docker (explicit labels) say, every pass, so a restart rebuilds the same
    picture and an address in use is never handed out twice.
    """

    def __init__(self, block: ipaddress.IPv4Network | ipaddress.IPv6Network, used: Iterable[Address] = ()):
        self.block = block
        self.used: set[Address] = {a for a in used if a in block}
        # Skip the network address (and the IPv4 broadcast address): a /32 route to them is
        # legal, but some stacks and middleboxes treat them specially, and the block may be
        # cut into subnets later.
        self._first = int(block.network_address) + 1
        self._last = int(block.broadcast_address) - (1 if block.version == 4 else 0)
        self._cursor = self._first

    def reserve(self, addr: Address) -> None:
        self.used.add(addr)

    def allocate(self) -> Address:
        cls = ipaddress.IPv4Address if self.block.version == 4 else ipaddress.IPv6Address
        # The cursor only moves forward within one pass; a pass allocates in ascending order,
        # so this stays O(block) per pass instead of O(block) per container.
        while self._cursor <= self._last:
            addr = cls(self._cursor)
            self._cursor += 1
            if addr not in self.used:
                self.used.add(addr)
                return addr
        raise Exhausted(f"block {self.block} has no free address ({len(self.used)} in use)")
