"""`overlay-agent status`: the running agent's view of its containers, checked live against the kernel and FRR."""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from .errors import AgentError
from .texttable import text_table

DEFAULT_STATUS_FILE = "/run/overlay-agent/containers.json"


def load(path: str | Path) -> dict[str, Any]:
    try:
        doc: dict[str, Any] = json.loads(Path(path).read_text())
        return doc
    except FileNotFoundError as exc:
        raise AgentError(f"{path}: no status file (is the agent running?)") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise AgentError(f"{path}: unreadable status file ({exc})") from exc


def kernel_routes(proto: int) -> dict[str, str]:
    """Host routes carrying our protocol, live from the kernel: prefix -> veth name(s)."""
    from .netlink import Netlink  # imported here so that `status --no-live` needs no root

    nl = Netlink()
    try:
        view = nl.snapshot("ovc")
    finally:
        nl.close()
    names = {link.index: link.name for link in view.links}
    return {str(r.dst): ",".join(names.get(i, f"#{i}") for i in r.oifs) for r in view.routes if r.proto == proto}


def bgp_prefixes(vty_socket: str | None = None) -> set[str] | None:
    """Prefixes in the local FRR's BGP table (IPv4 and IPv6 unicast); None when FRR cannot be asked."""
    vtysh = shutil.which("vtysh")
    if vtysh is None:
        return None
    found: set[str] = set()
    for afi in ("ipv4", "ipv6"):
        cmd = [vtysh] + (["--vty_socket", vty_socket] if vty_socket else []) + ["-c", f"show bgp {afi} unicast json"]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if out.returncode != 0:
            return None
        try:
            doc = json.loads(out.stdout or "{}")
        except json.JSONDecodeError:
            return None
        for prefix, paths in (doc.get("routes") or {}).items():
            # A redistributed route is ours when a valid path was sourced locally
            # (FRR marks it with peerId "(unspec)" and the 0.0.0.0 / :: next hop).
            if any(p.get("valid") and p.get("peerId") == "(unspec)" for p in paths):
                found.add(str(ipaddress.ip_network(prefix)))
    return found


def collect(status_file: str, live: bool = True, vty_socket: str | None = None) -> dict[str, Any]:
    doc = load(status_file)
    proto = int(doc.get("route_protocol", 149))
    routes = kernel_routes(proto) if live else None
    bgp = bgp_prefixes(vty_socket) if live else None
    for row in doc.get("containers", []):
        prefixes = [f"{row[k]}/{32 if k == 'ipv4' else 128}" for k in ("ipv4", "ipv6") if row.get(k)]
        if routes is not None:
            row["route"] = bool(prefixes) and all(p in routes for p in prefixes)
        if bgp is None:
            row["announced"] = None
        else:
            row["announced"] = bool(prefixes) and all(p in bgp for p in prefixes)
    return doc


def table(doc: dict[str, Any]) -> str:
    head = ("CONTAINER", "IPV4", "IPV6", "VETH", "ROUTE", "ANNOUNCED", "STATE")
    rows = []
    for r in doc.get("containers", []):
        ann = r.get("announced")
        state = r["state"] if r["state"] != "error" else f"error {r['reason']}: {r.get('error', '')}"
        rows.append(
            (
                r["name"],
                r["ipv4"] or "-",
                r["ipv6"] or "-",
                r["veth"] or "-",
                "yes" if r.get("route") else "no",
                "?" if ann is None else ("yes" if ann else "no"),
                state,
            )
        )
    lines = text_table(head, rows)
    n = len(doc.get("containers", []))
    errors = sum(1 for r in doc.get("containers", []) if r["state"] == "error")
    age = time.time() - float(doc.get("generated") or 0)
    # The agent rewrites the file after every pass and at least every resync interval; an
    # old file means the agent is not running (the routes stay, nothing reconciles them).
    lines.append(
        f"{n} containers, {errors} with errors; route protocol {doc.get('route_protocol')}; agent view {age:.0f} s old"
    )
    return "\n".join(lines)
