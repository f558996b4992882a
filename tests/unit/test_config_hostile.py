"""Hostile stack configs (review: security.md finding 12): one line `file: key = value: reason`, no traceback, no hang."""

from __future__ import annotations

import copy
import subprocess
import sys
import time

import pytest
import yaml

from infra.config import ConfigError, foreign_key_problem, parse
from infra.stackfile import REPO_ROOT, load_stack
from tests.support.configs import BASE, with_change


@pytest.mark.parametrize(
    "change, key, reason",
    [
        (("pools.ipv4", ["127.0.0.0/16"]), "overlay:pools.ipv4[0]", "loopback"),
        (("pools.ipv4", ["224.1.0.0/16"]), "overlay:pools.ipv4[0]", "multicast"),
        (("pools.ipv4", ["240.0.0.0/16"]), "overlay:pools.ipv4[0]", "reserved"),
        (("pools.ipv4", ["0.0.0.0/16"]), "overlay:pools.ipv4[0]", "this network"),
        (("pools.ipv4", ["169.254.192.0/18"]), "overlay:pools.ipv4[0]", "link-local"),
        (("pools.ipv6", ["fe80::/48"]), "overlay:pools.ipv6[0]", "link-local"),
        (("pools.ipv6", ["ff05::/48"]), "overlay:pools.ipv6[0]", "multicast"),
        (("pools.ipv6", ["fd00:ec2::/48"]), "overlay:pools.ipv6[0]", "AWS instance metadata"),
        (("pools.ipv6", ["::ffff:0:0/104"]), "overlay:pools.ipv6[0]", "IPv4-mapped"),
        (("pools.ipv6", ["64:ff9b::/100"]), "overlay:pools.ipv6[0]", "NAT64"),
        (("tunnels.ipv4", "127.0.0.0/18"), "overlay:tunnels.ipv4", "loopback"),
        (("tunnels.ipv4", "224.0.0.0/18"), "overlay:tunnels.ipv4", "multicast"),
        (("tunnels.ipv6", "fe80::/64"), "overlay:tunnels.ipv6", "link-local"),
        (("tunnels.ipv6", "fd00:ec2::/64"), "overlay:tunnels.ipv6", "AWS instance metadata"),
        (("onprem.0.address", "127.0.0.1"), "overlay:onprem[0].address", "loopback"),
        (("onprem.0.address", "169.254.169.254"), "overlay:onprem[0].address", "link-local"),
        (("onprem.0.address", "255.255.255.255"), "overlay:onprem[0].address", "broadcast"),
        (("onprem.0.address", "0.0.0.0"), "overlay:onprem[0].address", "this network"),
        (("onprem.0.address", "239.1.1.1"), "overlay:onprem[0].address", "multicast"),
        (("onprem.0.asn", 65100), "overlay:onprem[0].asn", "docker hosts' ASNs"),
    ],
)
def test_special_purpose_ranges_and_asn_clashes_are_refused(change, key, reason):
    with pytest.raises(ConfigError) as info:
        parse(with_change(*change), "t")
    assert info.value.key == key and reason in info.value.reason, str(info.value)


def test_onprem_asn_inside_the_per_host_range_is_refused():
    raw = copy.deepcopy(BASE)
    raw["hosts"].update({"asnMode": "per-host", "asn": 4200000001, "count": 4})
    raw["onprem"][0]["asn"] = 4200000003
    with pytest.raises(ConfigError, match="docker hosts' ASNs"):
        parse(raw, "t")
    raw["onprem"][0]["asn"] = 4200000005  # just past the last host
    parse(raw, "t")


@pytest.mark.parametrize(
    "key, problem",
    [
        ("overlya:pools", "looks like a typo of 'overlay'"),
        ("Overlay:pools", "looks like a typo of 'overlay'"),
        ("ovrelay:region", "looks like a typo of 'overlay'"),
        ("pools", "has no namespace; write overlay:pools"),
        ("aws:pools", "write overlay:pools"),
        ("aws:bgp.maxPrefix", "write overlay:bgp.maxPrefix"),
    ],
)
def test_namespace_typos_are_refused(key, problem):
    assert problem in foreign_key_problem(key)


@pytest.mark.parametrize("key", ["overlay:pools", "aws:region", "aws:profile", "pulumi:template", "region2"])
def test_other_namespaces_pass(key):
    assert foreign_key_problem(key) is None


def _stack_file(tmp_path, text: bytes | str | None):
    stacks = tmp_path / "stacks"
    stacks.mkdir()
    path = stacks / "Pulumi.bad.yaml"
    if text is None:
        path.mkdir()
    elif isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return stacks


GOOD = yaml.safe_dump({"config": {f"overlay:{k}": v for k, v in BASE.items()}})
BOMB = (
    "a: &a [x, x, x, x, x, x, x, x, x]\n"
    + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(9)
    )
    + "config: {overlay:region: *j}\n"
)


@pytest.mark.parametrize(
    "text, reason",
    [
        (GOOD + "  overlay:region: eu-west-2\n", "duplicate key 'overlay:region'"),
        (GOOD.replace("overlay:region", "overlya:region"), "looks like a typo of 'overlay'"),
        (BOMB, "aliases (*name) are not allowed"),
        ("config:\n  overlay:vpc: " + "[" * 5000 + "]" * 5000 + "\n", "nested deeper than 20 levels"),
        ("config:\n  overlay:vpc:\n" + "".join("  " * (i + 2) + f"k{i}:\n" for i in range(40)), "nested deeper"),
        (b"config:\n  overlay:region: \xff\xfe\n", "is not UTF-8"),
        (None, "cannot be read"),
        ("config:\n  overlay:hosts: {count: " + "9" * 5000 + "}\n", "is not valid YAML"),
        ("config: [", "is not valid YAML at line"),
        ("{" * 200_000, "nested deeper"),
    ],
)
def test_hostile_stack_files_are_one_line(tmp_path, text, reason):
    stacks = _stack_file(tmp_path, text)
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as info:
        load_stack("bad", stacks)
    assert time.monotonic() - t0 < 5, "must not hang"
    line = str(info.value)
    assert reason in line and "\n" not in line and "Pulumi.bad.yaml" in line and len(line) < 400, line


@pytest.mark.parametrize("text", [BOMB, b"\xff", None, "{" * 200_000, GOOD + "  overlay:region: x\n"])
def test_cli_hostile_stack_file_is_one_line_exit_2(tmp_path, text):
    stacks = _stack_file(tmp_path, text)
    proc = subprocess.run(
        [sys.executable, "-m", "infra.plan", "bad", "--stacks-dir", str(stacks)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
    )
    assert proc.returncode == 2  # bad input (docs/cli.md)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr and "Pulumi.bad.yaml" in lines[0], proc.stderr


@pytest.mark.parametrize("other", [b"\xff\xfe", None, "[" * 100_000])
def test_cli_diff_against_hostile_file_is_one_line(tmp_path, other):
    path = tmp_path / "old.json"
    if other is None:
        path.mkdir()
    else:
        path.write_bytes(other if isinstance(other, bytes) else other.encode())
    proc = subprocess.run(
        [sys.executable, "-m", "infra.plan", "lab", "--diff", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
    )
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
