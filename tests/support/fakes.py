"""In-memory fakes of the agent's edges (kernel via the netlink shims, Docker, the nft guard)
and the documents the unit tests build, shared by the unit tests: a test module imports
these from here, never from another test module."""

from __future__ import annotations

import copy
import ipaddress
import json
import random

from overlay_agent import config as config_mod
from overlay_agent.docker_shim import ContainerInfo
from overlay_agent.errors import CommandError, DockerError, NetlinkError, ParameterError
from overlay_agent.gre.base import LinkSpec
from overlay_agent.netlink import ContainerGone, KernelView
from overlay_agent.rtnl_dump import LinkInfo, RouteInfo
from overlay_agent.documents import DocumentSource
from overlay_agent.metrics import SourceMetrics
from overlay_agent.pairing import PairingSync, attach
from overlay_agent.placeholders import BGP_PASSWORD
from overlay_agent.ssm import Cache, Poller, Snapshot
from overlay_agent.tunnels import IFF_LOWER_UP, IFF_UP, LinkState, Route, TunnelReconciler, View
from tests.support.configs import agent_doc


# -- container wiring ---------------------------------------------------------------------

PROTO = 149


# Shared ranges (moves, anycast): 100.64.1.0-100.64.15.255 and fd00:64::1:0-fd00:64::f:ffff,
# beside this host's block; 100.64.16.0 and up is other hosts' blocks.
SHARED = {
    "ipv4": ["100.64.1.0/24", "100.64.2.0/23", "100.64.4.0/22", "100.64.8.0/21"],
    "ipv6": ["fd00:64::1:0/112", "fd00:64::2:0/111", "fd00:64::4:0/110", "fd00:64::8:0/109"],
}


def cfg(block4="100.64.0.0/26", block6="fd00:64::/112", resync=30, pools4=("100.64.0.0/16",), shared=SHARED):
    return config_mod.parse(
        {
            "schema": 1,
            "project": "overlay",
            "stack": "t",
            "instance": "host-1",
            "role": "host",
            "asn": 65101,
            "blocks": {"ipv4": block4, "ipv6": block6},
            "shared": shared,
            "pools": {"ipv4": list(pools4), "ipv6": ["fd00:64::/48"]},
            "settings": {"route_protocol": PROTO, "resync_interval": resync},
        }
    )


class FakeKernel:
    """Links with aliases, main-table host routes with protocols, and which processes are alive."""

    def __init__(self):
        self.links: dict[str, dict] = {}
        # (dst, metric) -> (frozenset(ifindex), proto): the kernel keys routes by both
        self.routes: dict = {}
        self.alive: set[int] = set()
        self.ops: list[tuple] = []
        self.next_index = 100
        self.fail_wire: set[str] = set()

    def snapshot(self, prefix):
        links = tuple(
            LinkInfo(n, link["index"], link["alias"]) for n, link in self.links.items() if n.startswith(prefix)
        )
        routes = tuple(RouteInfo(d, tuple(sorted(o)), p, m) for (d, m), (o, p) in self.routes.items())
        return KernelView(links, routes)

    def link_index(self, name):
        link = self.links.get(name)
        return link["index"] if link else None

    def wire(self, spec, pid):
        if pid not in self.alive:
            raise ContainerGone(f"process {pid} has exited")
        if spec.veth in self.fail_wire:
            raise NetlinkError("create veth: Operation not permitted", errno=1)
        self.unwire(spec.veth, record=False)
        self.next_index += 1
        self.links[spec.veth] = {"index": self.next_index, "alias": spec.alias, "pid": pid, "spec": spec}
        self.ops.append(("wire", spec.veth))
        return self.next_index

    def unwire(self, veth, record=True):
        link = self.links.pop(veth, None)
        if link is None:
            return False
        if record:
            self.ops.append(("unwire", veth))
        for key, (oifs, _) in list(self.routes.items()):
            if link["index"] in oifs:
                del self.routes[key]
        return True

    def route_set(self, dst, veths, proto, metric=0):
        oifs = frozenset(self.links[v]["index"] for v in veths)
        self.routes[(dst, metric)] = (oifs, proto)
        self.ops.append(("route_set", str(dst), tuple(sorted(veths))))

    def route_del(self, dst, proto, metric=None):
        # Like the kernel: without a metric, the first (lowest-metric) match goes.
        keys = sorted(
            (m, d) for (d, m), (_, p) in self.routes.items() if d == dst and p == proto and metric in (None, m)
        )
        if not keys:
            return False
        del self.routes[(dst, keys[0][0])]
        self.ops.append(("route_del", str(dst)))
        return True

    def put(self, dst, oifs, proto, metric=0):
        self.routes[(ipaddress.ip_network(dst), metric)] = (frozenset(oifs), proto)

    def has(self, dst):
        return any(d == ipaddress.ip_network(dst) for d, _ in self.routes)

    def metrics_of(self, dst):
        return sorted(m for d, m in self.routes if d == ipaddress.ip_network(dst))

    # views for assertions
    def our_routes(self):
        names = {link["index"]: n for n, link in self.links.items()}
        return {str(d): tuple(sorted(names[i] for i in o)) for (d, _), (o, p) in self.routes.items() if p == PROTO}

    def kill(self, pid):
        """A container's last process exits: its namespace goes, and with it the veth and routes."""
        self.alive.discard(pid)
        for name, link in list(self.links.items()):
            if link["pid"] == pid:
                self.unwire(name, record=False)


class FakeDocker:
    def __init__(self, kernel: FakeKernel):
        self.kernel = kernel
        self.containers: dict[str, ContainerInfo] = {}
        self.down = False
        self._pid = 1000

    def add(self, name, labels=None, **kw):
        self._pid += 1
        cid = (f"{name:0<12}"[:12].encode().hex() * 6)[:64]
        kw.setdefault("created", float(len(self.containers)))
        info = ContainerInfo(id=cid, name=name, labels=labels or {}, pid=self._pid, **kw)
        self.containers[cid] = info
        self.kernel.alive.add(self._pid)
        return info

    def stop(self, info):
        del self.containers[info.id]
        self.kernel.kill(info.pid)

    def list_running(self):
        if self.down:
            raise DockerError("docker at unix:///fake: not answering")
        # A listing carries no pid.
        return [ContainerInfo(**{**vars(c), "pid": 0}) for c in self.containers.values() if c.running]

    def inspect(self, cid):
        if self.down:
            raise DockerError("docker at unix:///fake: not answering")
        return self.containers.get(cid)


# -- tunnels ------------------------------------------------------------------------------

N = ipaddress.ip_network
POOLS = (N("10.99.0.0/16"),)

TUNNEL_BASE = {
    "schema": 1,
    "name": "gre-1",
    "peer": "router-1",
    "kind": "host",
    "local": "10.40.0.10",
    "remote": "10.40.128.10",
    "key": 1,
    "ttl": 64,
    "mtu": 1472,
    "inner_ipv4": {"local": "169.254.64.1", "remote": "169.254.64.0", "prefixlen": 31},
    "inner_ipv6": {"local": "fd10:7e::1", "remote": "fd10:7e::", "prefixlen": 127},
    "peer_asn": 65000,
}


def tunnel_doc(**over) -> str:
    d = copy.deepcopy(TUNNEL_BASE)
    d.update(over)
    return json.dumps(d)


class FakeBackend:
    """A userspace-like backend: links appear in the fake kernel as they are put."""

    name = "fake"

    def __init__(self, kernel: "FakeNetlink"):
        self.kernel = kernel
        self.links: dict[str, LinkSpec] = {}
        self.fail: set[str] = set()
        self.calls: list[tuple] = []

    def list(self):
        return dict(self.links)

    def put(self, spec):
        self.calls.append(("put", spec.name))
        if spec.name in self.fail:
            raise NetlinkError(f"{spec.name}: File exists", errno=17)
        self.links[spec.name] = spec
        self.kernel.ensure_link(spec.name, spec.mtu)

    def delete(self, name):
        self.calls.append(("delete", name))
        self.links.pop(name, None)
        self.kernel.remove_link(name)

    def counters(self):
        return {}


class FakeNetlink:
    def __init__(self):
        self.links: dict[str, LinkState] = {
            "lo": LinkState("lo", 1, IFF_UP | IFF_LOWER_UP, 65536),
            "eth0": LinkState("eth0", 2, IFF_UP | IFF_LOWER_UP, 1500),
        }
        self.addrs: dict[int, set] = {2: {ipaddress.ip_interface("10.40.0.10/20")}}
        self.routes: list[Route] = [
            Route(N("10.40.0.0/20"), 2, None, 2),  # connected (proto kernel)
            Route(N("0.0.0.0/0"), 2, "10.40.0.1", 3),  # default via the VPC router (proto boot)
        ]
        self.next_index = 10
        self.writes: list[tuple] = []

    def ensure_link(self, name, mtu):
        if name not in self.links:
            self.links[name] = LinkState(name, self.next_index, 0, mtu)
            self.next_index += 1

    def remove_link(self, name):
        link = self.links.pop(name, None)
        if link is not None:
            self.addrs.pop(link.index, None)
            self.routes = [r for r in self.routes if r.oif != link.index]

    def view(self):
        return View(dict(self.links), copy.deepcopy(self.addrs), list(self.routes))

    def link_up(self, index):
        self.writes.append(("up", index))
        for n, link in self.links.items():
            if link.index == index:
                self.links[n] = LinkState(n, index, IFF_UP | IFF_LOWER_UP, link.mtu)

    def addr_add(self, index, iface):
        self.writes.append(("addr_add", index, str(iface)))
        self.addrs.setdefault(index, set()).add(iface)

    def addr_del(self, index, iface):
        self.writes.append(("addr_del", index, str(iface)))
        self.addrs[index].discard(iface)

    def route_replace(self, dst, pin, proto):
        self.writes.append(("route_replace", str(dst), pin.oif, pin.gateway))
        self.routes = [r for r in self.routes if not (r.dst == dst and r.proto == proto)]
        self.routes.append(Route(dst, pin.oif, pin.gateway, proto))

    def route_del(self, dst, pin, proto):
        self.writes.append(("route_del", str(dst)))
        self.routes = [r for r in self.routes if not (r.dst == dst and r.proto == proto)]


# -- the anti-spoofing guard ----------------------------------------------------------------


class FakeGuard:
    """The nft table's two sets, as one set of (veth, address); records into the kernel's op log."""

    def __init__(self, kernel: FakeKernel):
        self.kernel = kernel
        self.have: set = set()
        self.fail = 0
        self.ensured = 0

    def ensure(self):
        self.ensured += 1

    def elements(self):
        return set(self.have)

    def begin_update(self, add, remove):
        self.update(add, remove)
        return lambda: None

    def update(self, add, remove):
        if self.fail:
            self.fail -= 1
            raise CommandError("nft -f -: exit 1: Error: Could not process rule: No such file or directory")
        missing = set(remove) - self.have
        if missing:
            raise CommandError(f"nft: delete of absent elements {missing}")
        self.have = (self.have - set(remove)) | set(add)
        self.kernel.ops.append(("guard", tuple(sorted(str(a) for _, a in add))))


# -- the pairing sync ----------------------------------------------------------------------

# host-1 of the lab stack, polling every 2 s and resyncing every 10 s.
AGENT = json.dumps(
    agent_doc(
        asn=65100,
        underlay={"address": "10.40.0.10"},
        blocks={"ipv4": "10.99.0.0/24", "ipv6": "fd10:99::/112"},
        pools={"ipv4": ["10.99.0.0/16"], "ipv6": ["fd10:99::/48"]},
        settings={"route_protocol": 149, "poll_interval": 2, "resync_interval": 10},
    )
)
FRR = f"router bgp 65100\n neighbor 169.254.64.0 password {BGP_PASSWORD}\n"


def tunnel(name="gre-1", key=1, remote="10.40.128.10"):
    return json.dumps(dict(TUNNEL_BASE, name=name, key=key, remote=remote))


class FakeSource:
    def __init__(self):
        self.rev = 1
        self.down = False
        self.tunnels = {"tunnels/router-1": tunnel()}
        self.frr = FRR
        self.agent = AGENT
        self.vpc = None
        self.route_server = None
        self.fetches = 0

    def revision(self):
        if self.down:
            raise ParameterError("get /overlay/lab/instances/host-1/revision: Could not connect")
        return str(self.rev)

    def fetch(self):
        self.revision()
        self.fetches += 1
        return Snapshot(
            str(self.rev),
            self.agent,
            self.frr,
            dict(self.tunnels),
            "pw",
            0.0,
            vpc=self.vpc,
            route_server=self.route_server,
        )


class FakeFrr:
    """Running config as a set of lines; `residue` lines are accepted but never shown (like `hostname`)."""

    def __init__(self):
        self.running: set[str] = set()
        self.residue = {"hostname host-1"}
        self.reloads = 0
        self.diffs = 0
        self.reject = False
        # `show bgp summary json` as Session rows; None: vtysh fails (bgpd down)
        self.bgp_sessions: list | None = []
        self.texts: list[str] = []  # every text reloaded, in order

    def sessions(self):
        if self.bgp_sessions is None:
            raise CommandError("vtysh show bgp summary json: exit 1", cmd=["vtysh"], returncode=1, stderr="")
        return list(self.bgp_sessions)

    def diff(self, text):
        self.diffs += 1
        want = {ln for ln in text.splitlines() if ln}
        return sorted(self.running - want), sorted(want - self.running)

    def reload(self, text, previous=None):
        if self.reject:
            raise CommandError(
                "frr-reload --reload: FRR rejected the config (exit 1): line 3: % Unknown command",
                cmd=["frr-reload.py"],
                returncode=1,
                stderr="line 3: % Unknown command",
            )
        self.reloads += 1
        self.texts.append(text)
        self.running = {ln for ln in text.splitlines() if ln} - self.residue


class Lockstep:
    """The document source and the pairing sync of one agent, turned together at one clock (the
    agent runs them as two threads): `source` polls, `pairing` applies what it was offered."""

    def __init__(self, source: DocumentSource, pairing: PairingSync):
        self.source = source
        self.pairing = pairing

    def start(self):
        return self.source.start()

    def step(self, now: float) -> bool:
        """One turn of both loops: poll when due, then apply when offered or resync due; True if applied."""
        self.source.step(now=now)
        return self.pairing.step(now=now)

    def hup(self) -> None:
        self.source.hup()


def lockstep(src, tmp_path, backend, netlink, frr, poller=None, resync_interval=10) -> Lockstep:
    """A document source on `src` feeding a pairing sync on fakes, as the command wires them."""
    cache = Cache(tmp_path)
    poller = poller or Poller(src, cache, interval=2, backoff_min=1, backoff_max=30, rng=random.Random(3))
    source = DocumentSource(poller, cache, SourceMetrics())
    return Lockstep(
        source, attach(source, TunnelReconciler(backend, netlink), frr, tmp_path, resync_interval=resync_interval)
    )


def pairing_world(tmp_path):
    """(agent, source, backend, frr, state dir): a document source and pairing sync on fakes, not started."""
    src = FakeSource()
    nl = FakeNetlink()
    be = FakeBackend(nl)
    frr = FakeFrr()
    return lockstep(src, tmp_path, be, nl, frr), src, be, frr, tmp_path
