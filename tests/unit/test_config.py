"""Stack config validation: every bad input gets one line naming key, value and reason."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import yaml

from infra.config import ConfigError, parse
from infra.stackfile import REPO_ROOT, list_stacks, load_stack, overlay_values
from tests.support.configs import BASE, with_change


def test_base_is_valid():
    cfg = parse(BASE, "t")
    assert cfg.router_count == 2 and cfg.host_count == 4 and cfg.ipv6
    assert str(cfg.tunnel_v4) == "169.254.64.0/18"
    assert cfg.bgp.announce == "aggregates" and not cfg.bgp.graceful_restart


def test_every_stack_file_is_valid():
    stacks = list_stacks()
    assert {"lab", "prod-euw1", "test-use2"} <= set(stacks)
    for stack in stacks:
        assert load_stack(stack).stack == stack


def test_prod_stack_shape():
    cfg = load_stack("prod-euw1")
    assert (len(cfg.azs), cfg.router_count, cfg.host_count, len(cfg.onprem), cfg.ipv6) == (3, 2, 6, 2, True)
    assert cfg.environment == "prod"


BAD = [
    # (change, expected key, fragment of the reason)
    (("vpc.cidrr", "10.0.0.0/16"), "overlay:vpc.cidrr", "did you mean 'cidr'"),
    (("hostz", {}), "overlay:hostz", "did you mean 'hosts'"),
    (("hosts.blockprefix", 24), "overlay:hosts.blockprefix", "did you mean 'blockPrefix'"),
    (("vpc.cidr", "10.20.0.0/33"), "overlay:vpc.cidr", "not a valid IPv4 CIDR"),
    (("vpc.cidr", "10.20.1.0/16"), "overlay:vpc.cidr", "host bits set"),
    (("vpc.cidr", "banana"), "overlay:vpc.cidr", "not a valid IPv4 CIDR"),
    (("pools.ipv4", ["10.20.128.0/20"]), "overlay:pools.ipv4[0]", "overlaps overlay:vpc.cidr"),
    (("pools.ipv4", ["10.96.0.0/16", "10.96.128.0/17"]), "overlay:pools.ipv4[1]", "overlaps overlay:pools.ipv4[0]"),
    (("pools.ipv6", ["fd10:7e::/56"]), "overlay:tunnels.ipv6", "overlaps overlay:pools.ipv6[0]"),
    (("tunnels.ipv4", "169.254.0.0/20"), "overlay:tunnels.ipv4", "AWS-reserved link-local range 169.254.0.0/21"),
    (("tunnels.ipv4", "169.254.168.0/23"), "overlay:tunnels.ipv4", "169.254.168.0/22"),
    (("tunnels.ipv4", "10.96.0.0/24"), "overlay:tunnels.ipv4", "overlaps overlay:pools.ipv4[0]"),
    (("hosts.count", 300), "overlay:hosts.count", "too many hosts: the IPv4 pools hold 256 blocks"),
    (("hosts.count", 0), "overlay:hosts.count", "between 1 and"),
    (("hosts.count", "many"), "overlay:hosts.count", "whole number"),
    (("routers.asn", 23456), "overlay:routers.asn", "reserved ASN"),
    (("routers.asn", 0), "overlay:routers.asn", "between 1 and"),
    (("routers.asn", 4294967296), "overlay:routers.asn", "between 1 and"),
    (("routers.asn", 65100), "overlay:routers.asn", "must differ from the docker hosts' ASNs"),
    (("onprem.0.asn", 65000), "overlay:onprem[0].asn", "must differ from overlay:routers.asn"),
    (
        (
            "onprem",
            [
                {"name": "dc1", "address": "198.51.100.10", "asn": 64700},
                {"name": "dc1", "address": "198.51.100.11", "asn": 64701},
            ],
        ),
        "overlay:onprem[1].name",
        "duplicate on-prem peer name",
    ),
    (("onprem.0.address", "198.51.100.300"), "overlay:onprem[0].address", "not a valid IPv4 address"),
    (("onprem.0.address", "10.20.5.5"), "overlay:onprem[0].address", "inside overlay:vpc.cidr"),
    (("onprem.0.nme", "x"), "overlay:onprem[0].nme", "did you mean 'name'"),
    (("environment", "staging"), "overlay:environment", "must be one of: prod, test"),
    (("bgp.announce", "all"), "overlay:bgp.announce", "aggregates, specifics"),
    (("bgp.hold", 5), "overlay:bgp.hold", "at least 3 x keepalive"),
    (("routers.count", 9), "overlay:routers.count", "exceeds routers.maxRouters"),
    (("routers.count", 33), "overlay:routers.count", "between 1 and 32"),
    (("routers.maxRouters", 6), "overlay:routers.maxRouters", "power of two"),
    (("vpc.azs", ["a", "a"]), "overlay:vpc.azs", "duplicate availability zone 'a'"),
    (("vpc.ipv6", "yes"), "overlay:vpc.ipv6", "true or false"),
    (("tunnels.ipv4", "169.254.64.0/28"), "overlay:tunnels.ipv4", "too small"),
    # shared ranges (moves, anycast): inside the pools, outside every host's block
    (("pools.sharedIpv4", ["10.97.0.0/24"]), "overlay:pools.sharedIpv4[0]", "must lie inside one of the pools"),
    (("pools.sharedIpv4", ["10.96.3.128/25"]), "overlay:pools.sharedIpv4[0]", "overlaps host-4's block"),
    (("pools.sharedIpv4", ["10.96.0.0/16"]), "overlay:pools.sharedIpv4[0]", "overlaps host-1's block"),
    (
        ("pools.sharedIpv4", ["10.96.255.0/24", "10.96.255.128/25"]),
        "overlay:pools.sharedIpv4[1]",
        "overlaps 10.96.255.0/24, another shared range",
    ),
    (("pools.sharedIpv6", ["fd10:96::3:0/112"]), "overlay:pools.sharedIpv6[0]", "overlaps host-4's block"),
    (("pools.sharedIpv6", "banana"), "overlay:pools.sharedIpv6[0]", "not a valid IPv6 CIDR"),
    (("pools.sharedlpv4", []), "overlay:pools.sharedlpv4", "did you mean 'sharedIpv4'"),
    # the FRR prefix-lists take at most 16 ranges per list (infra.config.MAX_POOLS)
    (("pools.ipv4", [f"10.{i}.0.0/16" for i in range(100, 117)]), "overlay:pools.ipv4", "at most 16 ranges (17 given)"),
    (
        ("pools.sharedIpv6", [f"fd10:96:0:ffff::{i:x}00/120" for i in range(17)]),
        "overlay:pools.sharedIpv6",
        "at most 16",
    ),
]


@pytest.mark.parametrize("change,key,reason", BAD, ids=[b[1] + ":" + b[2][:20] for b in BAD])
def test_bad_input_names_key_value_reason(change, key, reason):
    with pytest.raises(ConfigError) as info:
        parse(with_change(*change), "t")
    err = info.value
    assert err.key == key
    assert reason in err.reason
    line = str(err)
    assert "\n" not in line and key in line and reason in line


def test_shared_ranges_at_the_end_of_the_pools_are_accepted():
    raw = with_change("pools.sharedIpv4", ["10.96.255.0/24", "10.96.254.0/24"])
    raw["pools"]["sharedIpv6"] = ["fd10:96:0:ffff::/64"]
    cfg = parse(raw, "t")
    assert [str(n) for n in cfg.shared_v4] == ["10.96.255.0/24", "10.96.254.0/24"]
    assert [str(n) for n in cfg.shared_v6] == ["fd10:96:0:ffff::/64"]
    assert parse(BASE, "t").shared_v4 == ()


def test_shared_ipv6_without_ipv6_is_refused():
    raw = with_change("pools.sharedIpv6", ["fd10:96:0:ffff::/64"])
    raw["vpc"]["ipv6"] = False
    del raw["pools"]["ipv6"]
    del raw["tunnels"]["ipv6"]
    with pytest.raises(ConfigError, match="sharedIpv6.*given but overlay:vpc.ipv6 is false"):
        parse(raw, "t")


def test_too_many_hosts_for_tunnel_slice():
    raw = with_change("hosts.blockPrefix", 28)
    raw["tunnels"]["ipv4"] = "169.254.64.0/24"  # 16 slices of /28: 8 pairings per router
    raw["hosts"]["count"] = 9
    with pytest.raises(ConfigError, match="each router's slice holds 8 pairings"):
        parse(raw, "t")


def test_required_keys():
    raw = copy.deepcopy(BASE)
    del raw["region"]
    with pytest.raises(ConfigError, match="overlay:region = None: is required"):
        parse(raw, "t")


def test_overlay_values_strips_namespace_and_ignores_others():
    doc = {"config": {"overlay:region": "x", "aws:region": "y", "overlay:vpc": {"cidr": "1"}}}
    assert overlay_values(doc, "f") == {"region": "x", "vpc": {"cidr": "1"}}


def test_cli_bad_stack_file_is_one_line_exit_2(tmp_path):
    stacks = tmp_path / "stacks"
    stacks.mkdir()
    doc = {"config": {f"overlay:{k}": v for k, v in with_change("vpc.cidr", "10.20.0.0/33").items()}}
    (stacks / "Pulumi.bad.yaml").write_text(yaml.safe_dump(doc))
    proc = subprocess.run(
        [sys.executable, "-m", "infra.plan", "bad", "--stacks-dir", str(stacks)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )
    assert proc.returncode == 2  # bad input (docs/cli.md)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Pulumi.bad.yaml: overlay:vpc.cidr = '10.20.0.0/33'" in lines[0]
    assert "Traceback" not in proc.stderr


def test_cli_unknown_stack(capsys):
    from infra.plan.__main__ import main

    assert main(["nope"]) == 2
    err = capsys.readouterr().err
    assert "stack = 'nope': no such stack file" in err and "lab" in err


def test_too_many_onprem_peers():
    raw = with_change(
        "onprem", [{"name": f"dc{i}", "address": f"198.51.100.{i + 1}", "asn": 64700 + i} for i in range(8)]
    )
    with pytest.raises(ConfigError, match="at most 7 on-prem peers"):
        parse(raw, "t")
