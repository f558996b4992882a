"""Network namespaces for root tests and benchmarks: unique names, and always removed with what runs in them."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess

PREFIX = "ovt"
_counter = itertools.count()


def have_root_netns() -> bool:
    """True when this process may create network namespaces (root, `ip` present)."""
    return os.geteuid() == 0 and shutil.which("ip") is not None


def unique_name(tag: str = "") -> str:
    # Namespace names appear in /run/netns and in `ip netns list`; keep them short,
    # unique per test process, and recognisable so a leak is easy to attribute.
    base = f"{PREFIX}{os.getpid() % 100000}-{next(_counter)}"
    return f"{base}-{tag}"[:40] if tag else base


def run(*args: str, ns: str | None = None, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=timeout)


def create(name: str) -> str:
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, text=True)
    run("ip", "link", "set", "lo", "up", ns=name)
    return name


def destroy(name: str) -> None:
    """Kill every process in the namespace, then delete it; never raises."""
    # The lab's own teardown step: TERM, then KILL what is left, for each namespace.
    from lab.underlay import kill_namespace_processes

    kill_namespace_processes(name)
    subprocess.run(["ip", "netns", "del", name], capture_output=True, text=True)


def veth(ns_a: str, if_a: str, ns_b: str, if_b: str) -> None:
    """A veth pair with one end in each namespace, both ends up."""
    tmp_a, tmp_b = f"t{os.getpid() % 10000}a{next(_counter)}", f"t{os.getpid() % 10000}b{next(_counter)}"
    subprocess.run(
        ["ip", "link", "add", tmp_a, "type", "veth", "peer", "name", tmp_b], check=True, capture_output=True, text=True
    )
    subprocess.run(["ip", "link", "set", tmp_a, "netns", ns_a, "name", if_a], check=True, capture_output=True)
    subprocess.run(["ip", "link", "set", tmp_b, "netns", ns_b, "name", if_b], check=True, capture_output=True)
    run("ip", "link", "set", if_a, "up", ns=ns_a)
    run("ip", "link", "set", if_b, "up", ns=ns_b)
