"""`overlay-agent status`, the pairing part: the pairing sync's status file, with live tunnel counters and BGP sessions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import AgentError, CommandError
from .frr import Frr
from .texttable import text_table


def live_status(
    path: str | Path, *, state_dir: str | Path, vty_socket: str | None = None, live: bool = True
) -> dict[str, Any] | None:
    """The running agent's pairing status file, with live link counters and BGP sessions; None if absent."""
    try:
        doc: dict[str, Any] = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise AgentError(f"{path}: unreadable pairing status ({exc})") from exc
    if not live:
        return doc
    tunnels = (doc.get("tunnels") or {}).get("tunnels") or []
    try:
        from pyroute2 import IPRoute

        from .tunnels import PyrouteTunnels

        with IPRoute() as ipr:
            links = PyrouteTunnels(ipr).view().links
        for t in tunnels:
            link = links.get(t["name"])
            if link is not None:
                t["rx_bytes"], t["tx_bytes"] = link.rx_bytes, link.tx_bytes
                if t["state"] != "error":
                    t["state"] = "up" if link.up else "down"
            elif t["state"] != "error":
                t["state"] = "missing"
    except (OSError, AgentError) as exc:
        doc["live_error"] = f"kernel: {exc}"
    try:
        doc["sessions"] = [vars(s) for s in Frr(state_dir, vty_socket=vty_socket).sessions()]
    except (CommandError, ValueError) as exc:
        doc["sessions"] = None
        doc["sessions_error"] = str(exc)
    return doc


def table(doc: dict[str, Any]) -> str:
    lines: list[str] = []
    p = doc.get("parameters") or {}
    src = "ok" if p.get("ok") else f"FAILING ({p.get('failures')}x: {p.get('error')}), using {p.get('source')}"
    lines.append(f"parameters: revision {p.get('revision')} from {p.get('source')}: {src}")
    if p.get("agent_error"):
        lines.append(f"agent parameter: {p['agent_error']}")
    tun = doc.get("tunnels") or {}
    lines.append(f"tunnels ({tun.get('backend', '?')} GRE):" + (f" {tun['error']}" if tun.get("error") else ""))
    rows = [
        (
            t["name"],
            t["peer"],
            t["kind"],
            t["remote"],
            t["key"],
            t["state"],
            t["rx_bytes"],
            t["tx_bytes"],
            t.get("error") or "",
        )
        for t in tun.get("tunnels") or []
    ]
    lines += text_table(("TUNNEL", "PEER", "KIND", "REMOTE", "KEY", "STATE", "RX BYTES", "TX BYTES", "ERROR"), rows)
    for r in tun.get("rejected") or []:
        lines.append(f"rejected: {r['error']}")
    frr = doc.get("frr") or {}
    if frr.get("error"):
        lines.append(f"frr: {frr['error']}")
    rs = doc.get("route_server")
    if rs is not None:
        lines.append(f"route server: {'planned' if rs.get('preferred') else 'held'} announcement ({rs.get('reason')})")
    sessions = doc.get("sessions")
    if sessions is None:
        lines.append(f"bgp sessions: unknown ({doc.get('sessions_error', 'not checked')})")
    else:
        session_rows = [
            (
                s["peer"],
                s["afi"],
                s["remote_as"],
                s["state"],
                f"{(s['uptime_ms'] or 0) // 1000}s",
                s["prefixes_in"],
                s["prefixes_out"],
            )
            for s in sessions
        ]
        lines += text_table(("BGP PEER", "AFI", "AS", "STATE", "UP", "PFX IN", "PFX OUT"), session_rows)
    return "\n".join(lines)


def unhealthy(doc: dict[str, Any] | None) -> bool:
    if not doc:
        return False
    tun = doc.get("tunnels") or {}
    return (
        not (doc.get("parameters") or {}).get("ok")
        or bool(tun.get("rejected"))
        or bool(tun.get("error"))
        or any(t["state"] == "error" for t in tun.get("tunnels") or [])
        or bool((doc.get("frr") or {}).get("error"))
    )
