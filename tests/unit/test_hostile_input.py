"""Hostile input classes (review: security.md findings 3 and 13): each fails only the thing it describes.

Labels refuse one container with one bounded line; any unexpected error while wiring one
container is that container's `wiring_failed`; agent documents are refused with one line (exit
2 on the command line, the last good document kept when it comes from SSM).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from overlay_agent import config as config_mod
from overlay_agent import labels
from overlay_agent.containers import ContainerReconciler
from overlay_agent.wiring import MESSAGE_MAX, Actual, desire
from overlay_agent.errors import ConfigError
from tests.support.fakes import FakeDocker, FakeKernel, cfg
from tests.support.configs import agent_doc as doc

HUGE = "1" * 200_000


# -- labels ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "lab, text",
    [
        ({"overlay.ipv6": "fd00:64::5%eth0"}, "zone id"),
        ({"overlay.ipv6": "fd00:64::5%25"}, "zone id"),
        ({"overlay.ipv6": "::ffff:100.64.0.5"}, "embeds an IPv4 address"),
        ({"overlay.ipv6": "::100.64.0.5"}, "embeds an IPv4 address"),
        ({"overlay.ipv6": "fe80::5"}, "not a unicast address"),
        ({"overlay.ipv6": "fec0::5"}, "not a unicast address"),
        ({"overlay.ipv4": "169.254.1.1"}, "not a unicast address"),
        ({"overlay.ipv4": "255.255.255.255"}, "not a unicast address"),
        ({"overlay.ipv4": "0.0.0.0"}, "not a unicast address"),
        ({"overlay.ipv4": HUGE}, "is not an IP address"),
        ({"overlay.ipv4": "100.64.0.5\nneighbor 1.2.3.4"}, "is not an IP address"),
        ({"overlay.anycast": HUGE}, "must be true or false"),
        ({"overlay.health": HUGE}, "must be 'withdraw'"),
        ({"overlay": HUGE, "overlay.anycast": "true"}, "must be 'auto'"),
        ({"overlay.IPv4": "100.64.0.5"}, "must be written overlay.ipv4"),
        ({"Overlay.ipv4": "100.64.0.5"}, "must be written overlay.ipv4"),
        ({"OVERLAY": "auto"}, "must be written overlay"),
        ({"overlay." + "x" * 5000: "1"}, "unknown label"),
    ],
)
def test_label_classes_are_refused_with_one_bounded_line(lab, text):
    assert labels.opted_in(lab)
    with pytest.raises(labels.LabelError) as info:
        labels.parse(lab)
    msg = str(info.value)
    assert text in msg and "\n" not in msg and len(msg) < 300, msg
    assert info.value.reason == "bad_label"


def test_case_variants_of_values_that_mean_the_same_are_accepted():
    r = labels.parse({"overlay.ipv6": "FD00:64::5", "overlay.anycast": "TRUE", "overlay.ipv4": " 100.64.0.5 "})
    assert str(r.ipv6) == "fd00:64::5" and r.anycast and str(r.ipv4) == "100.64.0.5"


@pytest.mark.parametrize(
    "value, text",
    [
        ("100.64.0.0", "network address of 100.64.0.0/16"),  # the pool's network address
        ("100.64.255.255", "broadcast address of 100.64.0.0/16"),  # the pool's broadcast address
        ("fd00:64::", "network address of fd00:64::/48"),  # subnet-router anycast
    ],
)
def test_network_and_broadcast_addresses_are_refused(value, text):
    d = FakeDocker(FakeKernel())
    key = "overlay.ipv6" if ":" in value else "overlay.ipv4"
    bad = d.add("bad", {key: value})
    good = d.add("good", {"overlay": "auto"})
    out = desire(d.list_running(), Actual(), cfg())
    assert text in out.problems[bad.id].message and good.id in out.wirings


def test_zone_id_label_fails_only_its_container_and_the_reconciler_keeps_running():
    kernel = FakeKernel()
    d = FakeDocker(kernel)
    good = d.add("good", {"overlay": "auto"})
    bad = d.add("bad", {"overlay.ipv6": "fd00:64::5%eth0"})
    rec = ContainerReconciler(cfg(), d, kernel)
    assert rec.resync()
    rows = {r["name"]: r for r in rec.status_rows()}
    assert rows["good"]["state"] == "routed" and rows["bad"]["state"] == "error"
    assert "zone id" in rows["bad"]["error"] and ("wire", "ovc" + bad.id[:12]) not in kernel.ops
    assert good.id not in rec.report.apply_problems


class ExplodingKernel(FakeKernel):
    """wire() raises what pyroute2 raised for the zone id (OSError from inet_pton) or anything else."""

    def __init__(self, boom: dict):
        super().__init__()
        self.boom = boom

    def wire(self, spec, pid):
        exc = self.boom.get(spec.veth)
        if exc is not None:
            raise exc
        return super().wire(spec, pid)


@pytest.mark.parametrize(
    "exc",
    [
        OSError(22, "illegal IP address string passed to inet_pton"),
        ValueError("bad"),
        KeyError("x"),
        RuntimeError("y"),
        TypeError("z" * 5000),
    ],
)
def test_any_unexpected_error_while_wiring_is_that_containers_wiring_failed(exc):
    d = FakeDocker(FakeKernel())
    a = d.add("a", {"overlay": "auto"})
    d.add("b", {"overlay": "auto"})
    kernel = ExplodingKernel({"ovc" + a.id[:12]: exc})
    kernel.alive = d.kernel.alive
    d.kernel = kernel
    rec = ContainerReconciler(cfg(), d, kernel)
    rec.metrics.errors.labels("wiring_failed")
    assert rec.resync()  # no exception escapes the pass
    rows = {r["name"]: r for r in rec.status_rows()}
    assert rows["a"]["reason"] == "wiring_failed" and type(exc).__name__ in rows["a"]["error"]
    assert len(rows["a"]["error"]) <= MESSAGE_MAX + 3
    assert rows["b"]["state"] == "routed"
    assert rec.metrics.registry.get_sample_value("overlay_container_errors_total", {"reason": "wiring_failed"}) == 1.0
    assert rec.resync()  # and again on the next pass: still no crash, b untouched
    assert {r["name"]: r["state"] for r in rec.status_rows()} == {"a": "error", "b": "routed"}


# -- agent document --------------------------------------------------------------------------


def _settings(**kw):
    base = {"route_protocol": 149, "route_protocol_name": "overlay", "poll_interval": 15, "resync_interval": 30}
    return doc(settings={**base, **kw})


@pytest.mark.parametrize(
    "bad, text",
    [
        (_settings(route_protocol="149"), "settings.route_protocol: '149' is not of type integer"),
        (_settings(route_protocol=149.5), "149.5 is not of type integer"),
        (_settings(route_protocol=True), "True is not of type integer"),
        (_settings(route_protocol=1), "no one else owns (not 0-18, 42, 99, 186-198)"),  # RTPROT_REDIRECT
        (_settings(route_protocol=2), "no one else owns (not 0-18, 42, 99, 186-198)"),  # RTPROT_KERNEL
        (_settings(route_protocol=9), "no one else owns (not 0-18, 42, 99, 186-198)"),  # RTPROT_RA
        (_settings(route_protocol=16), "no one else owns (not 0-18, 42, 99, 186-198)"),  # RTPROT_DHCP
        (_settings(route_protocol=99), "no one else owns (not 0-18, 42, 99, 186-198)"),  # RTPROT_OPENR
        (_settings(route_protocol=256), "greater than the maximum of 255"),
        (_settings(route_protocol=10**400), "greater than the maximum of 255"),
        (_settings(poll_interval="fast"), "poll_interval: 'fast' is not of type number"),
        (_settings(poll_interval=1e-9), "less than the minimum of 1"),
        (_settings(resync_interval=-1), "less than the minimum of 1"),
        (_settings(resync_interval=1e300), "greater than the maximum of 86400"),
        (_settings(poll_interval=None), "poll_interval: None is not of type number"),
        (_settings(route_protocol_name="a b\nc"), "is not a short name"),
        (_settings(route_protocol_name=["x"]), "is not of type string"),
        (doc(settings=[1]), "settings: [1] is not of type object"),
        (doc(underlay=["10.0.0.1"]), "underlay: ['10.0.0.1'] is not of type object"),
        (doc(underlay={"address": 5}), "underlay.address: 5 is not of type string"),
        (doc(pools={"ipv4": "100.64.0.0/16"}), "pools.ipv4: '100.64.0.0/16' is not of type array"),
        (doc(pools={"ipv4": 5}), "pools.ipv4: 5 is not of type array"),
        (doc(pools={"ipv4": [["x"]]}), "pools.ipv4[0]: ['x'] is not of type string (an IPv4 network"),
        (doc(pools={"ipv4": [167772160]}), "is not of type string (an IPv4 network"),
        (doc(pools={"ipv4": ["100.64.0.0/16"] * 65}), "more than the maximum of 64"),
        (doc(blocks={"ipv4": {"a": 1}}), "blocks.ipv4: {'a': 1} is not of type string"),
        (doc(instance={"a": 1}), "instance: {'a': 1} is not of type string (a name"),
        (doc(asn="65000"), "asn: '65000' is not of type integer"),
        (doc(schema=10**5000), "too large"),
    ],
)
def test_agent_document_values_are_refused_with_one_line(bad, text):
    with pytest.raises(ConfigError) as info:
        config_mod.parse(bad)
    msg = str(info.value)
    assert text in msg and "\n" not in msg and len(msg) < 400, msg


@pytest.mark.parametrize(
    "raw, text",
    [
        (json.dumps(_settings())[:-1] + ', "x": NaN}', "NaN is not a JSON number"),
        (json.dumps(_settings()).replace('"poll_interval": 15', '"poll_interval": Infinity'), "Infinity is not"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"a":' * 40 + "1" + "}" * 40, "nested too deeply"),
        (b'{"schema": 1, "instance": "\xff\xfe"}', "not UTF-8"),
        ('{"schema": ' + "9" * 5000 + "}", "not JSON"),
        ("", "not JSON"),
    ],
)
def test_agent_document_text_is_refused_with_one_line(raw, text):
    with pytest.raises(ConfigError) as info:
        config_mod.loads(raw, "agent")
    msg = str(info.value)
    assert text in msg and "\n" not in msg and len(msg) < 300, msg


@pytest.mark.parametrize(
    "content",
    [
        b'{"schema": 1, "settings": {"poll_interval": NaN}}',
        b"\xff\xfe\x00",
        b"[" * 100_000,
        json.dumps(_settings(route_protocol=16)).encode(),
        json.dumps(_settings(poll_interval=1e-9)).encode(),
        None,  # a directory
    ],
)
def test_command_line_agent_document_is_one_line_and_exit_2(tmp_path, content):
    path = tmp_path / "agent.json"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "overlay_agent.cli",
            "run",
            "--config",
            str(path),
            "--metrics-address",
            "",
            "--status-file",
            str(tmp_path / "s.json"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("overlay-agent: ") and "Traceback" not in r.stderr, r.stderr


@pytest.mark.parametrize(
    "bad",
    [
        "{",
        "[" * 50_000,
        json.dumps(_settings(poll_interval=float("nan"))).replace("NaN", "NaN"),
        json.dumps(_settings(route_protocol=2)),
        json.dumps(_settings(resync_interval="x")),
        json.dumps(doc(pools={"ipv4": 7})),
        '"\udcff"',
        "[]",
        "null",
    ],
)
def test_ssm_agent_document_refused_keeps_the_last_good_one(pairing_world, bad):
    sync, src, be, frr, tmp = pairing_world
    sync.start()
    sync.step(now=0.0)
    good = sync.source.cfg
    src.agent = bad
    src.rev = 2
    sync.step(now=3.0)  # no exception escapes the pairing thread
    assert sync.source.cfg is good and sync.pairing.cfg is good
    assert sync.pairing.resync_interval == good.settings.resync_interval
    status = json.loads((tmp / "pairing.json").read_text())["parameters"]["agent_error"]
    assert "keeping the last good" in status and "\n" not in status
    assert sync.source.metrics.agent_refused._value.get() == 1
    assert frr.reloads >= 1  # tunnels and FRR are still applied
