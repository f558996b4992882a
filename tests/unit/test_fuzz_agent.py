"""Fuzz tier (hypothesis, no root, a few seconds): labels and agent documents through the real parsing
and the container reconciler's pure core (desire/diff, applied to the in-memory fake kernel).

Invariants, whatever the input: no exception escapes; a refusal is one bounded line; a
container's hostile labels never change another container's wiring, and never change a host
route of an address it does not itself ask for; a refused agent document keeps the last good one.
"""

from __future__ import annotations

import ipaddress
import json
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from overlay_agent import config as config_mod
from overlay_agent import labels
from overlay_agent.containers import ContainerReconciler
from overlay_agent.errors import ConfigError
from tests.support.fakes import (
    lockstep,
    PROTO,
    FakeBackend,
    FakeDocker,
    FakeFrr,
    FakeGuard,
    FakeKernel,
    FakeNetlink,
    FakeSource,
    cfg,
)
from tests.support.configs import agent_doc as doc

FUZZ = settings(
    max_examples=80,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# -- label values: near misses of real addresses, plus anything ------------------------------

_pool4 = st.integers(0, 0xFFFF).map(lambda n: str(ipaddress.IPv4Address(int(ipaddress.IPv4Address("100.64.0.0")) + n)))
_pool6 = st.integers(0, 0xFFFFFFFF).map(
    lambda n: str(ipaddress.IPv6Address(int(ipaddress.IPv6Address("fd00:64::")) + n))
)
_any4 = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
_any6 = st.integers(0, 2**128 - 1).map(lambda n: str(ipaddress.IPv6Address(n)))
_addr = st.one_of(
    _pool4,
    _pool6,
    _any4,
    _any6,
    st.sampled_from(
        [
            "::ffff:100.64.0.5",
            "::100.64.0.5",
            "fe80::1",
            "fd00:64::",
            "100.64.0.0",
            "100.64.255.255",
            "255.255.255.255",
            "0.0.0.0",
            "::",
            "::1",
            "ff02::1",
        ]
    ),
)
_decorated = st.tuples(
    _addr, st.sampled_from(["", "%eth0", "%25", "%", "/32", " ", "\n", "\x00", ".", "::"]), st.booleans()
).map(lambda t: (t[0] + t[1]).upper() if t[2] else t[0] + t[1])
_value = st.one_of(
    _decorated,
    st.text(max_size=60),
    st.sampled_from(["true", "TRUE", "no", "auto", "withdraw", ""]),
    st.integers(1, 300_000).map(lambda n: "9" * n),
)
_key = st.one_of(
    st.sampled_from(
        sorted(labels.KNOWN)
        + ["overlay", "Overlay", "OVERLAY.IPV4", "overlay.ipv4 ", "overlay.", "overlay.ip4", "com.example.x"]
    ),
    st.text(string.ascii_letters + ".", max_size=20).map(lambda s: "overlay." + s),
)
_labels = st.dictionaries(_key, _value, max_size=5)


@FUZZ
@given(_labels)
def test_label_parsing_returns_a_request_or_one_bounded_line(lab):
    try:
        req = labels.parse(lab)
    except labels.LabelError as exc:
        msg = str(exc)
        assert "\n" not in msg and len(msg) < 400 and exc.reason == "bad_label"
        return
    for addr, version in ((req.ipv4, 4), (req.ipv6, 6)):
        if addr is not None:
            assert addr.version == version and (version == 4 or addr.scope_id is None)
            assert not (addr.is_link_local or addr.is_multicast or addr.is_loopback or addr.is_unspecified)


def _world():
    kernel = FakeKernel()
    docker = FakeDocker(kernel)
    goods = [
        docker.add("auto1", {"overlay": "auto"}),
        docker.add("auto2", {"overlay": "auto"}),
        docker.add("fixed", {"overlay.ipv4": "100.64.9.9", "overlay.ipv6": "fd00:64::9:9"}),
        docker.add("any1", {"overlay.ipv4": "100.64.7.7", "overlay.anycast": "true"}),
    ]
    rec = ContainerReconciler(cfg(), docker, kernel)
    rec.guard = FakeGuard(kernel)
    assert rec.resync()
    return kernel, docker, rec, goods


@FUZZ
@given(st.lists(_labels, min_size=1, max_size=3))
def test_hostile_labels_change_no_other_containers_wiring_or_routes(hostile):
    kernel, docker, rec, goods = _world()
    before_routes = kernel.our_routes()
    before_wired = {c.id: rec.actual.wired[c.id] for c in goods}
    claimed: set[str] = set()
    for lab in hostile:
        docker.add(f"h{len(docker.containers)}", lab)
        try:
            req = labels.parse(lab)
        except labels.LabelError:
            continue
        claimed.update(f"{a}/{a.max_prefixlen}" for a in (req.ipv4, req.ipv6) if a is not None)
    assert rec.resync()  # no exception escapes a pass
    assert rec.resync()  # nor the next one (an agent restart would do this pass again)
    for c in goods:
        assert rec.actual.wired[c.id] == before_wired[c.id]
    # The anti-spoofing sets allow exactly what is wired: a refused label allows nothing.
    assert rec.guard.have == {(w.veth, a) for w in rec.actual.wired.values() for a in (w.ipv4, w.ipv6) if a}
    after = kernel.our_routes()
    for dst, veths in before_routes.items():
        if dst in claimed:
            # An explicit claim of the same address may share it (anycast) or be refused, but
            # never takes the address from the container that has it.
            assert set(veths) <= set(after[dst]), (dst, veths, after.get(dst))
        else:
            assert after.get(dst) == veths, (dst, veths, after.get(dst))
    for row in rec.status_rows():
        assert "\n" not in row.get("error", "") and len(row.get("error", "")) <= 500
        json.dumps(row)


# -- agent documents ---------------------------------------------------------------------------

_json = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=20),
        _addr,
    ),
    lambda kids: st.one_of(st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=8), kids, max_size=4)),
    max_leaves=20,
)
_paths = st.sampled_from(
    [
        ("schema",),
        ("role",),
        ("asn",),
        ("underlay",),
        ("underlay", "address"),
        ("pools",),
        ("pools", "ipv4"),
        ("pools", "ipv6"),
        ("blocks",),
        ("blocks", "ipv4"),
        ("blocks", "ipv6"),
        ("settings",),
        ("settings", "route_protocol"),
        ("settings", "route_protocol_name"),
        ("settings", "poll_interval"),
        ("settings", "resync_interval"),
        ("instance",),
        ("x",),
    ]
)


def _mutate(d: dict, path: tuple, value) -> dict:
    d = json.loads(json.dumps(d))
    node = d
    for k in path[:-1]:
        if not isinstance(node.get(k), dict):
            node[k] = {}
        node = node[k]
    node[path[-1]] = value
    return d


def _sync(tmp):
    src = FakeSource()
    nl = FakeNetlink()
    sync = lockstep(src, tmp, FakeBackend(nl), nl, FakeFrr())
    sync.start()
    sync.step(now=0.0)
    return sync, src


@FUZZ
@given(st.lists(st.tuples(_paths, _json), min_size=1, max_size=3), st.sampled_from(["json", "bytes", "text"]))
def test_agent_documents_parse_or_refuse_in_one_line_and_keep_the_last_good(tmp_path_factory, edits, form):
    bad = doc()
    for path, value in edits:
        bad = _mutate(bad, path, value)
    raw = json.dumps(bad, allow_nan=True)
    if form == "bytes":
        raw = raw.encode() + b"\xff"
    elif form == "text":
        raw = raw[: len(raw) // 2]
    try:
        parsed = config_mod.parse(config_mod.loads(raw, "agent"), "agent")
    except ConfigError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 600
        parsed = None
    if parsed is not None:
        # A valid (if odd) document still drives the pure core without an exception.
        kernel = FakeKernel()
        docker = FakeDocker(kernel)
        docker.add("a", {"overlay": "auto"})
        docker.add("b", {"overlay.ipv4": "100.64.9.9"})
        ContainerReconciler(parsed, docker, kernel).resync()
        assert all(p == PROTO or p == parsed.settings.route_protocol for _, p in kernel.routes.values())
        return
    # The same bytes as an SSM value: refused, the last good document stays, the thread lives.
    sync, src = _sync(tmp_path_factory.mktemp("p"))
    good = sync.source.cfg
    src.agent = raw.decode("utf-8", "surrogateescape") if isinstance(raw, bytes) else raw
    src.rev = 2
    sync.step(now=3.0)
    assert sync.source.cfg is good and sync.source.agent_error and "\n" not in sync.source.agent_error
    assert sync.pairing.cfg is good
