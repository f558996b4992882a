"""The agent with real Docker and real FRR: wiring, announcement at the router, traffic, restarts, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from lab.poll import wait_until

pytestmark = [pytest.mark.root, pytest.mark.docker, pytest.mark.frr]


def _row(agent, name):
    doc = json.loads(agent.status().stdout)
    return next((r for r in doc["containers"] if r["name"] == name), None)


def test_router_learns_and_forgets_the_32_and_128_and_traffic_reaches_the_container(site, agent):
    c = site.run(labels={"overlay.ipv4": "100.64.7.1", "overlay.ipv6": "fd00:64::7:1"}, name="web1")
    want = {"100.64.7.1/32", "fd00:64::7:1/128"}
    wait_until(lambda: want <= site.router_fib(), 30, what="router FIB to learn the /32 and /128")
    veth = "ovc" + c.id[:12]
    assert site.host_routes()["100.64.7.1/32"] == veth
    assert site.host_routes()["fd00:64::7:1/128"] == veth
    # Traffic from the router namespace reaches httpd in the container, and comes back
    # (container default routes via 169.254.1.1 / fe80::1 to the host).
    assert site.fetch("100.64.7.1").strip() == "overlay-test"
    assert site.fetch("fd00:64::7:1").strip() == "overlay-test"

    c.stop(timeout=1)
    wait_until(lambda: not (want & site.router_fib()), 30, what="router FIB to forget the /32 and /128")
    assert not (want & set(site.host_routes()))
    assert veth not in site.host_links()


def test_auto_allocation_from_the_block_and_no_withdraw_when_the_agent_restarts(site, agent):
    names = [f"auto{i}" for i in range(5)]
    ctrs = [site.run(labels={"overlay": "auto"}, name=n) for n in names]
    wait_until(lambda: all((r := _row(agent, n)) and r["route"] for n in names), 20, what="5 auto containers routed")
    before = {n: (_row(agent, n)["ipv4"], _row(agent, n)["ipv6"]) for n in names}
    v4 = [a for a, _ in before.values()]
    assert len(set(v4)) == 5 and all(a.startswith("100.64.0.") for a in v4)
    prefixes = {f"{a}/32" for a, _ in before.values()} | {f"{b}/128" for _, b in before.values()}
    wait_until(lambda: prefixes <= site.router_fib(), 30, what="router to learn the auto addresses")

    # Watch both the host's kernel and the router's FIB while the agent restarts.
    watchers = [
        subprocess.Popen(["ip", "-n", n, "monitor", "route"], stdout=subprocess.PIPE, text=True)
        for n in (site.host, site.router)
    ]
    try:
        time.sleep(0.3)
        agent.stop(signal.SIGTERM)
        agent.start()
        agent.wait_ready()
        time.sleep(1.0)  # a full resync plus FRR's reaction time
    finally:
        for w in watchers:
            w.terminate()
    seen = "".join(w.communicate(timeout=5)[0] for w in watchers)
    deleted = [
        line
        for line in seen.splitlines()
        if line.startswith("Deleted") and any(p.split("/")[0] + " " in line + " " for p in prefixes)
    ]
    assert deleted == [], deleted
    after = {n: (_row(agent, n)["ipv4"], _row(agent, n)["ipv6"]) for n in names}
    assert after == before  # allocation rebuilt from the kernel, no state file
    assert prefixes <= site.router_fib()

    # A new auto container never gets an address in use.
    extra = site.run(labels={"overlay": "auto"}, name="auto-new")
    wait_until(lambda: (r := _row(agent, "auto-new")) and r["route"], 20, what="auto-new routed")
    assert _row(agent, "auto-new")["ipv4"] not in v4
    for c in ctrs + [extra]:
        c.remove(force=True)


def test_bad_input_is_refused_per_container_and_others_are_wired(site, agent):
    site.run(labels={"overlay.ipv4": "100.64.9.1"}, name="good")
    site.run(labels={"overlay.ipv4": "not-an-ip"}, name="badlabel")
    site.run(labels={"overlay.ipv4": "10.99.0.1"}, name="outside")
    site.run(labels={"overlay.ipv4": "100.64.9.1"}, name="dupe")  # same address, no anycast
    site.run("sleep", "600", labels={"overlay": "auto"}, name="hostnet", network_mode="host")

    wait_until(lambda: (r := _row(agent, "good")) and r["route"], 20, what="good container routed")
    wait_until(lambda: "100.64.9.1/32" in site.router_fib(), 30, what="router to learn the good container")
    expected = {"badlabel": "bad_label", "outside": "outside_pools", "dupe": "duplicate", "hostnet": "host_network"}
    wait_until(
        lambda: all((r := _row(agent, n)) and r["reason"] == why for n, why in expected.items()),
        20,
        what="errors for the four bad containers",
    )
    assert site.host_routes()["100.64.9.1/32"].startswith("ovc")

    logs = agent.log_records()
    for name, reason in expected.items():
        lines = [r for r in logs if r.get("container") == name and r.get("reason") == reason]
        assert len(lines) == 1, (name, reason, lines)  # one clear line, not one per pass
        assert name in lines[0]["msg"] and "Traceback" not in agent.log_text()
    metrics = agent.metrics()
    for reason in expected.values():
        assert f'overlay_container_errors_total{{reason="{reason}"}} 1.0' in metrics
    table = agent.status(json_out=False)
    assert table.returncode == 1  # errors present
    assert "outside_pools" in table.stdout and "10.99.0.1 is outside the pools" in table.stdout


def test_stop_kill_restart_withdraw_at_once_and_nothing_leaks(site, agent):
    links_before = set(site.host_links())
    c = site.run(
        labels={"overlay.ipv4": "100.64.11.1", "overlay.ipv6": "fd00:64::11:1"},
        name="life",
        restart_policy={"Name": "no"},
    )
    want = {"100.64.11.1/32", "fd00:64::11:1/128"}
    wait_until(lambda: want <= set(site.host_routes()), 10, what="routes for life")

    c.kill()
    wait_until(lambda: not (want & set(site.host_routes())), 10, what="routes gone after kill")
    c.start()
    wait_until(lambda: want <= set(site.host_routes()), 10, what="routes back after start")
    c.restart(timeout=0)
    wait_until(lambda: want <= set(site.host_routes()), 10, what="routes back after restart")
    assert site.host_routes()["100.64.11.1/32"] == "ovc" + c.id[:12]
    # The router saw a withdraw and a re-announce; traffic reaches the restarted process.
    wait_until(
        lambda: site.fetch("100.64.11.1", timeout=2).strip() == "overlay-test",
        20,
        what="HTTP to the restarted container",
    )
    c.stop(timeout=0)
    wait_until(lambda: not (want & set(site.host_routes())), 10, what="routes gone after stop")
    c.remove()
    wait_until(lambda: set(site.host_links()) == links_before, 10, what="no leftover links")


def test_health_withdraw_follows_docker_health(site, agent):
    # Healthy while /tmp/ok exists; the check runs every 200 ms.
    c = site.run(
        "sh",
        "-c",
        "touch /tmp/ok; exec httpd -f -p 80 -h /www",
        labels={"overlay.ipv4": "100.64.12.1", "overlay.health": "withdraw"},
        name="gated",
        healthcheck={
            "test": ["CMD", "sh", "-c", "test -e /tmp/ok"],
            "interval": 200_000_000,
            "timeout": 1_000_000_000,
            "retries": 1,
            "start_period": 0,
        },
    )
    wait_until(lambda: "100.64.12.1/32" in site.router_fib(), 30, what="announce once healthy")
    c.exec_run(["sh", "-c", "rm /tmp/ok"])
    wait_until(lambda: "100.64.12.1/32" not in site.host_routes(), 15, what="withdraw when unhealthy")
    wait_until(lambda: "100.64.12.1/32" not in site.router_fib(), 30, what="router forgets when unhealthy")
    assert _row(agent, "gated")["state"].startswith("withdrawn")
    c.exec_run(["sh", "-c", "touch /tmp/ok"])
    wait_until(lambda: "100.64.12.1/32" in site.host_routes(), 15, what="route back when healthy again")


def test_anycast_duplicate_on_one_host_gets_ecmp(site, agent):
    labels = {"overlay.ipv4": "100.64.13.1", "overlay.ipv6": "fd00:64::13:1", "overlay.anycast": "true"}
    a = site.run(labels=labels, name="any-a")
    b = site.run(labels=labels, name="any-b")
    for p in ("100.64.13.1/32", "fd00:64::13:1/128"):
        wait_until(lambda p=p: site.host_routes().get(p) == "multipath", 15, what=f"ECMP host route {p}")
    for addr in ("100.64.13.1", "fd00:64::13:1"):
        wait_until(lambda addr=addr: site.fetch(addr, timeout=2).strip() == "overlay-test", 20, what=f"HTTP to {addr}")
    a.remove(force=True)
    for p in ("100.64.13.1/32", "fd00:64::13:1/128"):
        wait_until(lambda p=p: site.host_routes().get(p) == "ovc" + b.id[:12], 15, what=f"one path left for {p}")
    assert site.fetch("fd00:64::13:1", timeout=3).strip() == "overlay-test"


def test_status_table_and_metrics(site, agent):
    site.run(labels={"overlay.ipv4": "100.64.14.1"}, name="shown")
    wait_until(lambda: "100.64.14.1/32" in site.router_fib(), 30, what="router learns shown")
    out = agent.status(json_out=False)
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("shown"))
    assert "100.64.14.1" in line and "ovc" in line and "routed" in line
    assert line.split()[4:6] == ["yes", "yes"]  # route present, announced by the local FRR
    m = agent.metrics()
    assert "overlay_containers_wired 1.0" in m
    assert 'overlay_routes_installed{family="ipv4"} 1.0' in m
    assert "overlay_wiring_latency_seconds_count" in m


def test_frr_restart_and_docker_events_reconnect(site, agent):
    site.run(labels={"overlay.ipv4": "100.64.15.1"}, name="survivor")
    wait_until(lambda: "100.64.15.1/32" in site.router_fib(), 30, what="router learns survivor")
    # FRR restart on the host: zebra re-reads the kernel routes; the agent does nothing.
    site.frr_host.restart()
    wait_until(lambda: "100.64.15.1/32" in site.router_fib(), 60, what="router re-learns after FRR restart")
    assert "100.64.15.1/32" in site.host_routes()

    # Docker daemon restart without live-restore: containers die, routes go; the agent
    # reconnects by itself and wires what starts afterwards.
    site.docker.close()
    site.dockerd.stop(remove_containers=False, keep_dir=True)
    wait_until(lambda: "100.64.15.1/32" not in site.host_routes(), 20, what="routes gone with the daemon")
    site.dockerd.start()
    site.docker = site.dockerd.client()
    site.run(labels={"overlay.ipv4": "100.64.15.2"}, name="after-restart")
    wait_until(lambda: "100.64.15.2/32" in site.host_routes(), 30, what="wired after docker restart")
    assert agent.proc.poll() is None


def _docker_event_retries(agent) -> int:
    """Times the agent lost (or could not open) the Docker event stream, from its log."""
    return sum(1 for r in agent.log_records() if r.get("reason") == "docker_events")


def test_docker_live_restore_restart_withdraws_nothing(site, agent):
    # Switch the daemon to live-restore (no containers run yet in this test).
    site.docker.close()
    site.dockerd.stop(remove_containers=True, keep_dir=True)
    site.dockerd.live_restore = True
    site.dockerd.start()
    site.docker = site.dockerd.client()
    c = site.run(labels={"overlay.ipv4": "100.64.16.1", "overlay.ipv6": "fd00:64::16:1"}, name="lives-on")
    want = {"100.64.16.1/32", "fd00:64::16:1/128"}
    wait_until(lambda: want <= site.router_fib(), 30, what="router learns lives-on")
    c.reload()
    pid = c.attrs["State"]["Pid"]
    watchers = [
        subprocess.Popen(["ip", "-n", n, "monitor", "route"], stdout=subprocess.PIPE, text=True)
        for n in (site.host, site.router)
    ]
    try:
        time.sleep(0.3)
        retries = _docker_event_retries(agent)
        site.docker.close()
        site.dockerd.stop(remove_containers=False, keep_dir=True)
        # The agent sees the event stream break and keeps retrying (one log line per retry).
        wait_until(lambda: _docker_event_retries(agent) >= retries + 3, 20, 0.1, what="agent retrying Docker events")
        assert os.path.exists(f"/proc/{pid}"), "live-restore should keep the container running"
        site.dockerd.start()
        site.docker = site.dockerd.client()
        site.run(labels={"overlay.ipv4": "100.64.16.2"}, name="after-live-restore")
        wait_until(lambda: "100.64.16.2/32" in site.host_routes(), 30, what="agent reconnected and wires again")
        time.sleep(1)
    finally:
        for w in watchers:
            w.terminate()
    seen = "".join(w.communicate(timeout=5)[0] for w in watchers)
    deleted = [
        ln for ln in seen.splitlines() if ln.startswith("Deleted") and ("100.64.16.1 " in ln or "fd00:64::16:1 " in ln)
    ]
    assert deleted == []
    assert want <= set(site.host_routes()) and want <= site.router_fib()
    assert site.docker.containers.get(c.id).status == "running"


def test_containers_that_exit_before_they_are_wired(site, agent):
    site.run(labels={"overlay.ipv4": "100.64.17.1"}, name="steady")
    quick = [site.run("true", labels={"overlay": "auto"}, name=f"quick{i}") for i in range(5)]
    wait_until(lambda: (r := _row(agent, "steady")) and r["route"], 20, what="steady routed")

    def exited():
        doc = json.loads(agent.status().stdout)
        return [r["name"] for r in doc["containers"] if r["reason"] == "exited"]

    names = wait_until(exited, 20, what="an 'exited' row in status")
    assert set(names) <= {f"quick{i}" for i in range(5)}
    logged = [r for r in agent.log_records() if r.get("reason") == "exited"]
    assert {r["container"] for r in logged} == set(names)
    assert all("exited before it was wired" in r["msg"] for r in logged)
    assert f'overlay_container_errors_total{{reason="exited"}} {float(len(names))}' in agent.metrics()
    # Nothing of theirs is left, and the steady container is untouched.
    wait_until(
        lambda: set(site.host_routes()) == {"100.64.17.1/32", _row(agent, "steady")["ipv6"] + "/128"},
        10,
        what="only steady's routes",
    )
    assert not any("ovc" + c.id[:12] in site.host_links() for c in quick)


def test_oom_killed_container_is_withdrawn(site, agent):
    # Wired during the first second, then the shell doubles a string until the 16 MB
    # memory limit kills it.
    c = site.run(
        "sh",
        "-c",
        "sleep 1; a=xxxxxxxx; while true; do a=$a$a; done",
        labels={"overlay.ipv4": "100.64.18.1"},
        name="hog",
        mem_limit="16m",
        memswap_limit="16m",
    )
    wait_until(lambda: "100.64.18.1/32" in site.host_routes(), 10, what="hog wired")
    wait_until(lambda: site.docker.containers.get(c.id).status == "exited", 30, what="hog OOM-killed")
    assert site.docker.containers.get(c.id).attrs["State"]["OOMKilled"] is True
    wait_until(lambda: "100.64.18.1/32" not in site.host_routes(), 10, what="hog's routes gone")
    assert "ovc" + c.id[:12] not in site.host_links()


def test_container_with_a_docker_network_gets_ovl0_and_routes_for_the_pools(site, agent):
    net = site.docker.networks.create(
        "ovt-backend",
        driver="bridge",
        ipam={"Driver": "default", "Config": [{"Subnet": "10.201.0.0/24"}]},
        options={"com.docker.network.bridge.name": "ovtbr0"},
    )
    try:
        c = site.run(labels={"overlay.ipv4": "100.64.19.1"}, name="two-nets", network_mode="ovt-backend")
        wait_until(lambda: "100.64.19.1/32" in site.router_fib(), 30, what="router learns two-nets")
        c.reload()
        pid = c.attrs["State"]["Pid"]
        addrs = subprocess.run(
            ["nsenter", "-t", str(pid), "-n", "ip", "-o", "addr"], capture_output=True, text=True, check=True
        ).stdout
        routes = subprocess.run(
            ["nsenter", "-t", str(pid), "-n", "ip", "route"], capture_output=True, text=True, check=True
        ).stdout
        assert any("ovl0" in ln and "100.64.19.1/32" in ln for ln in addrs.splitlines())
        assert "100.64.0.0/16 via 169.254.1.1 dev ovl0" in routes
        assert "default via 10.201.0.1 dev eth0" in routes  # Docker's own default route is kept
        # The router reaches the overlay address; the answer leaves by Docker's network
        # (the pools only are routed over ovl0) and the host forwards it back.
        wait_until(
            lambda: site.fetch("100.64.19.1", timeout=2).strip() == "overlay-test",
            20,
            what="HTTP over the overlay address",
        )
        c.remove(force=True)
    finally:
        net.remove()
