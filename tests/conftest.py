"""Shared fixtures: per-test network namespaces that are always removed."""

from __future__ import annotations

import pytest

from lab import daemon
from lab import netns as _netns


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM (a CI timeout, `kill`) stops the session as ^C does, so fixtures still tear
    down their labs, VMs, namespaces and daemons; by default it would end pytest on the spot."""
    daemon.unwind_on_sigterm(lambda signum: KeyboardInterrupt(f"signal {signum}"))


@pytest.fixture
def netns_factory():
    """Create namespaces on demand; every one is destroyed at teardown, pass or fail."""
    if not _netns.have_root_netns():
        pytest.skip("needs root and iproute2 for network namespaces")
    made: list[str] = []

    def make(tag: str = "") -> str:
        name = _netns.unique_name(tag)
        made.append(name)
        return _netns.create(name)

    try:
        yield make
    finally:
        for name in reversed(made):
            _netns.destroy(name)


@pytest.fixture
def netns(netns_factory) -> str:
    """One fresh namespace for this test."""
    return netns_factory("t")


@pytest.fixture(scope="module")
def moto_endpoint():
    """moto's AWS APIs in server mode on loopback (real HTTP), one per test module."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
