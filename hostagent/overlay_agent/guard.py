"""Anti-spoofing for containers: an nftables table the agent owns, reconciled like the routes.

A container with CAP_NET_RAW (Docker's default) can send any source address through its
veth; the host forwards it (rp_filter is loose on purpose: replies come back over any
router's tunnel), so it could pose as another container, on this host or any other, towards
on-prem and other hosts. And GRE it originates to a router's or a host's underlay address,
with a guessed key (keys are small sequential integers), would be injected into that tunnel.

The table `inet overlay_guard` holds one chain at the prerouting hook (priority raw, before
conntrack and routing) that judges only packets entering from our veths (`ovc*`):
- GRE from a container is dropped (the overlay's tunnels are the host's, never a container's);
- Router Advertisements and redirects from a container are dropped (belt and braces with
  the veths' accept_ra=0);
- IPv6 link-local sources pass (neighbour discovery with the host's fe80::1; the kernel
  never forwards a link-local source), and `::` only for duplicate address detection;
- anything else passes only if (veth, source address) is in the sets `src4`/`src6`, one
  element per address the agent wired on that veth; the rest is counted and dropped.

The sets are the only thing that changes at run time: the reconciler adds a container's
elements after its veth is wired and before its host route is installed, and removes them
when it unwires. The chain is rewritten in one transaction at start (atomic: no moment
without the rules), the sets are kept, so an agent restart changes nothing for traffic.
Another tool's tables are never touched; the agent touches only this table.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import shutil
import subprocess
from typing import Callable, Iterable, Protocol

from .errors import CommandError
from .metrics import Metrics

log = logging.getLogger("overlay_agent.guard")

TABLE = "overlay_guard"
Element = tuple[str, ipaddress.IPv4Address | ipaddress.IPv6Address]  # (veth, address)


def ruleset(prefix: str) -> str:
    """The table, its sets and the chain, as one nft transaction that keeps existing set elements."""
    return f"""add table inet {TABLE}
add set inet {TABLE} src4 {{ type ifname . ipv4_addr; }}
add set inet {TABLE} src6 {{ type ifname . ipv6_addr; }}
add chain inet {TABLE} containers {{ type filter hook prerouting priority raw; policy accept; }}
flush chain inet {TABLE} containers
add rule inet {TABLE} containers iifname != "{prefix}*" accept
add rule inet {TABLE} containers meta l4proto gre counter drop comment "GRE from a container"
add rule inet {TABLE} containers icmpv6 type {{ nd-router-advert, nd-redirect }} counter drop
add rule inet {TABLE} containers ip6 saddr fe80::/10 accept
add rule inet {TABLE} containers ip6 saddr :: icmpv6 type nd-neighbor-solicit accept
add rule inet {TABLE} containers meta nfproto ipv4 iifname . ip saddr @src4 accept
add rule inet {TABLE} containers meta nfproto ipv6 iifname . ip6 saddr @src6 accept
add rule inet {TABLE} containers counter drop comment "source address not this container's"
"""


def _elements(items: Iterable[Element]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"src4": [], "src6": []}
    for veth, addr in sorted(items, key=lambda e: (e[0], str(e[1]))):
        out["src4" if addr.version == 4 else "src6"].append(f'"{veth}" . {addr}')
    return out


class NftGuard:
    """The anti-spoofing table through `nft -f -` (libnftables' own parser, one atomic transaction per call)."""

    def __init__(self, prefix: str, nft: str | None = None, timeout: float = 10.0):
        self.prefix = prefix
        self.nft = nft or shutil.which("nft") or "/usr/sbin/nft"
        self.timeout = timeout

    def _run(self, args: list[str], script: str | None = None) -> str:
        cmd = [self.nft, *args]
        try:
            out = subprocess.run(cmd, input=script, capture_output=True, text=True, timeout=self.timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise CommandError(f"nft: {exc}", cmd=cmd) from exc
        if out.returncode != 0:
            err = (out.stderr.strip().splitlines() or ["(no output)"])[0]
            raise CommandError(
                f"nft {' '.join(args)}: exit {out.returncode}: {err}",
                cmd=cmd,
                returncode=out.returncode,
                stderr=out.stderr,
            )
        return out.stdout

    def ensure(self) -> None:
        """Create the table or rewrite its chain; set elements stay."""
        self._run(["-f", "-"], ruleset(self.prefix))

    def elements(self) -> set[Element]:
        have: set[Element] = set()
        for name in ("src4", "src6"):
            doc = json.loads(self._run(["-j", "list", "set", "inet", TABLE, name]) or "{}")
            for item in doc.get("nftables", []):
                for elem in (item.get("set") or {}).get("elem", []):
                    veth, addr = elem["concat"]
                    have.add((veth, ipaddress.ip_address(addr)))
        return have

    def update(self, add: Iterable[Element], remove: Iterable[Element]) -> None:
        """One transaction: the removals and the additions apply together or not at all."""
        self.begin_update(add, remove)()

    def begin_update(self, add: Iterable[Element], remove: Iterable[Element]) -> Callable[[], None]:
        """Start `update` in an nft process; the returned function waits for it (CommandError on failure)."""
        lines = []
        for verb, items in (("delete", remove), ("add", add)):
            for name, elems in _elements(items).items():
                if elems:
                    lines.append(f"{verb} element inet {TABLE} {name} {{ {', '.join(elems)} }}")
        if not lines:
            return lambda: None
        cmd = [self.nft, "-f", "-"]
        try:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
            )
        except OSError as exc:
            raise CommandError(f"nft: {exc}", cmd=cmd) from exc
        assert proc.stdin is not None  # a pipe (Popen above)
        try:
            # Written now (nft parses only after end of input), so nft works while we wire.
            proc.stdin.write("\n".join(lines) + "\n")
            proc.stdin.close()
        except OSError:
            pass  # nft died early: its exit code and stderr tell why

        def wait() -> None:
            assert proc.stderr is not None  # a pipe (Popen above)
            try:
                proc.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired as exc:
                proc.kill()
                proc.wait()
                raise CommandError(f"nft -f -: no answer in {self.timeout:g} s", cmd=cmd) from exc
            err = proc.stderr.read()
            proc.stderr.close()
            if proc.returncode != 0:
                first = (err.strip().splitlines() or ["(no output)"])[0]
                raise CommandError(
                    f"nft -f -: exit {proc.returncode}: {first}", cmd=cmd, returncode=proc.returncode, stderr=err
                )

        return wait


class GuardShim(Protocol):
    def ensure(self) -> None: ...
    def elements(self) -> set[Element]: ...
    def update(self, add: Iterable[Element], remove: Iterable[Element]) -> None: ...
    def begin_update(self, add: Iterable[Element], remove: Iterable[Element]) -> Callable[[], None]: ...


Pending = tuple[set[Element], Callable[[], None]]  # elements being added, and the wait for nft


class GuardSync:
    """Keeps the sets equal to the wired containers' (veth, address) pairs, for the container reconciler.

    Fails open, loudly: nft missing or refusing is logged once, counted (reason `guard`) and
    tried again only at the next full pass, so a broken nft never stops nor slows the wiring.
    """

    def __init__(self, metrics: Metrics, shim: GuardShim | None = None) -> None:
        self.metrics = metrics
        self.shim = shim  # None: the guard is off
        self.have: set[Element] | None = None  # None: read it from nft next time
        self.error: str | None = None
        self.backoff = False

    def full_pass(self) -> None:
        """A full resync re-reads the sets, re-asserts the table, and retries after a failure."""
        self.have = None
        self.backoff = False

    def begin(self, add: set[Element]) -> Pending | None:
        """Start adding the sources of containers about to be wired; (elements, waiter) or None."""
        if self.shim is None or self.backoff:
            return None
        if self.have is None:
            try:  # a full pass re-asserts the table and re-reads the sets first
                self.shim.ensure()
                self.have = self.shim.elements()
            except Exception:  # noqa: BLE001 - sync() at the end of the pass reports and retries
                return None
        add = add - self.have
        if not add:
            return None
        try:
            return add, self.shim.begin_update(add, ())
        except Exception as exc:  # noqa: BLE001 - see sync()
            log.warning("anti-spoofing table: %s", exc, extra={"reason": "guard"})
            self.have = None
            return None

    def end(self, pending: Pending) -> None:
        add, wait = pending
        try:
            wait()
        except Exception as exc:  # noqa: BLE001 - sync() at the end of the pass retries
            log.warning("anti-spoofing table: %s", exc, extra={"reason": "guard"})
            self.have = None
            return
        if self.have is not None:
            self.have |= add
            self.metrics.netlink_changes.labels("guard").inc()

    def sync(self, want: set[Element]) -> None:
        """Make the sets hold exactly `want`."""
        if self.shim is None or self.backoff:
            return
        for attempt in (1, 2):
            try:
                if self.have is None:
                    self.shim.ensure()
                    self.have = self.shim.elements()
                add, remove = want - self.have, self.have - want
                if add or remove:
                    self.shim.update(add, remove)
                    self.metrics.netlink_changes.labels("guard").inc()
                self.have = want
                self.error = None
                return
            except Exception as exc:  # noqa: BLE001 - nft missing or refusing must not stop the wiring
                self.have = None  # our picture may be wrong: read it again and retry once
                if attempt == 2:
                    if str(exc) != self.error:
                        log.error("anti-spoofing table: %s (retried at the next pass)", exc, extra={"reason": "guard"})
                    self.error = str(exc)
                    self.backoff = True  # a missing or broken nft must not slow every event pass
                    self.metrics.errors.labels("guard").inc()
