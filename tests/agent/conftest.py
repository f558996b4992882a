"""Fixtures for the agent tests: one docker host site per module, a fresh agent per test."""

from __future__ import annotations

import shutil

import pytest

from lab import frr as frr_mod
from lab.agentsite import Site
from lab import netns as ns


def _skip_unless_ready(with_frr: bool) -> None:
    if not ns.have_root_netns():
        pytest.skip("needs root and iproute2 for network namespaces")
    if shutil.which("dockerd") is None:
        pytest.skip("needs dockerd (Debian docker.io)")
    if with_frr and not frr_mod.available():
        pytest.skip("needs FRR (zebra, bgpd, vtysh)")


def running_site(with_frr: bool):
    """A started Site for a module fixture to yield from; always stopped."""
    _skip_unless_ready(with_frr=with_frr)
    s = Site(with_frr=with_frr)
    try:
        s.start()
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def site():
    """Host + router namespaces with FRR peering, dockerd in the host; removed at module end."""
    yield from running_site(with_frr=True)


@pytest.fixture
def agent(site):
    """A running agent; at the end the agent stops and every container is removed."""
    a = site.agent().start()
    try:
        a.wait_ready()
        yield a
    finally:
        a.stop()
        site.remove_all()
