"""VPC-side failover end to end (issue 14): the lab's route server stand-in moves the pools off a frozen router.

A VPC-native instance pings a container every 10 ms; the preferred router (the one every
route table uses: one FIB) is frozen, every process SIGSTOPped as a dead instance; the
instance must reach the container again within 2 s through the other router; after the
thaw the tables return to the preferred router and the replies come back through it.

The return is lossless, asserted: the thawed router announces the pools to the route
server with its held attributes (RS-HOLD-OUT, worse than router-2's) until its agent's
route-server gate has seen every host session back with its routes, so the tables move
back only once router-1 can deliver to every container (docs/vpc-failover.md, "Coming
back"; before the gate 3 of 20 bench returns and 8 of 16 test cycles on a loaded machine
lost echoes). A cycle takes about 20 s, most of it the return (the router's 10 s
coalesce time and the agent's frr-reload). VPC_FAILOVER_CYCLES=N repeats the freeze N
times in the same lab.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

import pytest
import yaml

from infra.stackfile import stack_path
from lab import demo, failover, stack
from tests.support.labrun import require_lab, running_lab

pytestmark = [pytest.mark.lab, pytest.mark.root, pytest.mark.frr, pytest.mark.docker]

NAME = f"rsf{os.getpid() % 1000}"
CYCLES = int(os.environ.get("VPC_FAILOVER_CYCLES", "1"))


def say(line: str) -> None:
    print(line, flush=True)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    require_lab()
    stacks_dir = tmp_path_factory.mktemp("stacks")
    doc = yaml.safe_load(stack_path("lab").read_text())
    doc["config"]["overlay:vpc"]["failover"] = "routeServer"
    (stacks_dir / f"Pulumi.{NAME}.yaml").write_text(yaml.safe_dump(doc))
    with running_lab(NAME, stacks_dir, say) as the_lab:
        yield the_lab


@pytest.fixture
def container(lab):
    demo.start_container(lab, "host-1", "rsf-web", {"overlay": "auto"})
    try:
        yield demo.container_addresses(lab, "host-1", "rsf-web")
    finally:
        demo.remove_container(lab, "host-1", "rsf-web")


def test_route_server_installs_one_best_path_for_every_table(lab, container):
    # A router announces a pool only while a host's address lies under it (FRR originates an
    # aggregate only with a contributing route): the container makes both routers announce.
    plan = lab.plan
    pool4, pool6 = str(plan.pools_v4[0]), str(plan.pools_v6[0])
    # router-1 announces MED 0, router-2 MED 100 and a prepend: router-1 for every AZ.
    failover.wait_for(lambda: failover.vpc_choice(lab, pool4) == "router-1", 30, "IPv4 pool on router-1")
    failover.wait_for(lambda: failover.vpc_choice(lab, pool6) == "router-1", 30, "IPv6 pool on router-1")
    # Both paths are in the route server's RIB with the planned attributes; one is best.
    # (`show bgp ipv4 unicast json`: the MED is "metric", the AS path "path".) Each router
    # announces RS-HOLD-OUT's attributes (MED 200/300, longer paths) until its agent's gate
    # has seen its host sessions back: on a loaded machine that outlasts the wait above
    # (router-1 held is still better than router-2 held), so wait for both gates to open.
    planned = [(0, "65000"), (100, "65000 65000")]

    def pool_paths():
        return lab.frr_for("route-server").bgp_routes(4).get(pool4, [])

    def attributes(rib):
        return sorted((p.get("metric", 0), p["path"]) for p in rib)

    t0 = time.time()
    with contextlib.suppress(failover.LabError):  # the assertions below show what was there
        failover.wait_for(lambda: attributes(pool_paths()) == planned, 60, "both routers' planned attributes", 0.2)
    say(f"route server: planned attributes from both routers {time.time() - t0:.1f} s after the pool moved")
    # One read for both assertions: the paths and the best among them, from the same RIB.
    rib = pool_paths()
    assert attributes(rib) == planned
    assert [p.get("metric", 0) for p in rib if p.get("bestpath")] == [0]
    # The per-AZ tables hold no pool route of their own: lookups from every subnet fall
    # through to the one FIB.
    for table, _ in lab.topo.az_tables:
        out = stack.subprocess.run(
            ["ip", "netns", "exec", lab.topo.vpc_ns, "ip", "-j", "route", "show", "table", str(table)],
            capture_output=True,
            text=True,
        ).stdout
        assert pool4 not in out


def test_frozen_router_costs_the_vpc_under_2s_and_the_tables_return(lab, container):
    from lab import egress

    ipv4, _ = container
    # The other traffic classes through the same freeze (docs/vpc-failover.md, failure story):
    # on-prem (BGP/BFD over GRE), host to host (through the routers), egress (host SNAT).
    demo.start_container(lab, "host-2", "rsf-peer", {"overlay": "auto"})
    try:
        demo.container_addresses(lab, "host-2", "rsf-peer")
        others = {
            "onprem": (None, lab.topo.sites[0].client_ns, ipv4),
            "host_to_host": (failover.container_enter(lab, "host-2", "rsf-peer"), None, ipv4),
            "egress": (failover.container_enter(lab, "host-1", "rsf-web"), None, str(egress.WWW_V4)),
        }
        _cycles(lab, ipv4, others)
    finally:
        demo.remove_container(lab, "host-2", "rsf-peer")


def _cycles(lab, ipv4, others):
    runs = []
    for i in range(CYCLES):
        run = failover.run_once(lab, ipv4, str(lab.plan.pools_v4[0]), others=others)
        say(f"cycle {i + 1}: {json.dumps(run.to_json())}")
        runs.append(run)
        assert (run.router, run.takeover) == ("router-1", "router-2")
        assert run.outage_s < 2.0, run.to_json()
        # The return is lossless: router-1 holds its announcement until its hosts are back.
        assert run.lost_after_thaw == [], run.to_json()
        assert run.others["onprem"][0] < 2.0 and run.others["host_to_host"][0] < 2.0, run.to_json()
        # Egress never crosses a router: the freeze does not touch it.
        assert run.others["egress"][0] < 0.5 and run.others["egress"][1] == 0, run.to_json()


def test_frr_holds_a_stale_announcement_for_the_agent(lab, container):
    """The thaw race without the agent's help (docs/vpc-failover.md, "Coming back", 5).

    router-1 is frozen, then thawed with its agent kept stopped: bgpd resumes with the
    planned route-map (RS-OUT) in place and nothing holds it. Its first UPDATE to the route
    server must still wait the coalesce time (10 s): the window the agent has to hold.
    """
    import signal

    pool = str(lab.plan.pools_v4[0])
    failover.wait_for(lambda: failover.vpc_choice(lab, pool) == "router-1", 60, "the pool on router-1")
    ns = lab.topo.instance("router-1").ns
    pids = failover.namespace_pids(ns)
    agent = [p for p in pids if b"bin/overlay-agent" in Path(f"/proc/{p}/cmdline").read_bytes()]
    assert agent, "router-1's agent not found"

    def signal_all(which, sig):
        for pid in which:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    try:
        signal_all(pids, signal.SIGSTOP)
        failover.wait_for(lambda: failover.vpc_choice(lab, pool) == "router-2", 30, "the pool on router-2")
        signal_all([p for p in pids if p not in agent], signal.SIGCONT)
        t_thaw = time.time()
        t_back = failover.wait_for(lambda: failover.vpc_choice(lab, pool) == "router-1", 60, "the pool back")
    finally:
        signal_all(pids, signal.SIGCONT)
    say(f"agent stopped: tables back on router-1 {t_back - t_thaw:.2f} s after the thaw")
    assert t_back - t_thaw >= 8.0


# -- egress (docs/egress.md) ---------------------------------------------------------------


def fetch(lab, host: str, name: str, url: str) -> str | None:
    """busybox wget inside the container: the body, or None when the fetch failed."""
    client = demo.docker_client(lab, host)
    try:
        # busybox's own timeout: Debian's busybox 1.35 wget crashes (SIGSEGV) on -T.
        code, out = client.containers.get(name).exec_run(["busybox", "timeout", "5", "wget", "-qO-", url])
    finally:
        client.close()
    return out.decode().strip() if code == 0 else None


def test_container_reaches_the_internet_and_the_s3_endpoint_v4_and_v6(lab, container):
    from lab import egress

    host = lab.topo.instance("host-1")
    # IPv4: host SNAT to its ENI address, then the AZ's NAT gateway (its EIP).
    assert (
        fetch(lab, "host-1", "rsf-web", f"http://{egress.WWW_V4}/")
        == f"internet {egress.nat_eip(host.segment.az_index)}"
    )
    # IPv6: the pools are ULA; NAT66 to the host's own IPv6, out through the egress-only gateway.
    assert fetch(lab, "host-1", "rsf-web", f"http://[{egress.WWW_V6}]/") == f"internet {host.address_v6}"
    # The gateway endpoint stand-in sees the host's private address (routed in the VPC).
    assert fetch(lab, "host-1", "rsf-web", f"http://{egress.S3_ADDR}/") == f"s3-endpoint {host.address}"


def test_egress_needs_the_host_snat_and_the_internet_cannot_come_in(lab, container):
    from lab import egress
    from lab.underlay import sh

    host = lab.topo.instance("host-1")
    ipv4, ipv6 = container
    sh(host.ns, "nft", "delete", "table", "inet", "overlay_egress")
    try:
        # A container's own address has no NAT mapping: the IGW drops it (and on AWS the
        # reply would reach a router ENI that never saw the flow: review F8).
        assert fetch(lab, "host-1", "rsf-web", f"http://{egress.WWW_V4}/") is None
    finally:
        egress.apply_host_rules(lab.plan, lab.topo)
    assert fetch(lab, "host-1", "rsf-web", f"http://{egress.WWW_V4}/") is not None
    # Nothing on the internet opens a connection into the VPC: no route to the pools from
    # outside, and the egress-only gateway drops unsolicited IPv6.
    assert demo.http_get(egress.www_ns(lab.plan.stack), ipv4, timeout=2) is None
    assert demo.http_get(egress.www_ns(lab.plan.stack), str(host.address_v6), timeout=2) is None
