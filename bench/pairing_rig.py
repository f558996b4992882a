"""The pairing benches' router: a scratch namespace with a stand-in ENI, and the agent's pairing sync fed the snapshots a bench sets."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from infra.parameters import Parameter, instance_path
from infra.plan import OverlayPlan
from lab import netns
from overlay_agent.documents import DocumentSource
from overlay_agent.frr import Frr
from overlay_agent.pairing import PairingSync, attach
from overlay_agent.ssm import Cache, Poller, Snapshot
from overlay_agent.tunnels import TunnelReconciler


def instance_snapshot(
    plan: OverlayPlan, params: dict[str, Parameter], instance: str, revision: str, password: str | None
) -> Snapshot:
    """`instance`'s parameters as its agent reads them, from the program's own `build_parameters`."""
    base = instance_path(plan, instance) + "/"
    vals = {k[len(base) :]: p.value for k, p in params.items() if k.startswith(base) and p.value is not None}
    tunnels = {k: v for k, v in vals.items() if k.startswith("tunnels/")}
    return Snapshot(
        revision,
        vals["agent"],
        vals["frr"],
        tunnels,
        password,
        time.time(),
        route_server=vals.get("route-server"),
        vpc=vals.get("vpc"),
    )


class Fixed:
    """A parameter source returning whatever snapshot the benchmark sets (the read is not timed)."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    def revision(self) -> str:
        return self.snap.revision

    def fetch(self) -> Snapshot:
        return self.snap


@contextmanager
def router_namespace(tag: str, address: str, gateway: str | None = None) -> Iterator[str]:
    """A namespace whose `eth0` (a veth, its peer beside it) holds the router's private `address` (CIDR),
    with a default route via `gateway`; removed with what runs in it."""
    ns = netns.create(netns.unique_name(tag))
    try:
        netns.run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p", ns=ns)
        netns.run("ip", "addr", "add", address, "dev", "eth0", ns=ns)
        netns.run("ip", "link", "set", "eth0", "up", ns=ns)
        netns.run("ip", "link", "set", "eth0p", "up", ns=ns)
        if gateway:
            netns.run("ip", "route", "add", "default", "via", gateway, ns=ns)
        yield ns
    finally:
        netns.destroy(ns)


class Rig:
    """A document source on a `Fixed` source and the pairing sync it feeds, as the command wires them, turned by
    hand at a fixed clock so that only the apply is timed."""

    def __init__(self, snap: Snapshot, state_dir: Path, tunnels: TunnelReconciler, frr: Frr | None = None) -> None:
        self.src = Fixed(snap)
        cache = Cache(state_dir)
        self.source = DocumentSource(Poller(self.src, cache), cache)
        self.sync: PairingSync = attach(self.source, tunnels, frr, state_dir)

    def boot(self) -> float:
        """The first read and apply; its apply time."""
        self.source.start()
        self.sync.step(now=0.0)
        return self.sync.last_apply_seconds or 0.0

    def publish(self, snap: Snapshot) -> float:
        """`snap` becomes the parameters: the source reads it (as on SIGHUP) and the sync applies it; the apply time."""
        self.src.snap = snap
        self.source.hup()
        self.source.step(now=1.0)
        self.sync.step(now=1.0)
        return self.sync.last_apply_seconds or 0.0

    def resync(self) -> float:
        """A resync with nothing new (the ticker every 30 s); its apply time."""
        self.sync.apply(resync=True)
        return self.sync.last_apply_seconds or 0.0
