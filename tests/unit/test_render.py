"""infra.render: FRR configs and user data from the plan; typed contexts, strict templates, no secrets, size limits."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re

import pytest
import yaml

from infra.config import parse
from infra.parameters import ADVANCED_MAX
from infra.plan import build_plan
from infra.render import (
    ONPREM_PASSWORD_PLACEHOLDER,
    PASSWORD_PLACEHOLDER,
    USER_DATA_LIMIT,
    HostFrrContext,
    RenderError,
    RouterFrrContext,
    UserDataContext,
    bgp_settings,
    host_context,
    render_frr,
    render_onprem_frr,
    render_template,
    render_user_data,
    router_context,
    user_data_context,
)
from tests.support.render_plans import AGENT_KEY, BUCKET, GENERATED, all_plans, fake_eips, generated_plan

PLANS = all_plans()


def _ud(plan, name):
    return render_user_data(
        plan, name, bucket=BUCKET, agent_key=AGENT_KEY, parameter_path=f"/{plan.project}/{plan.stack}/instances/{name}"
    )


def _sample(plan):
    """Every router and up to four hosts (first, second, last two): what differs between hosts."""
    hosts = plan.hosts if len(plan.hosts) <= 4 else plan.hosts[:2] + plan.hosts[-2:]
    return plan.routers + hosts


def _lines(text):
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("!")]


# -- routers ------------------------------------------------------------------------


@pytest.mark.parametrize("stack", sorted(PLANS))
def test_router_listens_per_family_on_its_slice(stack):
    plan = PLANS[stack]
    for r in plan.routers:
        text = render_frr(plan, r.name)
        lines = _lines(text)
        assert f"bgp listen range {r.listen_v4} peer-group HOSTS" in lines
        assert "neighbor HOSTS remote-as external" in lines
        assert f"neighbor HOSTS password {PASSWORD_PLACEHOLDER}" in lines
        # what one host may announce (its block plus the shared ranges), warning only
        assert f"neighbor HOSTS maximum-prefix {plan.host_limit(4)} warning-only" in lines
        assert "neighbor HOSTS bfd profile OVERLAY" in lines
        assert "bgp bestpath as-path multipath-relax" in lines
        assert "maximum-paths 16" in lines
        assert "frr defaults datacenter" in lines
        if plan.ipv6:
            assert f"bgp listen range {r.listen_v6} peer-group HOSTS6" in lines
            assert "neighbor HOSTS6 remote-as external" in lines
        else:
            assert not any("HOSTS6" in line or "ipv6" in line for line in lines)
        # Default-deny import: exactly one permit per pool, for single addresses only.
        permits4 = [line for line in lines if line.startswith("ip prefix-list POOL-HOST-V4 ")]
        assert permits4 == [
            f"ip prefix-list POOL-HOST-V4 seq {5 * (i + 1)} permit {p} ge 32" for i, p in enumerate(plan.pools_v4)
        ]
        if plan.ipv6:
            permits6 = [line for line in lines if line.startswith("ipv6 prefix-list POOL-HOST-V6 ")]
            assert permits6 == [
                f"ipv6 prefix-list POOL-HOST-V6 seq {5 * (i + 1)} permit {p} ge 128"
                for i, p in enumerate(plan.pools_v6)
            ]
        assert "neighbor HOSTS route-map HOSTS-IN in" in lines
        hosts_in = text[text.index("route-map HOSTS-IN permit 10") :].splitlines()[:3]
        # From any host only the shared ranges; each host's block comes from the agent's
        # per-host entries (100 + index), which this text never holds.
        assert hosts_in[1].strip() == "match ip address prefix-list SHARED-HOST-V4"
        shared4 = [line for line in lines if line.startswith("ip prefix-list SHARED-HOST-V4 ")]
        assert shared4 == (
            [f"ip prefix-list SHARED-HOST-V4 seq {5 * (i + 1)} permit {p} ge 32" for i, p in enumerate(plan.shared_v4)]
            or ["ip prefix-list SHARED-HOST-V4 seq 5 deny any"]
        )
        assert "route-map HOSTS-IN permit 20" not in text  # the implicit deny ends it
        assert "match peer" not in text


@pytest.mark.parametrize("stack", sorted(PLANS))
def test_router_config_names_no_host(stack):
    plan = PLANS[stack]
    for r in plan.routers:
        text = render_frr(plan, r.name)
        for h in plan.hosts[:50]:
            assert not re.search(rf"\b{re.escape(h.name)}\b", text)
            assert str(h.private_ip) not in text
        for p in plan.pairings:
            if p.kind == "host":
                assert f"neighbor {p.b.inner_v4} " not in text


@pytest.mark.parametrize("stack", ["lab", "test-use2", "gen-large"])
def test_adding_a_host_leaves_every_router_text_unchanged(stack):
    raw = _raw(stack)
    before = build_plan(parse(raw, stack))
    raw["hosts"] = {**raw["hosts"], "count": raw["hosts"]["count"] + 1}
    after = build_plan(parse(raw, stack))
    assert len(after.hosts) == len(before.hosts) + 1
    for r in before.routers:
        assert render_frr(after, r.name) == render_frr(before, r.name)


def _raw(stack):
    if stack in GENERATED:
        return json.loads(json.dumps(GENERATED[stack]))
    from infra.stackfile import overlay_values, stack_path

    return overlay_values(yaml.safe_load(stack_path(stack).read_text()), stack)


def test_onprem_neighbors_and_export_modes():
    for stack in ("prod-euw1", "test-use2"):
        plan = PLANS[stack]
        r = plan.routers[0]
        lines = _lines(render_frr(plan, r.name))
        for p in plan.pairings:
            if p.kind == "onprem" and p.a.name == r.name:
                assert f"neighbor {p.b.inner_v4} remote-as {p.b.asn}" in lines
                assert f"neighbor {p.b.inner_v6} remote-as {p.b.asn}" in lines
                assert f"ip route {p.b.outer}/32 {r.subnet.network_address + 1}" in lines
        out = "POOL-V4" if plan.bgp.announce == "aggregates" else "POOL-HOST-V4"
        text = render_frr(plan, r.name)
        block = text[text.index("route-map ONPREM-OUT permit 10") :].splitlines()
        assert block[1].strip() == f"match ip address prefix-list {out}"
        assert "neighbor ONPREM route-map ONPREM-IN in" in lines
        assert "ip prefix-list ONPREM-V4 seq 5 deny 0.0.0.0/0" in lines
        assert f"ip prefix-list ONPREM-V4 seq 10 deny {plan.vpc_cidr} le 32" in lines
    # A stack without on-prem peers has no on-prem policy at all.
    assert "ONPREM" not in render_frr(PLANS["gen-v4only"], "router-1").replace("ONPREM-V4", "")


def test_graceful_restart_follows_config():
    for name in ("router-1", "host-1"):
        off = _lines(render_frr(PLANS["lab"], name))
        assert [line for line in off if "graceful-restart" in line] == ["bgp graceful-restart-disable"]
        on = render_frr(PLANS["gen-large"], name)
        assert [line for line in _lines(on) if "graceful-restart" in line] == ["bgp graceful-restart"]
        assert "restart-time 120 s" in on


def test_graceful_restart_timers_are_frr_defaults():
    with pytest.raises(RenderError, match="must be 120"):
        dataclasses.replace(bgp_settings(PLANS["lab"]), gr_restart_time=60)


@pytest.mark.parametrize("interval, multiplier", [(100, 3), (300, 3), (300, 5), (50, 2)])
def test_bfd_profile_from_config(interval, multiplier):
    raw = {**_raw("lab"), "bgp": {"bfdInterval": interval, "bfdMultiplier": multiplier}}
    plan = build_plan(parse(raw, "lab"))
    for inst in _sample(plan):
        text = render_frr(plan, inst.name)
        lines = _lines(text)
        assert "neighbor OVERLAY bfd" not in lines  # BFD is per peer group, both lines each
        group = "HOSTS" if inst in plan.routers else "ROUTERS"
        assert f"neighbor {group} bfd" in lines and f"neighbor {group} bfd profile OVERLAY" in lines
        # FRR hides its defaults (3 x 300 ms) from its running config: written as comments.
        assert (f"detect-multiplier {multiplier}" in lines) == (multiplier != 3)
        assert (f"receive-interval {interval}" in lines) == (interval != 300)
        assert (f"transmit-interval {interval}" in lines) == (interval != 300)
        if multiplier == 3:
            assert "! detect-multiplier 3 (FRR's default)" in text
        assert f"detected in {interval * multiplier} ms" in text


# -- hosts --------------------------------------------------------------------------


@pytest.mark.parametrize("stack", sorted(PLANS))
def test_host_peers_with_exactly_its_routers(stack):
    plan = PLANS[stack]
    for h in _sample(plan)[len(plan.routers) :]:
        text = render_frr(plan, h.name)
        lines = _lines(text)
        assert f"router bgp {h.asn}" in lines
        got4 = {m for m in re.findall(r"^ neighbor (\S+) peer-group ROUTERS$", text, re.M)}
        want4 = {str(p.a.inner_v4) for p in plan.pairings if p.kind == "host" and p.b.name == h.name}
        assert got4 == want4 and len(want4) == len(plan.routers)
        got6 = {m for m in re.findall(r"^ neighbor (\S+) peer-group ROUTERS6$", text, re.M)}
        want6 = (
            {str(p.a.inner_v6) for p in plan.pairings if p.kind == "host" and p.b.name == h.name}
            if plan.ipv6
            else set()
        )
        assert got6 == want6
        assert f"neighbor ROUTERS remote-as {plan.routers[0].asn}" in lines
        assert "redistribute kernel route-map CONTAINERS-V4" in lines
        cm = text[text.index("route-map CONTAINERS-V4 permit 10") :].splitlines()[:3]
        assert [c.strip() for c in cm[1:]] == ["match ip address prefix-list POOL-HOST-V4", "!"]
        if plan.ipv6:
            assert "redistribute kernel route-map CONTAINERS-V6" in lines
            cm6 = text[text.index("route-map CONTAINERS-V6 permit 10") :].splitlines()[:3]
            assert [c.strip() for c in cm6[1:]] == ["match ipv6 address prefix-list POOL-HOST-V6", "!"]
        # Hosts never accept a default route, nor anything inside the VPC.
        assert "ip prefix-list ROUTERS-V4 seq 100 deny 0.0.0.0/0" in lines
        assert f"ip prefix-list ROUTERS-V4 seq 105 deny {plan.vpc_cidr} le 32" in lines
        assert f"ip route {plan.vpc_cidr} {h.subnet.network_address + 1}" in lines


# -- on-prem side -------------------------------------------------------------------


def test_onprem_side_tunnels_and_neighbors():
    plan = PLANS["prod-euw1"]
    eips = fake_eips(plan)
    for peer in plan.onprem:
        text = render_onprem_frr(plan, peer.name, eips, networks_v4=("192.168.0.0/16",))
        lines = _lines(text)
        assert f"router bgp {peer.asn}" in lines
        assert "neighbor OVERLAY remote-as 65000" in lines
        for p in plan.pairings:
            if p.kind == "onprem" and p.b.name == peer.name:
                assert (
                    f"!   ip link add {p.ifname} type gre local {peer.address} remote {eips[p.a.name]} "
                    f"key {p.key} ttl 64"
                ) in text
                assert f"!   ip address add {p.b.inner_v4}/31 dev {p.ifname}" in text
                assert f"neighbor {p.a.inner_v4} peer-group OVERLAY" in lines
                assert f"neighbor {p.a.inner_v6} peer-group OVERLAY" in lines
        assert "network 192.168.0.0/16" in lines


def test_onprem_side_errors_name_the_problem():
    plan = PLANS["prod-euw1"]
    with pytest.raises(RenderError, match="not an on-prem peer.*dc1-edge, dc2-edge"):
        render_onprem_frr(plan, "dc9", fake_eips(plan))
    with pytest.raises(RenderError, match="no EIP for router-2"):
        render_onprem_frr(plan, "dc1-edge", {"router-1": "192.0.2.1"})
    with pytest.raises(RenderError, match=r"router_eips\[router-1\].*IPv4 address"):
        render_onprem_frr(plan, "dc1-edge", {"router-1": "not-an-ip", "router-2": "192.0.2.2"})
    with pytest.raises(RenderError, match="router-9 not routers"):
        render_onprem_frr(plan, "dc1-edge", {**fake_eips(plan), "router-9": "192.0.2.9"})


# -- secrets and the placeholder ----------------------------------------------------


def test_password_only_as_placeholder_and_never_in_user_data():
    secret = "Xy9-never-render-me"
    raw = {**_raw("prod-euw1"), "bgpPassword": secret}
    plan = build_plan(parse(raw, "prod-euw1"))
    for inst in plan.instances:
        frr = render_frr(plan, inst.name)
        ud = _ud(plan, inst.name)
        assert secret not in frr and secret not in ud
        # The placeholder survives jinja literally, and only on password lines.
        holders = [line.strip() for line in frr.splitlines() if PASSWORD_PLACEHOLDER in line]
        assert holders and all(
            re.fullmatch(r"neighbor \S+ password " + re.escape(PASSWORD_PLACEHOLDER), h) for h in holders
        )
        # The on-prem sessions' own placeholder: on routers' ONPREM group only (review F10).
        onprem_lines = [line.strip() for line in frr.splitlines() if ONPREM_PASSWORD_PLACEHOLDER in line]
        want = [f"neighbor ONPREM password {ONPREM_PASSWORD_PLACEHOLDER}"] if inst in plan.routers else []
        assert onprem_lines == want
        # Nothing but comments may even mention a password.
        assert PASSWORD_PLACEHOLDER not in ud and "password" not in json.dumps(yaml.safe_load(ud)).lower()
    onprem = render_onprem_frr(plan, "dc1-edge", fake_eips(plan))
    assert secret not in onprem and ONPREM_PASSWORD_PLACEHOLDER in onprem and PASSWORD_PLACEHOLDER not in onprem


def test_bgp_settings_refuse_a_real_password():
    good = bgp_settings(PLANS["lab"])
    with pytest.raises(RenderError, match="must be the placeholder") as err:
        dataclasses.replace(good, password="hunter2")
    assert "hunter2" not in str(err.value)


# -- user data ----------------------------------------------------------------------


@pytest.mark.parametrize("stack", sorted(PLANS))
def test_user_data_shape(stack):
    plan = PLANS[stack]
    for inst in _sample(plan):
        text = _ud(plan, inst.name)
        assert text.startswith("#cloud-config\n")
        doc = yaml.safe_load(text)
        files = {f["path"]: f for f in doc["write_files"]}
        assert files["/etc/iproute2/rt_protos.d/overlay.conf"]["content"].strip() == f"{plan.route_protocol} overlay"
        boot = json.loads(files["/etc/overlay-agent/bootstrap.json"]["content"])
        assert boot == {
            "schema": 1,
            "project": plan.project,
            "stack": plan.stack,
            "instance": inst.name,
            "role": "router" if inst in plan.routers else "host",
            "region": plan.region,
            "parameter_path": f"/{plan.project}/{plan.stack}/instances/{inst.name}",
        }
        daemons = files["/etc/overlay-agent/frr-daemons"]
        enabled = {line.split("=")[0] for line in daemons["content"].splitlines() if line.endswith("=yes")}
        assert enabled == {"zebra", "bgpd", "bfdd", "staticd", "vtysh_enable"}
        # The datacenter profile from the daemons' first start, not only after a reboot.
        assert 'frr_profile="datacenter"' in daemons["content"].splitlines()
        install = files["/usr/local/sbin/overlay-agent-install"]["content"]
        # The bundle from the stack's bucket, installed without PyPI and by hash only.
        assert f"s3://{BUCKET}/{AGENT_KEY}" in install and "python3 -m venv /opt/overlay-agent" in install
        # The image has every package (image/provision.sh): first boot installs none.
        assert "apt-get" not in install and "the image lacks" in install
        # `overlay-agent status` works from an operator's shell (PATH has /usr/local/bin).
        assert "ln -sf /opt/overlay-agent/bin/overlay-agent /usr/local/bin/overlay-agent" in install
        assert "--no-index --require-hashes" in install
        assert "install -o frr -g frr -m 0640 /etc/overlay-agent/frr-daemons /etc/frr/daemons" in install
        # No one-shot installs by cloud-init: the retrying unit does them (F4, F6).
        assert "packages" not in doc and "package_update" not in doc
        unit = files["/etc/systemd/system/overlay-agent-install.service"]["content"]
        assert "Restart=on-failure" in unit and "StartLimitIntervalSec=0" in unit and "journal+console" in unit
        agent = files["/etc/systemd/system/overlay-agent.service"]["content"]
        assert "--gre-backend kernel" in agent and "KillMode" not in agent
        assert "/etc/systemd/system/overlay-gre.service" not in files  # kernel GRE: no daemon
        # Operator access: the image's SSM agent (Image Builder keeps it), nothing at boot.
        assert not [f for f in files if "ssm" in f]
        runcmd = " ".join(" ".join(c) for c in doc["runcmd"])
        assert "overlay-agent-install.service" in runcmd
        pkgs = install.split("for p in ", 1)[1].split(";", 1)[0].split()
        assert "frr" in pkgs and "frr-pythontools" in pkgs and "awscli" in pkgs
        sysctl = files["/etc/sysctl.d/90-overlay.conf"]["content"]
        assert "net.ipv4.ip_forward = 1" in sysctl and "net.ipv4.conf.all.rp_filter = 2" in sysctl
        if inst in plan.routers:
            assert "tcp option maxseg size set rt mtu" in files["/etc/overlay-agent/mss-clamp.nft"]["content"]
            assert "docker.io" not in pkgs and "nftables" in pkgs
            assert "systemctl start overlay-mss-clamp.service" in install
            assert "docker.service" not in install
            enable = "SYSTEMCTL_SKIP_SYSV=1 systemctl enable --quiet --no-reload"
            assert f"{enable} frr.service overlay-mss-clamp.service overlay-agent.service\n" in install
        else:
            assert "docker.io" in pkgs and "apparmor" in pkgs
            # Hosts' only nftables file is the containers' egress NAT (docs/egress.md).
            assert [p for p in files if p.endswith(".nft")] == ["/etc/overlay-agent/egress.nft"]
            assert "nftables" in pkgs and "systemctl start overlay-egress.service" in install
            # Enabled for later boots in one call (no SysV update-rc.d, no daemon reload), after
            # FRR's daemons file is in place: a reboot never starts FRR with Debian's.
            enable = (
                "SYSTEMCTL_SKIP_SYSV=1 systemctl enable --quiet --no-reload frr.service docker.socket "
                "docker.service overlay-egress.service overlay-agent.service\n"
            )
            assert install.index("install -o frr -g frr -m 0640") < install.index(enable)
            # F3: dockerd must find forwarding on, or it sets FORWARD to DROP: the image
            # leaves Docker disabled and the install starts it after loading the sysctls.
            assert install.index("sysctl --quiet --system") < install.index(
                "systemctl start docker.socket docker.service"
            )
            dropin = files["/etc/systemd/system/docker.service.d/10-overlay-forwarding.conf"]["content"]
            assert "ExecStartPre=/usr/sbin/sysctl --quiet --load=/etc/sysctl.d/90-overlay.conf" in dropin


def test_user_data_fits_ec2_limit_for_every_instance_of_the_largest_stack():
    plan = generated_plan("gen-large")
    assert len(plan.hosts) == 500
    sizes = [len(_ud(plan, inst.name).encode()) for inst in plan.instances]
    assert max(sizes) <= USER_DATA_LIMIT == 16384
    # Routers' and hosts' user data do not grow with the stack: same size as the lab's, give or take names.
    lab = max(len(_ud(PLANS["lab"], i.name).encode()) for i in PLANS["lab"].instances)
    assert max(sizes) - lab < 200


def test_user_data_over_the_limit_is_an_error(monkeypatch):
    import infra.render as render

    monkeypatch.setattr(render, "USER_DATA_LIMIT", 1000)
    with pytest.raises(RenderError, match="EC2 accepts at most 1000"):
        _ud(PLANS["lab"], "host-1")


@pytest.mark.parametrize("stack", sorted(PLANS))
def test_frr_text_fits_one_ssm_parameter(stack):
    plan = PLANS[stack]
    for inst in _sample(plan):
        assert len(render_frr(plan, inst.name).encode()) <= ADVANCED_MAX


# -- contexts: valid and invalid ----------------------------------------------------


def test_contexts_from_every_plan_are_valid():
    for plan in PLANS.values():
        for r in plan.routers:
            assert isinstance(router_context(plan, r), RouterFrrContext)
        for h in _sample(plan)[len(plan.routers) :]:
            assert isinstance(host_context(plan, h), HostFrrContext)
            assert isinstance(
                user_data_context(
                    plan, h.name, bucket=BUCKET, agent_key=AGENT_KEY, parameter_path="/overlay/x/instances/h"
                ),
                UserDataContext,
            )


def test_contexts_carry_the_plans_validated_values_and_do_not_check_them_again():
    """Review W2: the stack's BGP settings are the config's own object (validated once, by
    infra/config.py), not a restated copy with checks of its own that can drift."""
    plan = PLANS["gen-large"]
    assert router_context(plan, plan.routers[0]).bgp.config is plan.bgp
    assert host_context(plan, plan.hosts[0]).bgp.config is plan.bgp
    ctx = _router_ctx()
    # A context is the plan's values as the templates want them: built, not judged.
    assert dataclasses.replace(ctx, listen_limit=70000).listen_limit == 70000


def _router_ctx():
    plan = PLANS["lab"]
    return router_context(plan, plan.routers[0])


def test_more_pools_than_the_filters_number_is_a_template_error():
    plan = PLANS["lab"]
    many = dataclasses.replace(plan, pools_v4=tuple(ipaddress.ip_network(f"10.{i}.0.0/16") for i in range(17)))
    with pytest.raises(RenderError, match=r"^pools.ipv4 = .*: the FRR filters take at most 16$"):
        render_frr(many, "router-1")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"bucket": "Bad_Bucket"}, "bucket = 'Bad_Bucket'"),
        ({"agent_key": "agent/overlay.zip"}, "agent_key = 'agent/overlay.zip'"),
        ({"agent_key": "agent/overlay_agent-0.1.0.tar.gz"}, "agent bundle"),
        ({"agent_key": "/abs/overlay-agent-bundle.tar"}, "agent_key"),
        ({"parameter_path": "overlay/lab"}, "bootstrap: parameter_path: 'overlay/lab' is not the instance's SSM"),
    ],
)
def test_user_data_arguments_rejected(kwargs, message):
    args = {"bucket": BUCKET, "agent_key": AGENT_KEY, "parameter_path": "/overlay/lab/instances/host-1", **kwargs}
    with pytest.raises(RenderError, match=re.escape(message)):
        render_user_data(PLANS["lab"], "host-1", **args)


def test_a_bootstrap_the_agent_would_refuse_is_a_render_error():
    plan = dataclasses.replace(PLANS["lab"], region="Europe")
    with pytest.raises(RenderError, match=r"^bootstrap: region: 'Europe' is not an AWS region name"):
        render_user_data(
            plan, "host-1", bucket=BUCKET, agent_key=AGENT_KEY, parameter_path="/overlay/lab/instances/host-1"
        )


def test_unknown_instance_names_the_known_ones():
    with pytest.raises(
        RenderError, match=r"'host-9': not in stack lab \(instances: router-1, router-2, host-1, host-2\)"
    ):
        render_frr(PLANS["lab"], "host-9")
    with pytest.raises(RenderError, match="host-9"):
        _ud(PLANS["lab"], "host-9")


# -- templates are strict -----------------------------------------------------------


def test_template_reading_a_missing_value_fails_loudly():
    # The host template given a router's context: the first name it lacks is an error, not "".
    plan = PLANS["lab"]
    with pytest.raises(RenderError, match=r"frr-host.conf.j2: .*(undefined|has no attribute).*context does not have"):
        render_template("frr-host.conf.j2", router_context(plan, plan.routers[0]))
    with pytest.raises(RenderError, match="undefined|has no attribute"):
        render_template("frr-router.conf.j2", host_context(plan, plan.hosts[0]))


def test_template_context_must_be_a_dataclass():
    with pytest.raises(RenderError, match="must be a context dataclass"):
        render_template("frr-host.conf.j2", {"hostname": "x"})


def test_every_template_renders_only_from_its_own_context():
    # Each role's template reads nothing outside its context: rendering succeeds with exactly
    # the context's fields (StrictUndefined would raise on anything else).
    plan = PLANS["prod-euw1"]
    for ctx, name in (
        (router_context(plan, plan.routers[0]), "frr-router.conf.j2"),
        (host_context(plan, plan.hosts[0]), "frr-host.conf.j2"),
    ):
        text = render_template(name, ctx)
        assert "None" not in text and "{{" not in text
    ud = _ud(plan, "router-1") + _ud(plan, "host-1")
    assert "None" not in ud and "{{" not in ud and "{%" not in ud


def test_rendering_is_deterministic():
    plan = PLANS["prod-euw1"]
    for inst in plan.instances:
        assert render_frr(plan, inst.name) == render_frr(plan, inst.name)
        assert _ud(plan, inst.name) == _ud(plan, inst.name)


def test_ipv6_off_renders_ipv4_only():
    plan = PLANS["gen-v4only"]
    for inst in plan.instances:
        text = "\n".join(_lines(render_frr(plan, inst.name)))
        assert "ipv6" not in text.lower()
        for token in re.findall(r"\b[0-9a-f:]+::[0-9a-f:/]*", text):
            pytest.fail(f"IPv6 address {token} in an IPv4-only stack")


def test_user_data_gre_backend_is_checked():
    ctx = user_data_context(
        PLANS["lab"], "host-1", bucket=BUCKET, agent_key=AGENT_KEY, parameter_path="/overlay/lab/instances/host-1"
    )
    assert ctx.gre_backend == "kernel"
    with pytest.raises(RenderError, match="gre_backend = 'tun'"):
        dataclasses.replace(ctx, gre_backend="tun")


def test_onprem_limit_counts_what_the_stack_may_announce_in_specifics_mode():
    """Review finding 8: in specifics mode on-prem hears every host's /32s; its limit follows."""
    plan = PLANS["test-use2"]
    assert plan.bgp.announce == "specifics"
    text = render_onprem_frr(plan, plan.onprem[0].name, {r.name: f"192.0.2.{r.index + 1}" for r in plan.routers})
    h = plan.hosts[0]
    v4 = 1 + len(plan.hosts) * h.block_v4.num_addresses + sum(n.num_addresses for n in plan.shared_v4)
    v6 = 1 + len(plan.hosts) * h.block_v6.num_addresses + sum(n.num_addresses for n in plan.shared_v6)
    assert re.findall(r"maximum-prefix (\d+) restart", text) == [str(v4), str(v6)]
    lab = PLANS["lab"]  # aggregates: the pools only, the configured limit
    text = render_onprem_frr(lab, lab.onprem[0].name, {r.name: f"192.0.2.{r.index + 1}" for r in lab.routers})
    assert re.findall(r"maximum-prefix (\d+) restart", text) == [str(lab.bgp.max_prefix)] * 2
