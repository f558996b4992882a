"""The container-wiring reconciler against in-memory fakes of the kernel (netlink shim) and Docker."""

from __future__ import annotations

import ipaddress
import threading

import pytest

from lab.poll import wait_until
from overlay_agent.containers import ContainerReconciler
from overlay_agent.docker_shim import Event
from overlay_agent.wiring import MOVE_SPAN, STEADY_METRIC, route_metric, veth_name
from overlay_agent.docker_shim import ContainerInfo
from tests.support.fakes import PROTO, SHARED, FakeDocker, FakeKernel, cfg


@pytest.fixture
def world():
    kernel = FakeKernel()
    docker = FakeDocker(kernel)
    return kernel, docker


def reconciler(kernel, docker, c=None):
    return ContainerReconciler(c or cfg(), docker, kernel)


def test_auto_containers_get_lowest_free_addresses_and_tagged_host_routes(world):
    kernel, docker = world
    a = docker.add("a", {"overlay": "auto"})
    b = docker.add("b", {"overlay.anycast": "false"})
    docker.add("plain", {})  # not opted in
    rec = reconciler(kernel, docker)
    assert rec.resync()
    assert kernel.our_routes() == {
        "100.64.0.1/32": (veth_name(a.id),),
        "fd00:64::1/128": (veth_name(a.id),),
        "100.64.0.2/32": (veth_name(b.id),),
        "fd00:64::2/128": (veth_name(b.id),),
    }
    spec = kernel.links[veth_name(a.id)]["spec"]
    assert spec.ifname == "eth0" and spec.via4 == ("0.0.0.0/0",) and spec.via6 == ("::/0",)
    assert len(kernel.links) == 2


def test_container_with_another_network_gets_ovl0_and_routes_for_the_pools_only(world):
    kernel, docker = world
    c = docker.add("multi", {"overlay.ipv4": "100.64.3.3"}, networks=("backend",), network_mode="backend")
    reconciler(kernel, docker).resync()
    spec = kernel.links[veth_name(c.id)]["spec"]
    assert spec.ifname == "ovl0" and spec.via4 == ("100.64.0.0/16",) and spec.via6 == ("fd00:64::/48",)


def test_bad_input_is_refused_for_that_container_only(world):
    kernel, docker = world
    good = docker.add("good", {"overlay.ipv4": "100.64.1.1", "overlay.ipv6": "fd00:64::1:1"})
    docker.add("unparsable", {"overlay.ipv4": "100.64.1"})
    docker.add("outside", {"overlay.ipv4": "192.0.2.1"})
    docker.add("outside6", {"overlay.ipv6": "2001:db8::1"})
    docker.add("dupe", {"overlay.ipv4": "100.64.1.1"})
    docker.add("hostnet", {"overlay": "auto"}, network_mode="host")
    docker.add("shared", {"overlay": "auto"}, network_mode="container:" + "f" * 64)
    docker.add("typo", {"overlay.ip4": "100.64.1.9"})
    rec = reconciler(kernel, docker)
    rec.resync()
    assert set(kernel.our_routes()) == {"100.64.1.1/32", "fd00:64::1:1/128"}
    assert kernel.our_routes()["100.64.1.1/32"] == (veth_name(good.id),)
    reasons = {r["name"]: r["reason"] for r in rec.status_rows() if r["state"] == "error"}
    assert reasons == {
        "unparsable": "bad_label",
        "outside": "outside_pools",
        "outside6": "outside_pools",
        "dupe": "duplicate",
        "hostnet": "host_network",
        "shared": "shared_netns",
        "typo": "bad_label",
    }
    errors = {r["name"]: r["error"] for r in rec.status_rows() if r["state"] == "error"}
    assert "192.0.2.1 is outside the pools" in errors["outside"]
    assert "already used by container good" in errors["dupe"]
    # Reported once (log + metric), not once per pass.
    rec.resync()
    rec.resync()
    assert rec.metrics.errors.labels("duplicate")._value.get() == 1
    assert rec.metrics.errors.labels("outside_pools")._value.get() == 2


def test_duplicate_goes_to_the_container_already_wired_and_the_other_follows_when_it_leaves(world):
    kernel, docker = world
    first = docker.add("first", {"overlay.ipv4": "100.64.2.2"})
    rec = reconciler(kernel, docker)
    rec.resync()
    second = docker.add("second", {"overlay.ipv4": "100.64.2.2"})
    # Make the newcomer look older: the wired one must still keep the address.
    docker.containers[second.id] = ContainerInfo(**{**vars(second), "created": -1.0})
    rec.resync()
    assert kernel.our_routes()["100.64.2.2/32"] == (veth_name(first.id),)
    docker.stop(first)
    rec.handle_events([Event(first.id, "die", 0)])
    assert kernel.our_routes()["100.64.2.2/32"] == (veth_name(second.id),)


def test_anycast_on_both_gives_ecmp_and_the_survivor_is_never_withdrawn(world):
    kernel, docker = world
    lab = {"overlay.ipv4": "100.64.4.4", "overlay.ipv6": "fd00:64::4:4", "overlay.anycast": "true"}
    a, b = docker.add("a", lab), docker.add("b", lab)
    rec = reconciler(kernel, docker)
    rec.resync()
    both = tuple(sorted((veth_name(a.id), veth_name(b.id))))
    assert kernel.our_routes()["100.64.4.4/32"] == both
    kernel.ops.clear()
    docker.containers.pop(a.id)  # stopping: Docker says so before the namespace is gone
    rec.handle_events([Event(a.id, "stop", 0)])
    assert kernel.ops[0] == ("route_set", "100.64.4.4/32", (veth_name(b.id),))
    assert ("unwire", veth_name(a.id)) in kernel.ops
    assert not any(op[0] == "route_del" for op in kernel.ops)
    assert kernel.our_routes()["100.64.4.4/32"] == (veth_name(b.id),)
    assert kernel.our_routes()["fd00:64::4:4/128"] == (veth_name(b.id),)


def test_anycast_needs_the_label_on_both(world):
    kernel, docker = world
    docker.add("a", {"overlay.ipv4": "100.64.4.4"})
    docker.add("b", {"overlay.ipv4": "100.64.4.4", "overlay.anycast": "true"})
    rec = reconciler(kernel, docker)
    rec.resync()
    assert [r["reason"] for r in rec.status_rows() if r["name"] == "b"] == ["duplicate"]


def test_agent_restart_rebuilds_from_the_kernel_and_changes_nothing(world):
    kernel, docker = world
    for i in range(6):
        docker.add(f"c{i}", {"overlay": "auto"} if i % 2 else {"overlay.ipv4": f"100.64.8.{i + 1}"})
    first = reconciler(kernel, docker)
    first.resync()
    before = kernel.our_routes()
    rows = {r["name"]: (r["ipv4"], r["ipv6"]) for r in first.status_rows()}
    kernel.ops.clear()
    second = reconciler(kernel, docker)  # a new process: no memory, no state file
    second.resync()
    assert kernel.ops == []
    assert kernel.our_routes() == before
    assert {r["name"]: (r["ipv4"], r["ipv6"]) for r in second.status_rows()} == rows


def test_docker_unreachable_withdraws_nothing(world):
    kernel, docker = world
    docker.add("a", {"overlay": "auto"})
    rec = reconciler(kernel, docker)
    rec.resync()
    before = kernel.our_routes()
    docker.down = True
    kernel.ops.clear()
    assert rec.resync() is False
    rec2 = reconciler(kernel, docker)
    assert rec2.resync() is False
    rec2.handle_events([Event("x" * 64, "start", 0, {"overlay": "auto"})])
    assert kernel.ops == [] and kernel.our_routes() == before


def test_die_withdraws_routes_before_the_veth_goes(world):
    kernel, docker = world
    c = docker.add("a", {"overlay": "auto"})
    rec = reconciler(kernel, docker)
    rec.resync()
    kernel.ops.clear()
    docker.containers.pop(c.id)  # the namespace is still there (the kernel destroys it later)
    rec.handle_events([Event(c.id, "die", 0)])
    kinds = [op[0] for op in kernel.ops]
    assert kinds == ["route_del", "route_del", "unwire"]
    assert kernel.our_routes() == {} and kernel.links == {}


def test_container_that_exits_before_it_is_wired(world):
    kernel, docker = world
    ok = docker.add("ok", {"overlay": "auto"})
    gone = docker.add("gone", {"overlay": "auto"})
    kernel.alive.discard(gone.pid)  # Docker still says running; the process is already gone
    rec = reconciler(kernel, docker)
    rec.handle_events([Event(gone.id, "start", 0, {"overlay": "auto"}), Event(ok.id, "start", 0, {"overlay": "auto"})])
    assert set(kernel.links) == {veth_name(ok.id)}
    row = next(r for r in rec.status_rows() if r["name"] == "gone")
    assert row["reason"] == "exited" and "exited before it was wired" in row["error"]
    assert rec.metrics.errors.labels("exited")._value.get() == 1


def test_wiring_failure_is_reported_and_retried(world):
    kernel, docker = world
    c = docker.add("a", {"overlay": "auto"})
    kernel.fail_wire.add(veth_name(c.id))
    rec = reconciler(kernel, docker)
    rec.resync()
    assert [r["reason"] for r in rec.status_rows()] == ["wiring_failed"]
    assert kernel.our_routes() == {}
    kernel.fail_wire.clear()
    rec.resync()
    assert [r["state"] for r in rec.status_rows()] == ["routed"]


def test_health_withdraw_routes_only_while_healthy(world):
    kernel, docker = world
    c = docker.add("h", {"overlay.health": "withdraw"}, health="starting")
    rec = reconciler(kernel, docker)
    rec.resync()
    assert veth_name(c.id) in kernel.links and kernel.our_routes() == {}
    assert rec.status_rows()[0]["state"] == "withdrawn (health starting)"
    docker.containers[c.id] = ContainerInfo(**{**vars(c), "health": "healthy"})
    rec.handle_events([Event(c.id, "health_status", 0)])
    assert set(kernel.our_routes()) == {"100.64.0.1/32", "fd00:64::1/128"}
    docker.containers[c.id] = ContainerInfo(**{**vars(c), "health": "unhealthy"})
    rec.handle_events([Event(c.id, "health_status", 0)])
    assert kernel.our_routes() == {} and veth_name(c.id) in kernel.links


def test_only_our_protocol_is_touched_and_foreign_addresses_are_not_allocated(world):
    kernel, docker = world
    kernel.put("100.64.0.1/32", {1}, 4)  # someone's static route
    kernel.put("100.64.0.50/32", {1}, PROTO)  # ours, stale
    kernel.links["ovcdeadbeef0000"] = {"index": 7, "alias": None, "pid": 0}  # half-made by a crash
    c = docker.add("a", {"overlay": "auto"})
    rec = reconciler(kernel, docker)
    rec.resync()
    assert kernel.routes[(ipaddress.ip_network("100.64.0.1/32"), 0)][1] == 4
    assert not kernel.has("100.64.0.50/32")
    assert "ovcdeadbeef0000" not in kernel.links
    assert kernel.our_routes()["100.64.0.2/32"] == (veth_name(c.id),)


def test_auto_never_takes_an_address_a_label_asks_for(world):
    kernel, docker = world
    auto = docker.add("auto", {"overlay": "auto"})
    docker.add("explicit", {"overlay.ipv4": "100.64.0.1"})
    reconciler(kernel, docker).resync()
    assert kernel.our_routes()["100.64.0.2/32"] == (veth_name(auto.id),)


def test_block_exhaustion_is_a_clear_error(world):
    kernel, docker = world
    for i in range(3):
        docker.add(f"c{i}", {"overlay": "auto"})
    rec = reconciler(kernel, docker, cfg(block4="100.64.0.0/30", block6="fd00:64::/126"))
    rec.resync()
    rows = {r["name"]: r for r in rec.status_rows()}
    assert rows["c0"]["ipv4"] == "100.64.0.1" and rows["c1"]["ipv4"] == "100.64.0.2"
    assert rows["c2"]["reason"] == "pool_exhausted" and "100.64.0.0/30" in rows["c2"]["error"]


def test_restarted_container_is_rewired_into_its_new_namespace(world):
    kernel, docker = world
    c = docker.add("r", {"overlay": "auto"})
    rec = reconciler(kernel, docker)
    rec.resync()
    # die and start arrive in one batch; the old veth still exists (namespace teardown is
    # asynchronous in the kernel), the container now runs as a new process.
    docker._pid += 1
    kernel.alive.add(docker._pid)
    docker.containers[c.id] = ContainerInfo(**{**vars(c), "pid": docker._pid})
    rec.handle_events([Event(c.id, "die", 0), Event(c.id, "start", 1)])
    assert kernel.links[veth_name(c.id)]["pid"] == docker._pid
    assert kernel.our_routes()["100.64.0.1/32"] == (veth_name(c.id),)


def test_events_for_containers_that_did_not_opt_in_cost_nothing(world):
    kernel, docker = world
    rec = reconciler(kernel, docker)
    rec.resync()
    docker.down = True  # any Docker call would now fail loudly
    rec.handle_events([Event("a" * 64, "start", 0, {"com.example": "x"})])
    assert kernel.ops == []


def test_status_file_is_written_atomically(world, tmp_path):
    kernel, docker = world
    docker.add("a", {"overlay": "auto"})
    rec = ContainerReconciler(cfg(), docker, kernel, status_path=tmp_path / "s.json")
    rec.resync()
    import json

    doc = json.loads((tmp_path / "s.json").read_text())
    assert doc["route_protocol"] == PROTO and doc["containers"][0]["state"] == "routed"
    assert not (tmp_path / "s.tmp").exists()


def test_start_event_of_a_container_already_gone_is_reported_and_stays_in_status(world):
    kernel, docker = world
    c = docker.add("quick", {"overlay": "auto"})
    docker.containers[c.id] = ContainerInfo(**{**vars(c), "running": False})
    kernel.alive.discard(c.pid)
    rec = reconciler(kernel, docker)
    rec.resync()
    rec.handle_events([Event(c.id, "start", 0, {"overlay": "auto", "name": "quick"})])
    rec.handle_events([Event(c.id, "die", 0, {"overlay": "auto", "name": "quick"})])
    rec.resync()
    rows = [r for r in rec.status_rows() if r["name"] == "quick"]
    assert [(r["reason"], r["error"]) for r in rows] == [("exited", "exited before it was wired")]
    assert rec.metrics.errors.labels("exited")._value.get() == 1
    assert kernel.links == {} and kernel.our_routes() == {}


def test_status_table_reads_the_agent_file(world, tmp_path):
    from overlay_agent import status

    kernel, docker = world
    docker.add("web", {"overlay.ipv4": "100.64.5.5"})
    docker.add("bad", {"overlay.ipv4": "192.0.2.9"})
    ContainerReconciler(cfg(), docker, kernel, status_path=tmp_path / "s.json").resync()
    out = status.table(status.collect(str(tmp_path / "s.json"), live=False))
    lines = out.splitlines()
    assert lines[0].split() == ["CONTAINER", "IPV4", "IPV6", "VETH", "ROUTE", "ANNOUNCED", "STATE"]
    web = next(ln for ln in lines if ln.startswith("web"))
    assert "100.64.5.5" in web and "routed" in web and "ovc" in web
    bad = next(ln for ln in lines if ln.startswith("bad"))
    assert "error outside_pools: address 192.0.2.9 is outside the pools" in bad
    assert lines[-1].startswith("2 containers, 1 with errors; route protocol 149; agent view 0 s old")


def test_tunnel_pins_of_our_protocol_outside_the_pools_are_left_alone(world):
    """The tunnel reconciler pins tunnel remotes with the same protocol; those are not ours to delete."""
    kernel, docker = world
    docker.add("a", {"overlay": "auto"})
    pin = ipaddress.ip_network("10.40.128.10/32")  # a router's address: outside the pools
    kernel.put(pin, {1}, PROTO)
    rec = reconciler(kernel, docker)
    assert rec.resync()
    assert kernel.routes[(pin, 0)] == (frozenset({1}), PROTO)
    assert not any(str(pin) in str(op) for op in kernel.ops)
    # and a stale container route of ours inside the pools still goes
    stale = ipaddress.ip_network("100.64.0.50/32")
    kernel.put(stale, {1}, PROTO)
    assert rec.resync()
    assert not kernel.has(stale) and kernel.has(pin)


def test_new_agent_document_reaches_the_running_loop(world):
    """A pool added to the stack: a container asking for an address in it is wired without a restart."""
    kernel, docker = world
    rec = reconciler(kernel, docker, cfg(resync=3600))
    stop = threading.Event()
    loop = threading.Thread(target=rec.run, args=(stop,), daemon=True)
    loop.start()
    try:
        c = docker.add("newpool", {"overlay.ipv4": "100.65.0.7"})
        rec.events.put("resync")
        wait_until(lambda: any(r.get("state") == "error" for r in rec.status_rows()), 5, 0.02, "the refusal")
        assert "100.65.0.7/32" not in kernel.our_routes()  # outside the pools: refused
        wider = cfg(resync=3600, pools4=("100.64.0.0/16", "100.65.0.0/16"), shared={"ipv4": ["100.65.0.0/24"]})
        rec.update_config(wider)
        wait_until(lambda: "100.65.0.7/32" in kernel.our_routes(), 5, 0.02, "the route in the new pool")
        assert kernel.our_routes()["100.65.0.7/32"] == (veth_name(c.id),)
    finally:
        stop.set()
        loop.join(timeout=5)


# -- moves: the route metric (MED) ---------------------------------------------------------

T2026 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def test_a_moving_address_gets_a_lower_metric_the_newer_its_container():
    assert route_metric(T2026 + 1, True) < route_metric(T2026, True) < STEADY_METRIC
    # whole seconds: the listing's integer Created and the inspect's nanoseconds agree
    assert route_metric(T2026 + 0.999, True) == route_metric(T2026, True)
    assert route_metric(T2026, False) == route_metric(T2026 + 99, False) == STEADY_METRIC
    # never 0 (IPv6 turns it into 1024), always below 2^24 (zebra keeps only 24 bits as metric)
    assert route_metric(0.0, True) == MOVE_SPAN
    assert all(0 < route_metric(T2026 + d, True) <= MOVE_SPAN for d in (0, 1, 10**6, 10**8, 10**9))
    assert STEADY_METRIC == 2**24 - 1 > MOVE_SPAN


def test_explicit_addresses_carry_the_move_metric_anycast_and_auto_the_steady_one(world):
    kernel, docker = world
    moving = docker.add("m", {"overlay.ipv4": "100.64.4.4"}, created=T2026)  # IPv6 from the block
    any4 = {"overlay.ipv4": "100.64.5.5", "overlay.ipv6": "fd00:64::5:5", "overlay.anycast": "true"}
    docker.add("a", any4, created=T2026 + 5)
    docker.add("b", any4, created=T2026 + 9)
    docker.add("auto", {"overlay": "auto"}, created=T2026 + 7)
    rec = reconciler(kernel, docker)
    rec.resync()
    assert kernel.metrics_of("100.64.4.4/32") == [route_metric(T2026, True)]
    v6 = rec.desired.wirings[moving.id].ipv6
    assert kernel.metrics_of(f"{v6}/128") == [STEADY_METRIC]
    assert kernel.metrics_of("100.64.5.5/32") == kernel.metrics_of("fd00:64::5:5/128") == [STEADY_METRIC]
    assert all(kernel.metrics_of(f"{d}") for d in kernel.our_routes())


def test_a_restarted_agent_reproduces_the_metrics_from_docker(world):
    kernel, docker = world
    for i in range(4):
        docker.add(f"c{i}", {"overlay.ipv4": f"100.64.8.{i + 1}"}, created=T2026 + i * 0.5)
    reconciler(kernel, docker).resync()
    kernel.ops.clear()
    # a new process, and a listing (whole-second Created) instead of the inspect's fractions
    docker.containers = {
        cid: ContainerInfo(**{**vars(c), "created": float(int(c.created))}) for cid, c in docker.containers.items()
    }
    reconciler(kernel, docker).resync()
    assert kernel.ops == []


def test_an_older_agents_route_is_replaced_make_before_break(world):
    """Routes at metric 0 (IPv4) and 1024 (IPv6) from before: the new metric goes in first, then the old goes."""
    kernel, docker = world
    c = docker.add("m", {"overlay.ipv4": "100.64.4.4", "overlay.ipv6": "fd00:64::4:4"}, created=T2026)
    rec = reconciler(kernel, docker)
    rec.resync()
    veth = veth_name(c.id)
    index = kernel.links[veth]["index"]
    # pretend an older agent made them: same veths, its metrics
    for dst, old in (("100.64.4.4/32", 0), ("fd00:64::4:4/128", 1024)):
        kernel.routes = {k: v for k, v in kernel.routes.items() if k[0] != ipaddress.ip_network(dst)}
        kernel.put(dst, {index}, PROTO, old)
    kernel.ops.clear()
    reconciler(kernel, docker).resync()
    new = route_metric(T2026, True)
    assert kernel.metrics_of("100.64.4.4/32") == kernel.metrics_of("fd00:64::4:4/128") == [new]
    for dst in ("100.64.4.4/32", "fd00:64::4:4/128"):
        ops = [op[0] for op in kernel.ops if op[1] == dst]
        assert ops == ["route_set", "route_del"], kernel.ops  # never a moment without a route
    kernel.ops.clear()
    reconciler(kernel, docker).resync()
    assert kernel.ops == []


def test_a_route_left_at_an_old_metric_is_dropped_and_the_current_one_kept(world):
    """An agent that died between adding the new-metric route and dropping the old one."""
    kernel, docker = world
    c = docker.add("m", {"overlay.ipv4": "100.64.4.4"}, created=T2026)
    reconciler(kernel, docker).resync()
    index = kernel.links[veth_name(c.id)]["index"]
    kernel.put("100.64.4.4/32", {index}, PROTO, STEADY_METRIC)  # the leftover (higher metric)
    kernel.ops.clear()
    reconciler(kernel, docker).resync()
    assert kernel.metrics_of("100.64.4.4/32") == [route_metric(T2026, True)]
    assert kernel.ops == [("route_del", "100.64.4.4/32")]


# -- who may announce what ------------------------------------------------------------------


def test_a_label_outside_this_hosts_block_and_the_shared_ranges_is_refused(world):
    kernel, docker = world
    other = docker.add("other", {"overlay.ipv4": "100.64.16.9"})  # another host's block
    other6 = docker.add("other6", {"overlay.ipv6": "fd00:64::10:9"})
    own = docker.add("own", {"overlay.ipv4": "100.64.0.9"})  # this host's block: fine
    shared = docker.add("shared", {"overlay.ipv4": "100.64.8.9", "overlay.ipv6": "fd00:64::8:9"})
    docker.add("witness", {"overlay": "auto"})
    rec = reconciler(kernel, docker)
    rec.resync()
    rows = {r["name"]: r for r in rec.status_rows()}
    for name, addr in (("other", "100.64.16.9"), ("other6", "fd00:64::10:9")):
        assert rows[name]["state"] == "error" and rows[name]["reason"] == "not_owned"
        assert rows[name]["error"] == (
            f"address {addr} is not this host's to announce: only its block "
            f"{'100.64.0.0/26' if '.' in addr else 'fd00:64::/112'} and the shared ranges "
            f"({', '.join(SHARED['ipv4' if '.' in addr else 'ipv6'])})"
        )
    assert veth_name(other.id) not in kernel.links and veth_name(other6.id) not in kernel.links
    routes = kernel.our_routes()
    assert "100.64.16.9/32" not in routes and "fd00:64::10:9/128" not in routes
    assert routes["100.64.0.9/32"] == (veth_name(own.id),)
    assert routes["100.64.8.9/32"] == routes["fd00:64::8:9/128"] == (veth_name(shared.id),)
    assert rows["witness"]["state"] == "routed"
    assert rec.metrics.errors.labels("not_owned")._value.get() == 2


def test_a_label_cannot_take_a_wired_auto_containers_address(world):
    """Security review finding 2: the wired auto container keeps its address; the label is refused."""
    kernel, docker = world
    victim = docker.add("victim", {"overlay": "auto"})
    rec = reconciler(kernel, docker)
    rec.resync()
    v4, v6 = rec.desired.wirings[victim.id].ipv4, rec.desired.wirings[victim.id].ipv6
    for labels in (
        {"overlay.ipv4": str(v4), "overlay.ipv6": str(v6)},
        {"overlay.ipv4": str(v4), "overlay.anycast": "true"},
    ):  # anycast on one side is not enough
        attacker = docker.add(f"attacker{len(labels)}", labels)
        rec.resync()
        row = next(r for r in rec.status_rows() if r["name"] == attacker.name)
        assert row["reason"] == "duplicate" and f"address {v4} is already used by container victim" in row["error"]
        assert kernel.our_routes()[f"{v4}/32"] == (veth_name(victim.id),)
        assert kernel.our_routes()[f"{v6}/128"] == (veth_name(victim.id),)
        docker.stop(attacker)
    # and a restarted agent (no memory) decides the same
    kernel.ops.clear()
    attacker = docker.add("late", {"overlay.ipv4": str(v4)})
    fresh = reconciler(kernel, docker)
    fresh.resync()
    assert [r["reason"] for r in fresh.status_rows() if r["name"] == "late"] == ["duplicate"]
    assert kernel.our_routes()[f"{v4}/32"] == (veth_name(victim.id),)


def test_anycast_in_the_shared_range_on_both_is_still_ecmp(world):
    kernel, docker = world
    labels = {"overlay.ipv4": "100.64.9.9", "overlay.anycast": "true"}
    a, b = docker.add("a", labels), docker.add("b", labels)
    reconciler(kernel, docker).resync()
    assert kernel.our_routes()["100.64.9.9/32"] == tuple(sorted((veth_name(a.id), veth_name(b.id))))
