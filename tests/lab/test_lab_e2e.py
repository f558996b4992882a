"""The whole lab end to end: sessions, reachability, anycast, failover, hijacks, growth (issue 7); moves: test_lab_moves.py."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import docker
import pytest
import yaml

from infra.stackfile import stack_path
from lab import demo, stack
from lab.poll import wait_until
from tests.support.labrun import require_lab, running_lab

pytestmark = [pytest.mark.lab, pytest.mark.root, pytest.mark.frr, pytest.mark.docker]

NAME = f"e2e{os.getpid() % 1000}"


def say(line: str) -> None:
    print(line, flush=True)


def write_stack(directory: Path, hosts_delta: int = 0) -> None:
    doc = yaml.safe_load(stack_path("lab").read_text())
    doc["config"]["overlay:hosts"]["count"] += hosts_delta
    (directory / f"Pulumi.{NAME}.yaml").write_text(yaml.safe_dump(doc))


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    require_lab()
    stacks_dir = tmp_path_factory.mktemp("stacks")
    write_stack(stacks_dir)
    with running_lab(NAME, stacks_dir, say) as the_lab:
        yield the_lab
    assert not the_lab.state.exists()


@pytest.fixture
def containers(lab):
    """Containers a test starts; all removed afterwards, pass or fail."""
    made: list[tuple[str, str]] = []

    def start(host: str, name: str, labels: dict[str, str]):
        demo.start_container(lab, host, name, labels)
        made.append((host, name))
        return demo.container_addresses(lab, host, name)

    yield start
    for host, name in made:
        demo.remove_container(lab, host, name)


def client(lab):
    return lab.topo.sites[0].client_ns


def ping(ns: str, address: str) -> bool:
    return (
        subprocess.run(["ip", "netns", "exec", ns, "ping", "-c1", "-W2", address], capture_output=True).returncode == 0
    )


def reachable(ns: str, address: str, host: str, tries: int = 40) -> bool:
    """Ping and one HTTP GET answered by `host`'s container (routes settle in well under 10 s)."""
    for _ in range(tries):
        if ping(ns, address) and demo.http_get(ns, address) == host:
            return True
        time.sleep(0.25)
    return False


def uptimes(lab, router: str) -> dict[str, int]:
    """Each BGP peer's session uptime in ms on a router (Established peers only)."""
    doc = lab.frr_for(router).vtysh_json("show bgp summary json")
    return {
        peer: info.get("peerUptimeMsec")
        for af in doc.values()
        if isinstance(af, dict)
        for peer, info in af.get("peers", {}).items()
        if info.get("state") == "Established"
    }


def fib_tunnels(lab, router: str, prefix: str) -> set[str]:
    """The tunnels over which the router's FRR has installed `prefix` in its kernel."""
    entries = lab.frr_for(router).routes(6 if ":" in prefix else 4).get(str(ipaddress.ip_network(prefix)), [])
    return {
        nh.get("interfaceName") for e in entries if e.get("selected") for nh in e.get("nexthops", []) if nh.get("fib")
    }


def wait_routed_to(lab, prefix: str, hosts: tuple[str, ...]) -> None:
    """Until every router forwards `prefix` over its tunnel to each of `hosts` and to no other host."""
    tunnels = {
        r.name: {p.ifname: p.b.name for p in lab.plan.pairings_of(r.name) if p.kind == "host"} for r in lab.plan.routers
    }

    def settled() -> bool:
        for router, by_tunnel in tunnels.items():
            got = {by_tunnel[t] for t in fib_tunnels(lab, router, prefix) if t in by_tunnel}
            if got != {h for h in by_tunnel.values() if h in hosts}:
                return False
        return True

    wait_until(settled, 30, 0.1, f"{prefix} routed to {', '.join(hosts)} on every router")


# 1 -----------------------------------------------------------------------------------------
def test_every_session_established_over_gre(lab):
    stack.wait_sessions(lab, timeout=60)
    for r in lab.plan.routers:
        links = subprocess.run(
            ["ip", "netns", "exec", lab.topo.instance(r.name).ns, "ip", "-o", "link"], capture_output=True, text=True
        ).stdout
        for p in lab.plan.pairings_of(r.name):
            assert f" {p.ifname}:" in links, f"{r.name} lacks {p.ifname}"
        # every host session runs over its tunnel's inner addresses (dynamic neighbors)
        peers = uptimes(lab, r.name)
        for p in lab.plan.pairings_of(r.name):
            assert str(p.b.inner_v4) in peers and str(p.b.inner_v6) in peers
    # what an operator sees on an instance: the agent's own status (tunnels, sessions)
    for inst in lab.plan.instances:
        # Sessions can be up (FRR starts with the rendered text, the agent made the tunnels)
        # before a router's agent has finished its first FRR reload and written its status.
        deadline = time.monotonic() + 30
        while True:
            text = demo.agent_status_text(lab, inst.name)
            if ("from ssm: ok" in text and "Established" in text) or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert "from ssm: ok" in text and "Established" in text, text
        assert re.search(r"tunnels \((userspace|kernel) GRE\)", text), text
        assert text.count(" up ") >= len(lab.plan.pairings_of(inst.name)), text
    assert demo.status(lab) == 0
    site = lab.topo.sites[0]
    summary = lab.frr_for(site.name).bgp_summary()
    states = [i["state"] for af in summary.values() if isinstance(af, dict) for i in af.get("peers", {}).values()]
    assert states and all(s == "Established" for s in states)


# 2 and 7 (IPv6) ------------------------------------------------------------------------------
def test_container_on_each_host_reachable_from_onprem_and_vpc(lab, containers):
    native = lab.topo.instance("native").ns
    for h in lab.plan.hosts:
        v4, v6 = containers(h.name, f"reach-{h.name}", {"overlay": "auto"})
        assert v4 and v6
        assert reachable(client(lab), v4, h.name), f"{v4} on {h.name} from on-prem"
        assert reachable(client(lab), v6, h.name), f"{v6} on {h.name} from on-prem"
        # A VPC-native instance reaches it through the VPC route tables (pools -> router ENI).
        assert reachable(native, v4, h.name), f"{v4} on {h.name} from the VPC"
        assert reachable(native, v6, h.name), f"{v6} on {h.name} from the VPC"


# 4 and 7: moves lose nothing, tests/lab/test_lab_moves.py (both ASN modes, stop and rm -f) ----------


# 5 and 7 --------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", [4, 6])
def test_anycast_spreads_and_survives_one_stop(lab, containers, family):
    h1, h2 = (h.name for h in lab.plan.hosts[:2])
    addr = str(lab.plan.pools_v4[0].broadcast_address - 30) if family == 4 else str(lab.plan.pools_v6[0][-30])
    key = "overlay.ipv4" if family == 4 else "overlay.ipv6"
    for h in (h1, h2):
        containers(h, f"any-{family}-{h}", {key: addr, "overlay.anycast": "true"})
    prefix = f"{addr}/{32 if family == 4 else 128}"
    wait_routed_to(lab, prefix, (h1, h2))  # both hosts' announcements reached every router
    counts = demo.spread(client(lab), addr, 60)
    print(f"\nanycast IPv{family} {addr}: {dict(counts)}")
    assert counts[h1] > 0 and counts[h2] > 0 and counts["error"] == 0
    demo.remove_container(lab, h1, f"any-{family}-{h1}")
    wait_routed_to(lab, prefix, (h2,))  # h1's withdraw reached every router
    after = demo.spread(client(lab), addr, 20)
    assert after == {h2: 20}, after


# 6 --------------------------------------------------------------------------------------------
def test_host_failure_moves_anycast_within_a_second(lab, containers):
    h1, h2 = (h.name for h in lab.plan.hosts[:2])
    addr = str(lab.plan.pools_v4[0].broadcast_address - 40)
    for h in (h1, h2):
        containers(h, f"fail-{h}", {"overlay.ipv4": addr, "overlay.anycast": "true"})
    wait_routed_to(lab, f"{addr}/32", (h1, h2))
    assert demo.spread(client(lab), addr, 20)["error"] == 0
    # Probe with new TCP connections every 20 ms while host-2 is cut off from the VPC.
    code = (
        "import socket,time,json\nres=[]\nend=time.monotonic()+4\n"
        "while time.monotonic()<end:\n t=time.monotonic()\n s=socket.socket()\n s.settimeout(0.15)\n"
        f" try:\n  s.connect(('{addr}',80)); ok=1\n except OSError: ok=0\n"
        " s.close(); res.append((t,ok)); time.sleep(0.02)\nprint(json.dumps(res))"
    )
    prober = subprocess.Popen(
        ["ip", "netns", "exec", client(lab), "python3", "-c", code], stdout=subprocess.PIPE, text=True
    )
    time.sleep(0.5)
    cut_at = time.monotonic()
    host_ns = lab.topo.instance(h2).ns
    subprocess.run(["ip", "netns", "exec", host_ns, "ip", "link", "set", "eth0", "down"], check=True)
    try:
        results = json.loads(prober.communicate(timeout=30)[0])
    finally:
        subprocess.run(["ip", "netns", "exec", host_ns, "ip", "link", "set", "eth0", "up"], check=True)
        subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                host_ns,
                "ip",
                "route",
                "replace",
                "default",
                "via",
                str(lab.topo.instance(h2).segment.gateway),
            ],
            check=True,
        )
    failures = [t for t, ok in results if not ok and t >= cut_at - 0.2]
    outage = (max(failures) - cut_at + 0.15) if failures else 0.0
    print(
        f"\nhost {h2} cut off: anycast {addr} failed for {outage * 1000:.0f} ms "
        f"({len(failures)} of {len(results)} connection attempts)"
    )
    assert results[-1][1] == 1
    assert outage < 1.0
    stack.wait_sessions(lab, timeout=60)


# 3 --------------------------------------------------------------------------------------------
def test_250_containers_on_one_host_all_reachable(lab):
    host = lab.plan.hosts[0].name
    names = [f"many-{i}" for i in range(250)]
    client_docker = demo.docker_client(lab, host)

    def in_four(work):
        """`work(chunk)` on four threads, a quarter of the names each (dockerd serves them in parallel)."""
        threads = [threading.Thread(target=work, args=(names[i::4],)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    try:
        from lab import image

        ref = image.ensure(client_docker)
        errors: list[str] = []

        def run(chunk):
            c = demo.docker_client(lab, host)
            try:
                for n in chunk:
                    try:
                        c.containers.run(
                            ref,
                            ["httpd", "-f", "-p", "80", "-h", "/www"],
                            name=n,
                            detach=True,
                            network_mode="none",
                            labels={"overlay": "auto"},
                        )
                    except Exception as exc:  # noqa: BLE001 - collected and asserted below
                        errors.append(f"{n}: {exc}")
            finally:
                c.close()

        t0 = time.monotonic()
        in_four(run)
        assert not errors, errors[:3]
        addrs = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(addrs) < len(names):
            for row in demo.agent_status(lab, host).get("containers", []):
                if row.get("name") in names and row.get("state") == "routed":
                    addrs[row["name"]] = row["ipv4"]
            time.sleep(0.5)
        assert len(addrs) == len(names), f"{len(addrs)} of {len(names)} wired"
        print(f"\n250 containers started and wired in {time.monotonic() - t0:.1f} s")
        # Every one answers a TCP connection from on-prem (one process, parallel connects).
        code = (
            "import socket,json,sys,concurrent.futures as f\naddrs=json.load(sys.stdin)\n"
            "def probe(a):\n for _ in range(20):\n  s=socket.socket(); s.settimeout(1)\n"
            "  try:\n   s.connect((a,80)); return None\n  except OSError:\n   pass\n  finally: s.close()\n"
            " return a\n"
            "with f.ThreadPoolExecutor(32) as ex: bad=[a for a in ex.map(probe, addrs) if a]\n"
            "print(json.dumps(bad))"
        )
        proc = subprocess.run(
            ["ip", "netns", "exec", client(lab), "python3", "-c", code],
            input=json.dumps(sorted(addrs.values())),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert json.loads(proc.stdout) == [], proc.stderr
    finally:
        # Four removers, like the four starters: one by one, the 250 removals (vfs layers)
        # took about as long as the starts.
        def remove(chunk):
            c = demo.docker_client(lab, host)
            try:
                for n in chunk:
                    with contextlib.suppress(docker.errors.NotFound):
                        c.containers.get(n).remove(force=True)
            finally:
                c.close()

        in_four(remove)
        client_docker.close()


# 8 --------------------------------------------------------------------------------------------
def advertised(lab, host) -> set[str]:
    peer = str(lab.plan.pairings_of(host.name)[0].a.inner_v4)
    doc = lab.frr_for(host.name).vtysh_json(f"show bgp ipv4 unicast neighbors {peer} advertised-routes json")
    return set((doc.get("advertisedRoutes") or {}).keys())


@contextlib.contextmanager
def tampered_host(lab, host, prefixes: list[str]):
    """A compromised host: its export filter gone, announcing `prefixes` (IPv4) to its routers.
    Its agent is paused meanwhile, or its resync would restore the config before the routers
    see it. On exit the agent resumes, and its resync must find FRR's running config differs
    from its parameter and reload it within 30 s."""
    agent_pid = int((lab.agent_dir(host.name) / "agent.pid").read_text())
    os.kill(agent_pid, signal.SIGSTOP)
    try:
        cmds = ["configure terminal"] + [f"ip route {p} blackhole" for p in prefixes]
        cmds += [f"router bgp {host.asn}", "address-family ipv4 unicast"] + [f"network {p}" for p in prefixes]
        cmds += ["no neighbor ROUTERS route-map ROUTERS-OUT out", "end", "clear bgp ipv4 unicast * soft out"]
        lab.frr_for(host.name).vtysh(*cmds)
        wait_until(lambda: set(prefixes) <= advertised(lab, host), 10, 0.2, f"{host.name} sending {prefixes}")
        yield
    finally:
        os.kill(agent_pid, signal.SIGCONT)
    wait_until(
        lambda: not set(prefixes) & advertised(lab, host), 30, 0.5, f"{host.name}'s agent restoring its FRR config"
    )


def test_hijack_attempts_rejected_and_the_agent_restores_the_host(lab, containers):
    host = lab.plan.hosts[-1]
    site = lab.topo.sites[0].name
    # A container keeps the pools' aggregate announced, so on-prem's table is steady.
    containers(host.name, "hijack-witness", {"overlay": "auto"})
    demo.wait_route(lab, site, str(lab.plan.pools_v4[0]))
    before_onprem = set(lab.frr_for(site).routes(4))
    bogus = ["0.0.0.0/0", "10.99.200.0/24", "192.0.2.77/32"]
    with tampered_host(lab, host, bogus):
        time.sleep(1)
        for r in lab.plan.routers:
            routes = lab.frr_for(r.name).routes(4)
            for p in bogus:
                assert not any(e.get("protocol") == "bgp" for e in routes.get(p, [])), f"{r.name} took {p}"
        assert set(lab.frr_for(site).routes(4)) == before_onprem


# issue 12: who may announce what -----------------------------------------------------------
def test_hijack_by_label_is_refused_at_the_agent_and_by_a_tampered_host_at_the_routers(lab, containers):
    h1, h2 = lab.plan.hosts[0], lab.plan.hosts[1]
    # The victim: an auto container on host-2 (its block), and one on host-1.
    victim_v4, _ = containers(h2.name, "own-victim", {"overlay": "auto"})
    local_v4, local_v6 = containers(h1.name, "own-local", {"overlay": "auto"})
    for r in lab.plan.routers:
        demo.wait_route(lab, r.name, f"{victim_v4}/32")

    # 1. Labels: another host's block, and a wired (auto) address on the same host.
    # Refused containers never get addresses, so they are started directly (and removed below).
    demo.start_container(lab, h1.name, "own-thief", {"overlay.ipv4": victim_v4})
    demo.start_container(lab, h1.name, "own-squatter", {"overlay.ipv4": local_v4, "overlay.ipv6": local_v6})
    try:
        _hijacks_refused(lab, h1, h2, victim_v4, local_v4)
    finally:
        demo.remove_container(lab, h1.name, "own-thief")
        demo.remove_container(lab, h1.name, "own-squatter")


def _hijacks_refused(lab, h1, h2, victim_v4: str, local_v4: str) -> None:
    rows = {}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(rows) < 2:
        rows = {
            r["name"]: r
            for r in demo.agent_status(lab, h1.name).get("containers", [])
            if r["name"] in ("own-thief", "own-squatter") and r.get("state") == "error"
        }
        time.sleep(0.2)
    assert rows["own-thief"]["reason"] == "not_owned", rows
    assert f"address {victim_v4} is not this host's to announce" in rows["own-thief"]["error"]
    assert rows["own-squatter"]["reason"] == "duplicate", rows
    assert "already used by container own-local" in rows["own-squatter"]["error"]
    text = demo.agent_status_text(lab, h1.name)
    assert "not_owned" in text and "duplicate" in text, text
    log = (lab.state / "logs" / f"agent-{h1.name}.log").read_text(errors="replace")
    assert f"address {victim_v4} is not this host's to announce" in log
    h1_peers = {str(p.b.inner_v4) for p in lab.plan.pairings_of(h1.name)}
    h2_peers = {str(p.b.inner_v4) for p in lab.plan.pairings_of(h2.name)}

    def peers(router: str, prefix: str) -> set[str]:
        doc = lab.frr_for(router).vtysh_json(f"show bgp ipv4 unicast {prefix} json")
        return {p.get("peer", {}).get("peerId", "") for p in doc.get("paths", [])}

    for r in lab.plan.routers:
        assert peers(r.name, f"{victim_v4}/32") <= h2_peers
        assert demo.http_get(client(lab), local_v4) == h1.name

    # 2. A tampered host-1 (agent paused, FRR told to announce): host-2's address is dropped
    # at every router, the shared range accepted.
    shared = str(lab.plan.shared_v4[0][77])
    claims = [f"{victim_v4}/32", f"{shared}/32"]
    with tampered_host(lab, h1, claims):
        for r in lab.plan.routers:
            wait_until(
                lambda r=r: peers(r.name, f"{shared}/32") & h1_peers,
                10,
                0.2,
                f"{r.name} accepting the shared range from {h1.name}",
            )
            # the same UPDATE stream carried the hijack: refused, host-2 alone keeps the address
            assert peers(r.name, f"{victim_v4}/32") <= h2_peers, f"{r.name} took {victim_v4} from {h1.name}"
        assert demo.spread(client(lab), victim_v4, 20) == {h2.name: 20}


# 9 --------------------------------------------------------------------------------------------
def test_growth_adds_a_host_live(lab, containers):
    before = {r.name: uptimes(lab, r.name) for r in lab.plan.routers}
    t0 = time.monotonic()
    write_stack(lab.stacks_dir, hosts_delta=1)
    grown = stack.Lab.load(NAME, lab.stacks_dir, say=say)
    try:
        stack.up(grown)  # a running lab follows the changed stack
        new_host = grown.plan.hosts[-1].name
        assert new_host not in {h.name for h in lab.plan.hosts}
        for r in grown.plan.routers:
            after = uptimes(grown, r.name)
            elapsed_ms = (time.monotonic() - t0) * 1000
            for peer, up_ms in before[r.name].items():
                # uninterrupted: it has been up all along (FRR reports uptime to the second)
                assert after.get(peer, 0) >= up_ms + elapsed_ms - 2000, f"{r.name}: session to {peer} was reset"
        demo.start_container(grown, new_host, "grown", {"overlay": "auto"})
        try:
            v4, v6 = demo.container_addresses(grown, new_host, "grown")
            assert reachable(client(grown), v4, new_host) and reachable(client(grown), v6, new_host)
        finally:
            demo.remove_container(grown, new_host, "grown")
    finally:
        write_stack(lab.stacks_dir)
        stack.up(stack.Lab.load(NAME, lab.stacks_dir, say=say))  # and shrinks back
