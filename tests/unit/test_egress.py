"""Container egress (docs/egress.md): the docker hosts' NAT ruleset and its place in their user data."""

from __future__ import annotations

import yaml

from infra.plan import build_plan
from infra.render import PACKAGES, render_egress_nft, render_user_data
from infra.stackfile import load_stack


def test_ruleset_translates_only_what_containers_start_toward_the_outside():
    plan = build_plan(load_stack("prod-euw1"))
    text = render_egress_nft(plan)
    # Re-runnable: it replaces its own table.
    assert text.index("table inet overlay_egress\ndelete table inet overlay_egress\n") < text.index("{")
    assert "elements = { 10.20.0.0/16, 10.96.0.0/16 }" in text  # VPC and pools keep their address
    assert "type nat hook postrouting priority srcnat; policy accept;" in text
    # Tunnels (other hosts' containers, on-prem) and containers' own veths are left alone.
    assert text.index('oifname "gre-*" return') < text.index("masquerade")
    assert text.index('oifname "ovc*" return') < text.index("masquerade")
    assert "ip saddr @pools4 ip daddr != @keep4 masquerade" in text
    assert "ip6 saddr @pools6 ip6 daddr != @pools6 masquerade" in text and "fd10:96::/48" in text


def test_ipv4_only_stack_has_no_ipv6_rule():
    from tests.support.render_plans import all_plans

    v4 = all_plans()["gen-v4only"]
    text = render_egress_nft(v4)
    assert "ip6" not in text and "pools6" not in text


def test_hosts_load_it_after_nftables_is_installed_and_routers_do_not():
    plan = build_plan(load_stack("prod-euw1"))
    assert "nftables" in PACKAGES["host"]
    host = render_user_data(
        plan,
        "host-1",
        bucket="b-1234",
        agent_key="agent/overlay-agent.tar",
        parameter_path="/overlay/prod-euw1/instances/host-1",
    )
    files = {f["path"]: f["content"] for f in yaml.safe_load(host)["write_files"]}
    assert files["/etc/overlay-agent/egress.nft"].strip() == render_egress_nft(plan).strip()
    assert (
        "ExecStart=/usr/sbin/nft -f /etc/overlay-agent/egress.nft"
        in files["/etc/systemd/system/overlay-egress.service"]
    )
    install = files["/usr/local/sbin/overlay-agent-install"]
    # Enabled once the image's nftables is checked present (image/packages.txt).
    assert install.index("the image lacks") < install.index("systemctl start overlay-egress.service")
    router = render_user_data(
        plan,
        "router-1",
        bucket="b-1234",
        agent_key="agent/overlay-agent.tar",
        parameter_path="/overlay/prod-euw1/instances/router-1",
    )
    assert "overlay_egress" not in router and "overlay-egress" not in router
