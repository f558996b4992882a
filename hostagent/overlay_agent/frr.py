"""FRR shim: fill in the BGP password, diff against the running config and apply with FRR's own frr-reload.py; read sessions.

Hazards:
- Never a restart: a restart drops every BGP session (and BFD), so changes go through
  `frr-reload.py --reload`, which computes the delta against `show running-config` and
  types only that into vtysh; untouched neighbors keep their sessions.
- "Differs from what runs" is FRR's own diff (`frr-reload.py --test`), not a text
  compare: FRR normalises what it prints (defaults dropped, lines reordered), so the
  rendered file never equals `show running-config` byte for byte.
- A config FRR rejects: frr-reload checks the whole file with vtysh first and changes
  nothing when that fails; if it fails half-way through applying, the previous config is
  reloaded, so the previous config stays. Either way a CommandError (cmd, exit code,
  output) says what FRR said.
- The password is put into `neighbor ... password` lines: whitespace or a newline in it
  would inject configuration, and TCP MD5 keys hold at most 80 bytes
  (TCP_MD5SIG_MAXKEYLEN); such a password is refused.
- A config that still holds a placeholder (hostagent/overlay_agent/placeholders.py) is
  never applied: diff and reload refuse it with a ConfigError naming the line.
- Import filters the program leaves to the agent (`! agent: ...` marker lines, see
  fill_bogons): the fixed bogon list and the VPC's IPv6 block. A marker the agent cannot
  fill (unknown, or the VPC's block not read) refuses the config: a filter that guards
  IMDS must fail closed, and FRR would take the marker as a comment.
- The filled-in file holds the password: written 0600 in the agent's state directory.
- frr-reload.py writes the result to <confdir>/frr.conf (`write`) so an FRR restart comes
  back with the applied config.
- Paths: on an instance FRR uses /etc/frr and its default vty sockets; in the lab each
  FRR has its own vty socket directory and config directory (--vty_socket, --confdir).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from . import placeholders, schemas
from .config import loads
from .errors import CommandError, ConfigError

PLACEHOLDER = placeholders.BGP_PASSWORD
ONPREM_PLACEHOLDER = placeholders.ONPREM_BGP_PASSWORD
# The line of a router's frr.conf where the route server's endpoints go (routeServer
# mode); infra/render.py writes the same string. AWS assigns the endpoint addresses at
# creation, so they arrive in the `route-server` parameter, not in the rendered text.
ROUTE_SERVER_MARKER = "! route-server neighbors: filled in by the agent from the route-server parameter"
# The route server's outbound route-maps (userdata/frr-router.conf.j2): the rendered text
# applies the HOLD ones (worse than any router's planned announcement); the agent swaps in
# the planned ones once this router's host sessions are back (overlay_agent.rsgate). A
# neighbor's route-map swap takes effect at once (a soft refresh out); a change inside a
# route-map would wait for bgpd's route-map delay timer (5 s by default).
ROUTE_SERVER_OUT = {"RS-HOLD-OUT": "RS-OUT", "RS6-HOLD-OUT": "RS6-OUT"}
RELOAD = "/usr/lib/frr/frr-reload.py"
# Never routes from outside, whatever a datacenter (or a router) announces (review F13):
# RFC 6890's "this network", loopback, link-local (169.254.169.254 IMDS, .253 the Route 53
# resolver, .123 Amazon Time Sync: one announcement would hijack the instance's
# credentials path), multicast and class E (RFC 1112; 255.255.255.255 included); for IPv6
# loopback, link-local, AWS's IPv6 service range fd00:ec2::/32 (IMDS fd00:ec2::254, DNS
# fd00:ec2::253, time sync fd00:ec2::123; EC2 User Guide) and multicast.
BOGONS_V4 = ("0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4")
BOGONS_V6 = ("::1/128", "fe80::/10", "fd00:ec2::/32", "ff00::/8")
# The line of a rendered frr.conf where the agent puts them (infra/render.py writes it):
# `! agent: ip prefix-list ONPREM-V4 seq 500+ deny bogons` becomes, after that line, one
# `ip prefix-list ONPREM-V4 seq 500 deny 0.0.0.0/8 le 32` per bogon (seq +5 each), and
# `, vpc-ipv6` adds the VPC's IPv6 block (the `vpc` parameter: AWS assigns the block when
# it creates the VPC). Kept out of the `frr` parameter: SSM holds 8 KB and a router with
# 7 on-prem peers is within bytes of it.
FILTER_MARKER = re.compile(r"^! agent: (ip|ipv6) prefix-list ([A-Za-z0-9_-]+) seq (\d+)\+ deny bogons(, vpc-ipv6)?$")
AGENT_MARKER = "! agent:"
TCP_MD5SIG_MAXKEYLEN = 80


def refuse_placeholders(text: str, *, source: str = "frr") -> None:
    """ConfigError when `text` still holds a placeholder (a secret never filled in)."""
    m = placeholders.PATTERN.search(text)
    if m:
        line = text.count("\n", 0, m.start()) + 1
        raise ConfigError(
            f"{source}: line {line} still holds the placeholder {m.group(0)}; "
            "refusing to apply a config without its secret"
        )


def _usable(password: str, name: str) -> None:
    if (
        not password
        or len(password.encode()) > TCP_MD5SIG_MAXKEYLEN
        or any(c.isspace() for c in password)
        or not password.isprintable()
    ):
        # Never echo the password itself into a log line.
        raise ConfigError(
            f"{name}: unusable as a TCP MD5 key ({len(password)} characters; needs 1-80 "
            "printable characters without spaces)"
        )


def fill_password(text: str, password: str | None, *, onprem_password: str | None = None, source: str = "frr") -> str:
    """The `frr` parameter with its placeholders replaced; ConfigError when one cannot be.

    `password` is the stack's (bgp-password: sessions between routers and hosts),
    `onprem_password` the datacenter sessions' (onprem-bgp-password: routers only, review
    F10). Refuses, too, a text that still holds any placeholder afterwards (one this agent
    does not know, from a newer program): FRR would refuse it anyway, but say why here.
    """
    filled = text
    for placeholder, value, name in (
        (PLACEHOLDER, password, "bgp-password"),
        (ONPREM_PLACEHOLDER, onprem_password, "onprem-bgp-password"),
    ):
        if placeholder not in filled:
            continue
        if value is None:
            raise ConfigError(
                f"{source}: needs the {'on-prem ' if placeholder == ONPREM_PLACEHOLDER else ''}"
                f"BGP password but the {name} parameter was not read"
            )
        _usable(value, name)
        filled = filled.replace(placeholder, value)
    refuse_placeholders(filled, source=source)
    return filled


def fill_route_server(text: str, doc: str | None, *, preferred: bool = False, source: str = "route-server") -> str:
    """The marker line replaced by one `neighbor <endpoint> peer-group ROUTE-SERVER` per endpoint.

    Without the marker (hosts, static mode) the text is unchanged; without the parameter
    (not written yet: the endpoints are created after the router's parameters) the marker
    stays a comment and the ROUTE-SERVER peer group has no member yet.

    `preferred` (the route-server gate is open: this router's hosts are back) swaps the
    peer group's outbound route-maps from RS-HOLD-OUT / RS6-HOLD-OUT to the planned
    RS-OUT / RS6-OUT; otherwise the text keeps the held announcement it was rendered with.
    """
    if ROUTE_SERVER_MARKER not in text or doc is None:
        return text
    data = loads(doc, source)
    schemas.validate("route-server", data, source)
    endpoints = [ipaddress.IPv4Address(e) for e in data["endpoints"]]
    lines = [f"neighbor {e} peer-group ROUTE-SERVER" for e in sorted(set(endpoints))]
    out = []
    for line in text.splitlines(keepends=True):
        if line.strip() == ROUTE_SERVER_MARKER:
            indent = line[: len(line) - len(line.lstrip())]
            out += [f"{indent}{n}\n" for n in lines]
        else:
            out.append(_route_server_out(line) if preferred else line)
    return "".join(out)


def _route_server_out(line: str) -> str:
    words = line.split()
    if words[:2] == ["neighbor", "ROUTE-SERVER"] and words[2:3] == ["route-map"] and words[4:] == ["out"]:
        planned = ROUTE_SERVER_OUT.get(words[3])
        if planned:
            return line.replace(f" {words[3]} out", f" {planned} out")
    return line


def vpc_ipv6_block(doc: str | None, *, source: str = "vpc") -> ipaddress.IPv6Network | None:
    """The VPC's IPv6 block from the `vpc` parameter (schemas/vpc.schema.json), or None."""
    if doc is None:
        return None
    data = loads(doc, source)
    schemas.validate("vpc", data, source)
    block = ipaddress.IPv6Network(data["ipv6"])
    if block.prefixlen > 64:
        raise ConfigError(f"{source}: ipv6: {block} is not a VPC block (AWS assigns /44 to /64)")
    return block


def fill_bogons(text: str, vpc_doc: str | None, *, source: str = "frr") -> str:
    """Each `! agent: ... deny bogons` marker followed by its prefix-list entries (the marker stays, as a comment).

    ConfigError for a marker line this agent does not know (from a newer program) and for
    `vpc-ipv6` without the `vpc` parameter: the text is not applied without its filters.
    """
    if AGENT_MARKER not in text:
        return text
    block = None
    out = []
    for n, line in enumerate(text.splitlines(keepends=True), 1):
        if not line.startswith(AGENT_MARKER):
            out.append(line)
            continue
        out.append(line if line.endswith("\n") else line + "\n")
        m = FILTER_MARKER.match(line.rstrip("\n"))
        if not m:
            raise ConfigError(
                f"{source}: line {n} is an agent marker this agent does not know: "
                f"{line.strip()[:120]!r}; refusing to apply a config without its filters"
            )
        family, name, seq, vpc = m.group(1), m.group(2), int(m.group(3)), m.group(4)
        bogons = BOGONS_V4 if family == "ip" else BOGONS_V6
        prefixes = [b if b.endswith("/128") else f"{b} le {32 if family == 'ip' else 128}" for b in bogons]
        if vpc:
            if family != "ipv6":
                raise ConfigError(f"{source}: line {n}: vpc-ipv6 belongs in an ipv6 prefix-list")
            block = block or vpc_ipv6_block(vpc_doc)
            if block is None:
                raise ConfigError(
                    f"{source}: line {n} needs the VPC's IPv6 block but the vpc parameter "
                    "was not read; refusing to apply a config without its filters"
                )
            prefixes.append(f"{block} le 128")
        out += [f"{family} prefix-list {name} seq {seq + 5 * i} deny {p}\n" for i, p in enumerate(prefixes)]
    return "".join(out)


@dataclass(frozen=True)
class Session:
    peer: str
    afi: str
    state: str
    remote_as: int | None
    uptime_ms: int | None
    prefixes_in: int | None
    prefixes_out: int | None
    hostname: str | None = None


class Frr:
    """Talks to one FRR instance through vtysh and frr-reload.py."""

    def __init__(
        self,
        state_dir: str | Path,
        *,
        vty_socket: str | None = None,
        confdir: str = "/etc/frr",
        bindir: str = "/usr/bin",
        reload_script: str = RELOAD,
        timeout: float = 60.0,
    ):
        self.state_dir = Path(state_dir)
        self.vty_socket = vty_socket
        self.confdir = confdir
        self.bindir = bindir
        self.reload_script = reload_script
        self.timeout = timeout

    # -- commands ------------------------------------------------------------------------
    def _paths(self) -> list[str]:
        args = ["--bindir", self.bindir, "--confdir", self.confdir, "--rundir", str(self.state_dir)]
        if self.vty_socket:
            args += ["--vty_socket", self.vty_socket]
        return args

    def _run(self, cmd: list[str], what: str) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise CommandError(f"{what}: {exc}", cmd=cmd, returncode=None, stderr=str(exc)) from exc

    def vtysh(self, *commands: str) -> str:
        cmd = [os.path.join(self.bindir, "vtysh")] + (["--vty_socket", self.vty_socket] if self.vty_socket else [])
        for c in commands:
            cmd += ["-c", c]
        out = self._run(cmd, "vtysh")
        if out.returncode != 0:
            raise CommandError(
                f"vtysh {' / '.join(commands)}: exit {out.returncode}: {redact(_last_line(out.stdout + out.stderr))}",
                cmd=cmd,
                returncode=out.returncode,
                stderr=redact(out.stderr + out.stdout),
            )
        return out.stdout

    def _write(self, name: str, text: str) -> Path:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.state_dir / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        return path

    # -- diff and apply ------------------------------------------------------------------
    def diff(self, text: str) -> tuple[list[str], list[str]]:
        """FRR's own delta from the running config to `text`: (lines to delete, lines to add)."""
        refuse_placeholders(text)
        path = self._write("frr.desired.conf", text)
        cmd = ["python3", self.reload_script, "--test", *self._paths(), str(path)]
        out = self._run(cmd, "frr-reload --test")
        if out.returncode != 0:
            raise CommandError(
                f"frr-reload --test: exit {out.returncode}: {redact(_last_line(out.stderr + out.stdout), text)}",
                cmd=cmd,
                returncode=out.returncode,
                stderr=redact(out.stderr + out.stdout, text),
            )
        return _parse_test(out.stdout)

    def differs(self, text: str) -> bool:
        delete, add = self.diff(text)
        return bool(delete or add)

    def _reload_once(self, path: Path) -> subprocess.CompletedProcess[str]:
        cmd = ["python3", self.reload_script, "--reload", "--stdout", *self._paths(), str(path)]
        out = self._run(cmd, "frr-reload --reload")
        out.args = cmd
        return out

    def reload(self, text: str, previous: str | None = None) -> str | None:
        """Apply `text` with frr-reload.py --reload; on failure put `previous` back and raise CommandError.

        Returns a warning when the first run failed but a second converged. frr-reload makes
        two passes and re-sends pass one's lines in pass two; FRR 8.4 refuses some lines the
        second time (`bgp graceful-restart-disable`: "not valid at this moment"), so a reload
        from scratch exits 1 with everything applied. The second run sends only what is still
        missing; a config FRR really rejects fails again, identically.
        """
        refuse_placeholders(text)
        path = self._write("frr.desired.conf", text)
        out = self._reload_once(path)
        if out.returncode == 0:
            return None
        first = redact(_reason(out.stdout + out.stderr), text)
        out = self._reload_once(path)
        if out.returncode == 0:
            return f"frr-reload needed a second run (first: {first})"
        err = CommandError(
            f"frr-reload --reload: FRR rejected the config (exit {out.returncode}): "
            f"{redact(_reason(out.stdout + out.stderr), text)}",
            cmd=out.args,
            returncode=out.returncode,
            stderr=redact(out.stderr + out.stdout, text),
        )
        if previous is not None:
            # frr-reload checks the file before changing anything, but a failure half-way
            # through leaves a mix: put the previous config back (best effort).
            self._reload_once(self._write("frr.previous.conf", previous))
        raise err

    # -- sessions ------------------------------------------------------------------------
    def sessions(self) -> list[Session]:
        """BGP sessions from `show bgp summary json` (IPv4 and IPv6 unicast), dynamic neighbors included."""
        doc = json.loads(self.vtysh("show bgp summary json") or "{}")
        out = []
        for afi, body in sorted(doc.items()):
            for peer, p in sorted((body.get("peers") or {}).items()):
                out.append(
                    Session(
                        peer=peer,
                        afi=afi,
                        state=p.get("state", "?"),
                        remote_as=p.get("remoteAs"),
                        uptime_ms=p.get("peerUptimeMsec"),
                        prefixes_in=p.get("pfxRcd"),
                        prefixes_out=p.get("pfxSnt"),
                        hostname=p.get("hostname"),
                    )
                )
        return out


def _parse_test(stdout: str) -> tuple[list[str], list[str]]:
    delete: list[str] = []
    add: list[str] = []
    target = None
    for line in stdout.splitlines():
        s = line.strip()
        if s == "Lines To Delete":
            target = delete
        elif s == "Lines To Add":
            target = add
        elif s and not set(s) <= {"="} and target is not None:
            target.append(line)
    return delete, add


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output)"


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_PASSWORD = re.compile(r"(\bpassword\s+)(\S+)", re.IGNORECASE)


def redact(text: str, config: str | None = None) -> str:
    """`text` without the BGP password: FRR echoes a rejected line (`line N: % ...: <line>`)
    and frr-reload logs whole lines, so a `neighbor ... password <secret>` line would reach
    the journal and the status file. Every value after `password` is cut, and so is any
    password value of `config` (the text we applied) wherever it appears in `text`."""
    out = _PASSWORD.sub(lambda m: m.group(1) + "<redacted>", text)
    for secret in {m.group(2) for m in _PASSWORD.finditer(config or "")}:
        if len(secret) >= 4 and secret != "{{BGP_PASSWORD}}":
            out = out.replace(secret, "<redacted>")
    return out


def _reason(text: str) -> str:
    """What FRR disliked (vtysh's "line N: % Unknown command: ..."), one line, without colour codes or noise."""
    # frr-reload logs vtysh's output as a Python bytes repr: literal "\n" separates lines.
    text = _ANSI.sub("", text).replace("\\n", "\n")
    lines = [ln.strip().strip("b'\"") for ln in text.splitlines()]
    # FRR instances without a vtysh.conf of their own (the lab's) print this on every call.
    lines = [ln for ln in lines if ln and "vtysh.conf" not in ln]
    keep = [ln for ln in lines if "% " in ln and "line" in ln] or [ln for ln in lines if "%" in ln] or lines
    seen: list[str] = []
    for ln in keep:
        if ln not in seen:
            seen.append(ln)
    return " | ".join(seen[-3:])[:600] or "(no output)"
