"""The production boot path for real: a router and a docker host as Debian 12 VMs (qemu, TCG).

Each VM boots the lab image (the stack image's recipe, image/provision.sh, baked natively) with
the user data the program renders (NoCloud seed), so cloud-init, the retrying install unit
(services started in order, the agent bundle from the stack's bucket), systemd units, dockerd
as Debian starts it (iptables on) and kernel GRE (Debian's cloud kernel has ip_gre) all run as
on EC2. The on-prem router and client are
namespaces on this machine (userspace GRE). `python -m lab up --vms` is the same code.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from lab import daemon, stack
from lab.demo import http_get
from lab.vm import background, machine
from lab.vm import stack as vmstack

STACKS = Path(__file__).resolve().parent / "stacks"
STACK = "vmlab"
# On by default where the host can run it (root, qemu and debootstrap: scripts/setup.sh
# installs them); OVERLAY_VM=0 leaves the tier out.
pytestmark = [
    pytest.mark.skipif(os.environ.get("OVERLAY_VM") == "0", reason="vm tier: OVERLAY_VM=0"),
    pytest.mark.vm,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, taps, qemu)"),
    pytest.mark.skipif(
        shutil.which("qemu-system-x86_64") is None or shutil.which("debootstrap") is None,
        reason="qemu-system-x86 / debootstrap not installed (scripts/setup.sh)",
    ),
    pytest.mark.timeout(3600),
]
# s: the background boot (tests/vm/conftest.py), once raised to normal priority, to BGP
# Established everywhere: the image build and the whole boot when the background got no CPU
# at all (idle: image from nothing about 4 min, VMs started -> BGP Established about 150 s;
# README "Measured"), with room for load.
FOREGROUND_TIMEOUT = 1500


@pytest.fixture(scope="module")
def vmlab():
    lab = stack.Lab.load(STACK, STACKS, say=lambda line: print(line, flush=True))
    t0 = time.monotonic()
    launch = background.current(STACK)
    try:
        if launch is None:
            vmstack.up(lab)
            lab.background = None
        else:
            launch.claimed = True
            idle_for = time.time() - launch.started
            rc, waited = background.foreground(launch, FOREGROUND_TIMEOUT)
            print(f"\nlab up --vms in the background (log {launch.log}):\n{launch.log.read_text(errors='replace')}")
            if rc != 0:
                pytest.fail(
                    f"lab up --vms {STACK} in the background: "
                    + (f"exit {rc}" if rc is not None else f"not up {waited:.0f} s after it was raised")
                    + f": {background.tail(launch)}"
                )
            # The VMs ran at idle priority beside the other tiers: a starved VM misses its
            # BFD (300 ms x 3) and BGP timers, so sessions may have dropped and come back.
            print(vmstack.wait_sessions(lab))
            lab.background = (idle_for, waited)
        # VMs started -> every BGP session Established (`up` writes up.json at the end).
        started = min(float((vm.dir / "t0").read_text()) for _, vm in vmstack.vms(lab))
        lab.boot_seconds = (lab.state / "up.json").stat().st_mtime - started
        lab.up_seconds = time.monotonic() - t0
        yield lab
    finally:
        # The serial consoles outlive the run (the first boot's whole story, for a failure).
        print(f"VM consoles kept in {vmstack.keep_consoles(lab)}")
        stack.down(lab, quiet=True)
        # Nothing of the lab is left: no qemu, no namespace, no tap.
        assert not daemon.matching_pids(str(lab.state).encode())


def _vm(lab, name) -> machine.Channel:
    inst, vm = next((i, v) for i, v in vmstack.vms(lab) if i.name == name)
    return machine.Channel(vm)


def _ok(ch: machine.Channel, cmd, timeout: float = 60) -> str:
    r = ch.run(cmd, timeout=timeout)
    assert r.returncode == 0, f"{ch.vm.name}: {cmd!r} -> {r.returncode}: {r.stdout}{r.stderr}"
    return r.stdout


def test_first_boot_runs_the_user_data_to_the_end(vmlab):
    for name in ("router-1", "host-1"):
        ch = _vm(vmlab, name)
        result = json.loads(_ok(ch, "cat /run/cloud-init/result.json"))
        assert result["v1"]["errors"] == [], f"{name}: {result}"
        assert "status: done" in _ok(ch, "cloud-init status --long")
        units = ["frr", "overlay-agent"] + (["docker"] if name.startswith("host") else [])
        assert _ok(ch, ["systemctl", "is-active", *units]).split() == ["active"] * len(units)
        # ... and enabled for the next boot (the install's one `systemctl enable`).
        assert _ok(ch, ["systemctl", "is-enabled", *units]).split() == ["enabled"] * len(units)
        # The install unit finished and says so where an operator looks.
        status = json.loads(_ok(ch, "overlay-agent status --json --no-live"))
        assert status["install"]["state"] == "installed" and "overlay-agent 0.1.0" in status["install"]["detail"]
        journal = _ok(ch, "journalctl -b -u overlay-agent-install --no-pager -o cat")
        assert "installed overlay-agent 0.1.0 (bundle sha256" in journal
        # The image had every package: first boot installed none (no apt, no dpkg run).
        assert "overlay image: Debian 12" in _ok(ch, "cat /etc/overlay-image")
        assert "image:" in journal and "apt" not in journal
        assert _ok(ch, "find /var/log/dpkg.log -newer /etc/overlay-image | wc -l").strip() == "0"
        # Where the first boot's time went (seconds since the guest kernel started), for the CI log.
        timeline = _ok(
            ch,
            "systemd-analyze 2>/dev/null | head -n 1; ip route; ip -6 route show default; "
            "journalctl -b -o short-monotonic --no-pager -u cloud-final -u overlay-agent-install -u overlay-agent "
            "| grep -E 'Started|Finished|overlay-agent-install:|Cloud-init v' | cut -c1-150",
        )
        print(f"\n{name} first boot:\n{timeline}")
    print(f"\nVMs started -> BGP Established (both VMs in parallel): {vmlab.boot_seconds:.0f} s")
    if vmlab.background is None:
        print(f"lab up --vms in all (image build if not cached, underlay, VMs, sessions): {vmlab.up_seconds:.0f} s")
    else:
        idle_for, waited = vmlab.background
        print(
            f"lab up --vms ran in the background at idle priority for {idle_for:.0f} s before the tier "
            f"raised it to normal priority and waited {waited:.0f} s for the rest ({vmlab.up_seconds:.0f} s in all)"
        )


def test_kernel_gre_tunnels_carry_the_planned_keys(vmlab):
    plan = vmlab.plan
    for name in ("router-1", "host-1"):
        links = json.loads(_ok(_vm(vmlab, name), ["ip", "-d", "-j", "link", "show", "type", "gre"]))
        got = {}
        for link in links:
            assert link["linkinfo"]["info_kind"] == "gre"
            if link["ifname"] == "gre0":
                continue  # the ip_gre module's fallback device (no endpoints, no key): not ours
            data = link["linkinfo"]["info_data"]
            # iproute2 prints GRE keys as dotted quads (ikey/okey: 0.0.4.1 is key 1025)
            ikey, okey = (
                int(ipaddress.ip_address(v)) if "." in str(v) else int(v) for v in (data["ikey"], data["okey"])
            )
            assert ikey == okey, f"{name}: {link['ifname']}: ikey {ikey} != okey {okey}"
            got[link["ifname"]] = ikey
        want = {p.ifname: p.key for p in plan.pairings if name in (p.a.name, p.b.name)}
        assert got == want, f"{name}: {got} != {want}"


def test_bgp_established_over_the_tunnels(vmlab):
    want = stack.expected_sessions(vmlab)
    for name, vm in ((i.name, v) for i, v in vmstack.vms(vmlab)):
        assert vmstack.bgp_established(vm) == want[name]


def test_docker_leaves_forward_alone_and_a_container_is_reachable_from_on_prem(vmlab):
    from lab.image import _rootfs

    host = _vm(vmlab, "host-1")
    # Production dockerd (Debian's unit, iptables on) found forwarding on: FORWARD stays ACCEPT.
    forward = _ok(host, ["iptables", "-S", "FORWARD"])
    assert forward.splitlines()[0] == "-P FORWARD ACCEPT", forward
    assert "DOCKER" in forward  # Docker's own chains are there: its iptables management is on
    # A busybox-static image, imported in the VM (no registry), sent over the command channel.
    tarball, digest = _rootfs()
    text = base64.b64encode(tarball).decode()
    _ok(host, "rm -f /tmp/bb.b64")
    for i in range(0, len(text), 96_000):
        _ok(host, f"printf %s '{text[i : i + 96_000]}' >> /tmp/bb.b64")
    _ok(host, f"base64 -d /tmp/bb.b64 | docker import -c 'CMD [\"/bin/sh\"]' - overlay-test:{digest}", 120)
    block4 = vmlab.plan.hosts[0].block_v4
    block6 = vmlab.plan.hosts[0].block_v6
    v4, v6 = str(block4.network_address + 10), str(block6.network_address + 10)
    _ok(
        host,
        [
            "docker",
            "run",
            "-d",
            "--name",
            "web",
            "--network",
            "none",
            "--label",
            f"overlay.ipv4={v4}",
            "--label",
            f"overlay.ipv6={v6}",
            "-e",
            "OVERLAY_HOST=host-1",
            f"overlay-test:{digest}",
            "sh",
            "-c",
            "echo $OVERLAY_HOST > /www/index.html && exec httpd -f -p 80 -h /www",
        ],
        120,
    )
    client = vmlab.topo.sites[0].client_ns
    t0 = time.monotonic()
    while time.monotonic() - t0 < 90:
        if http_get(client, v4) == "host-1" and http_get(client, v6) == "host-1":
            break
        time.sleep(1)
    assert http_get(client, v4) == "host-1", "IPv4 from on-prem"
    assert http_get(client, v6) == "host-1", "IPv6 from on-prem"
    took = time.monotonic() - t0
    print(f"\ndocker run -> reachable from on-prem (v4 and v6): {took:.1f} s")
    print(
        f"boot to reachable (VMs started -> BGP Established -> container reachable): {vmlab.boot_seconds + took:.0f} s"
    )
    vmlab.container = (v4, v6)


def test_agent_restart_withdraws_nothing(vmlab):
    v4, v6 = getattr(vmlab, "container", (None, None))
    if v4 is None:
        pytest.skip("needs the container of the previous test")
    router = _vm(vmlab, "router-1")
    seen: list[str] = []
    stop = threading.Event()

    def watch() -> None:  # the router's FIB, every 0.2 s, while the agent restarts
        while not stop.is_set():
            r = router.run(f"ip -4 route show {v4}; ip -6 route show {v6}", timeout=10)
            seen.append(r.stdout)
            time.sleep(0.2)

    host = _vm(vmlab, "host-1")
    t = threading.Thread(target=watch)
    t.start()
    try:
        time.sleep(2)
        _ok(host, ["systemctl", "restart", "overlay-agent"], 60)
        # `restart` returns once the old agent is gone and the new one forked: a report written
        # after this is the new agent's (the old one's last resync could land after any earlier
        # mark and end the sampling before the new agent's first pass).
        restarted = float(_ok(host, "date +%s.%N"))
        # Sample on until the new agent has rebuilt its state from the kernel and Docker and
        # written its container report (a full pass: the wiring found the container in place).
        t0 = time.monotonic()
        while True:
            r = host.run("cat /run/overlay-agent/containers.json", timeout=20)
            with contextlib.suppress(json.JSONDecodeError):
                doc = json.loads(r.stdout or "{}")
                rows = {row.get("ipv4"): row for row in doc.get("containers", [])}
                if doc.get("generated", 0) > restarted and rows.get(v4, {}).get("wired") and rows[v4].get("route"):
                    break
            assert time.monotonic() - t0 < 300, f"the restarted agent wrote no report: {r.stdout[-300:]}"
            time.sleep(2)
        print(f"\nagent restart -> its first full pass: {time.monotonic() - t0:.0f} s")
        time.sleep(3)
    finally:
        stop.set()
        t.join()
    assert len(seen) > 10
    missing = [s for s in seen if v4 not in s or v6 not in s]
    assert not missing, f"{len(missing)} of {len(seen)} samples without the container's routes"
    assert _ok(host, ["systemctl", "is-active", "overlay-agent"]).strip() == "active"
    assert http_get(vmlab.topo.sites[0].client_ns, v4) == "host-1"


def test_install_unit_runs_again_and_leaves_an_unchanged_bundle_alone(vmlab):
    """The agent upgrade's entry point (docs/deploy.md): `systemctl start overlay-agent-install`
    after `pulumi up`. With the bundle unchanged it fetches, compares hashes and restarts nothing."""
    host = _vm(vmlab, "host-1")
    pid = _ok(host, ["systemctl", "show", "-p", "MainPID", "--value", "overlay-agent"]).strip()
    since = _ok(host, "date '+%Y-%m-%d %H:%M:%S'").strip()
    _ok(host, ["systemctl", "start", "overlay-agent-install.service"], 600)
    journal = _ok(host, ["journalctl", "-u", "overlay-agent-install", "--since", since, "--no-pager", "-o", "cat"])
    assert "already installed" in journal, journal
    assert _ok(host, ["systemctl", "show", "-p", "MainPID", "--value", "overlay-agent"]).strip() == pid
    assert json.loads(_ok(host, "cat /var/lib/overlay-agent/install.json"))["state"] == "installed"
