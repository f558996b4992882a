"""What a user wants to see in the lab: sessions, routes, containers reachable from on-prem, ECMP; plus the helpers tests reuse."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from lab.poll import wait_until
from lab.stack import Lab, expected_sessions, sessions
from lab.underlay import LabError

# Container command: serve a page naming the host, on port 80 (IPv4 and IPv6).
SERVE = "echo $OVERLAY_HOST > /www/index.html && exec httpd -f -p 80 -h /www"


# -- helpers shared with the end-to-end tests ---------------------------------------------


def docker_client(lab: Lab, host: str):
    import docker

    return docker.DockerClient(base_url=lab.docker_url(host), timeout=60, version="1.41")


def start_container(lab: Lab, host: str, name: str, labels: dict[str, str], **kw):
    """A container on `host` (network none; the agent wires it) serving its host's name."""
    from lab import image

    client = docker_client(lab, host)
    try:
        return client.containers.run(
            image.ensure(client),
            ["sh", "-c", SERVE],
            name=name,
            detach=True,
            network_mode="none",
            labels=labels,
            environment={"OVERLAY_HOST": host},
            **kw,
        )
    finally:
        client.close()


def remove_container(lab: Lab, host: str, name: str) -> None:
    import docker.errors

    client = docker_client(lab, host)
    try:
        client.containers.get(name).remove(force=True)
    except docker.errors.NotFound:
        pass
    finally:
        client.close()


def agent_status(lab: Lab, host: str) -> dict:
    try:
        return json.loads((lab.agent_dir(host) / "status.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def agent_status_text(lab: Lab, name: str) -> str:
    """`overlay-agent status` run inside the instance's namespace, with the lab's paths."""
    adir, frr = lab.agent_dir(name), lab.frr_for(name)
    cmd = [
        "ip",
        "netns",
        "exec",
        lab.topo.instance(name).ns,
        str(Path(sys.executable).with_name("overlay-agent")),
        "status",
        "--status-file",
        str(adir / "status.json"),
        "--state-dir",
        str(adir / "state"),
        "--vty-socket",
        str(frr.vty_dir),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    return (proc.stdout + proc.stderr).rstrip()


def container_addresses(lab: Lab, host: str, name: str, timeout: float = 20) -> tuple[str, str]:
    """The (IPv4, IPv6) the agent gave a container, from its status file."""

    def wired() -> tuple[str, str] | None:
        for row in agent_status(lab, host).get("containers", []):
            if row.get("name") == name and row.get("ipv4"):
                return row["ipv4"], row.get("ipv6", "")
        return None

    return wait_until(wired, timeout, 0.1, f"container {name} on {host} wired", error=LabError)


def has_route(lab: Lab, speaker: str, prefix: str) -> bool:
    family = 6 if ":" in prefix else 4
    return str(ipaddress.ip_network(prefix)) in lab.frr_for(speaker).routes(family)


def wait_route(lab: Lab, speaker: str, prefix: str, present: bool = True, timeout: float = 30) -> float:
    """Seconds until `prefix` is (or is no longer) in `speaker`'s RIB."""
    t0 = time.monotonic()
    wait_until(
        lambda: has_route(lab, speaker, prefix) == present,
        timeout,
        0.05,
        f"{prefix} {'in' if present else 'gone from'} {speaker}'s RIB",
        error=LabError,
    )
    return time.monotonic() - t0


def http_get(ns: str, address: str, timeout: float = 3) -> str | None:
    """One HTTP GET from inside a namespace; the body, or None when it failed."""
    host = f"[{address}]" if ":" in address else address
    code = (
        "import sys,urllib.request;"
        f"print(urllib.request.urlopen('http://{host}/', timeout={timeout}).read().decode().strip())"
    )
    proc = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout + 10
    )
    return proc.stdout.strip() if proc.returncode == 0 else None


def spread(ns: str, address: str, count: int = 40, timeout: float = 3) -> Counter:
    """`count` new TCP connections from `ns` to `address`; which host answered each."""
    host = f"[{address}]" if ":" in address else address
    code = (
        "import urllib.request,collections,json;c=collections.Counter()\n"
        f"for i in range({count}):\n"
        "  try:\n"
        f"    c[urllib.request.urlopen('http://{host}/', timeout={timeout}).read().decode().strip()]+=1\n"
        "  except Exception as e: c['error']+=1\n"
        "print(json.dumps(c))"
    )
    proc = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=count * timeout + 30,
    )
    if proc.returncode != 0:
        raise LabError(f"spread from {ns} to {address} failed: {proc.stderr.strip()[-300:]}")
    return Counter(json.loads(proc.stdout))


def anycast_addresses(lab: Lab) -> tuple[str, str]:
    """Addresses for anycast demos: near the end of the first pools, outside every host block."""
    v4 = lab.plan.pools_v4[0].broadcast_address - 5
    v6 = lab.plan.pools_v6[0][-6] if lab.plan.pools_v6 else None
    for h in lab.plan.hosts:
        assert v4 not in h.block_v4 and (v6 is None or v6 not in h.block_v6)
    return str(v4), str(v6) if v6 else ""


# -- CLI ------------------------------------------------------------------------------------


def status(lab: Lab) -> int:
    if not lab.is_up():
        print(f"lab {lab.plan.stack} is not up (python -m lab up {lab.plan.stack})")
        return 1
    want, have = expected_sessions(lab), sessions(lab)
    print(f"lab {lab.plan.stack}: {len(lab.topo.namespaces)} namespaces under {lab.state}")
    print("\nBGP sessions (Established / expected):")
    for name in want:
        mark = "ok" if have[name] >= want[name] else "DOWN"
        print(f"  {name:<12} {have[name]:>3} / {want[name]:<3} {mark}")
    router = lab.plan.routers[0].name
    print(f"\nContainer routes at {router}:")
    for family, pools in ((4, lab.plan.pools_v4), (6, lab.plan.pools_v6)):
        for prefix, entries in sorted(lab.frr_for(router).routes(family).items()):
            net = ipaddress.ip_network(prefix)
            if any(net.subnet_of(p) for p in pools) and net.prefixlen in (32, 128):
                hops = sum(len(e.get("nexthops", [])) for e in entries if e.get("selected"))
                print(f"  {prefix:<28} {hops} next hop(s)")
    for site in lab.topo.sites:
        print(f"\nOn-prem {site.name}: routes into the stack")
        for family in (4, 6):
            for prefix, entries in sorted(lab.frr_for(site.name).routes(family).items()):
                if any(e.get("protocol") == "bgp" for e in entries):
                    hops = sum(len(e.get("nexthops", [])) for e in entries if e.get("selected"))
                    print(f"  {prefix:<28} {hops} next hop(s)")
    for inst in lab.plan.instances:
        # What an operator on that instance sees: the agent's own status command.
        print(f"\n{inst.name}: overlay-agent status")
        print("\n".join("  " + line for line in agent_status_text(lab, inst.name).splitlines()))
    return 0 if all(have[n] >= want[n] for n in want) else 1


def run(lab: Lab, keep: bool = False) -> int:
    if not lab.is_up():
        print(f"lab {lab.plan.stack} is not up: run `python -m lab up {lab.plan.stack}` first")
        return 1
    site = lab.topo.sites[0] if lab.topo.sites else None
    v4_any, v6_any = anycast_addresses(lab)
    made: list[tuple[str, str]] = []
    failures = 0
    try:
        print("Starting one container per host (overlay=auto) and an anycast pair (same address on two hosts):")
        for h in lab.plan.hosts:
            name = f"demo-{h.name}"
            start_container(lab, h.name, name, {"overlay": "auto"})
            made.append((h.name, name))
        for h in lab.plan.hosts[:2]:
            labels = {"overlay.ipv4": v4_any, "overlay.anycast": "true"}
            if v6_any:
                labels["overlay.ipv6"] = v6_any
            start_container(lab, h.name, f"demo-anycast-{h.name}", labels)
            made.append((h.name, f"demo-anycast-{h.name}"))
        addrs = {}
        addr_host = {name: host for host, name in made}
        for host, name in made:
            addrs[name] = container_addresses(lab, host, name)
            print(f"  {name:<24} on {host}: {addrs[name][0]:<15} {addrs[name][1]}")
        observer = site.name if site else lab.plan.routers[0].name
        # On-prem sees the pools (aggregates mode) or each /32 (specifics mode).
        aggregates = site is not None and lab.plan.bgp.announce == "aggregates"
        for v4, _ in addrs.values():
            wait_route(lab, observer, str(lab.plan.pools_v4[0]) if aggregates else f"{v4}/32")
        print()
        status(lab)
        if site:
            print(f"\nFrom the on-prem client {site.client_v4} (namespace {site.client_ns}):")
            for name, (v4, v6) in addrs.items():
                for addr in filter(None, (v4, v6)):
                    body = None
                    for _ in range(20):  # routes propagate in well under a second; allow for BFD/ECMP settling
                        body = http_get(site.client_ns, addr)
                        if body:
                            break
                        time.sleep(0.25)
                    # the anycast pair answers from either host; the others from their own
                    failures += body is None or (not name.startswith("demo-anycast") and body != addr_host[name])
                    print(f"  GET http://{addr}/ -> {body or 'FAILED'}")
            for addr in filter(None, (v4_any, v6_any)):
                counts = spread(site.client_ns, addr, 40)
                # ECMP by flow: 40 connections reach both hosts of the anycast pair
                failures += counts["error"] > 0 or len(counts) < min(2, len(lab.plan.hosts))
                print(
                    f"  40 connections to anycast {addr}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
                )
    finally:
        if not keep:
            for host, name in made:
                remove_container(lab, host, name)
            print("\nDemo containers removed (use --keep to leave them).")
    if failures:
        print(f"\n{failures} check(s) failed")
    return 1 if failures else 0
