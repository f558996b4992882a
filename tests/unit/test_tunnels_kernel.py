"""Kernel GRE shim: pyroute2 messages as the kernel sends them -> GreLink; requests use pyroute2's GRE attributes."""

from __future__ import annotations

from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from overlay_agent.gre.base import LinkSpec
from overlay_agent.gre.kernel import ALIAS, GRE_KEY, KernelBackend, PyrouteGre


def message(index, name, kind=None, alias=None, data=None, mtu=1472):
    """Encode and decode an RTM_NEWLINK the way a dump delivers it."""
    m = ifinfmsg()
    m["index"] = index
    attrs = [("IFLA_IFNAME", name), ("IFLA_MTU", mtu)]
    if alias:
        attrs.append(("IFLA_IFALIAS", alias))
    if kind:
        info = [("IFLA_INFO_KIND", kind)]
        if data:
            info.append(("IFLA_INFO_DATA", {"attrs": data}))
        attrs.append(("IFLA_LINKINFO", {"attrs": info}))
    m["attrs"] = attrs
    m.encode()
    out = ifinfmsg(m.data)
    out.decode()
    return out


class FakeIPRoute:
    def __init__(self, msgs):
        self.msgs = msgs
        self.calls = []

    def get_links(self):
        return self.msgs

    def link_lookup(self, ifname):
        return [m["index"] for m in self.msgs if m.get("ifname") == ifname]

    def link(self, cmd, **kw):
        self.calls.append((cmd, kw))


def gre_data(local, remote, key, ttl=64):
    data = [("IFLA_GRE_LOCAL", local), ("IFLA_GRE_REMOTE", remote), ("IFLA_GRE_TTL", ttl)]
    if key is not None:
        data += [
            ("IFLA_GRE_IKEY", key),
            ("IFLA_GRE_OKEY", key),
            ("IFLA_GRE_IFLAGS", GRE_KEY),
            ("IFLA_GRE_OFLAGS", GRE_KEY),
        ]
    return data


def test_dump_parsing_keys_alias_and_foreign_links():
    ipr = FakeIPRoute(
        [
            message(1, "lo"),
            message(2, "gre0", "gre", None, gre_data("0.0.0.0", "0.0.0.0", None, 0), mtu=1476),
            message(7, "gre-1", "gre", ALIAS, gre_data("10.40.0.10", "10.40.128.10", 1)),
            message(8, "gre-9", "gre", "someone else", gre_data("10.40.0.10", "10.40.9.9", 9)),
            message(9, "eth0", "veth"),
        ]
    )
    links = {g.name: g for g in PyrouteGre(ipr).gre_links()}
    assert set(links) == {"gre0", "gre-1", "gre-9"}
    g = links["gre-1"]
    assert (g.index, g.alias, g.local, g.remote, g.ikey, g.okey, g.ttl, g.mtu) == (
        7,
        ALIAS,
        "10.40.0.10",
        "10.40.128.10",
        1,
        1,
        64,
        1472,
    )
    assert links["gre0"].okey is None  # no GRE_KEY flag: the key field is not used
    assert KernelBackend(PyrouteGre(ipr)).list() == {
        "gre-1": LinkSpec("gre-1", "10.40.0.10", "10.40.128.10", 1, 64, 1472)
    }


def test_requests_use_pyroute2_gre_attributes():
    ipr = FakeIPRoute([message(7, "gre-1")])
    PyrouteGre(ipr).gre_add(LinkSpec("gre-1", "10.40.0.10", "10.40.128.10", 1, 64, 1472), ALIAS)
    (cmd, kw), (cmd2, kw2) = ipr.calls
    assert cmd == "add" and kw["kind"] == "gre" and kw["gre_iflags"] == kw["gre_oflags"] == GRE_KEY
    # every gre_* keyword is an attribute pyroute2 knows for kind "gre" (IFLA_GRE_*)
    names = {n for n, _ in ifinfmsg.ifinfo.gre_data.nla_map}
    assert {f"IFLA_{k.upper()}" for k in kw if k.startswith("gre_")} <= names
    assert cmd2 == "set" and kw2 == {"index": 7, "mtu": 1472, "ifalias": ALIAS}
