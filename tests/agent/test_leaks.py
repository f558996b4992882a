"""500 container start/stop cycles through the agent leave no link, route or address behind."""

from __future__ import annotations

import os
import threading

import pytest

from tests.agent.conftest import running_site
from lab.poll import wait_until

pytestmark = [pytest.mark.root, pytest.mark.docker]

CYCLES = int(os.environ.get("OVERLAY_LEAK_CYCLES", "500"))
WORKERS = 4


@pytest.fixture(scope="module")
def bare_site():
    yield from running_site(with_frr=False)


def test_500_start_stop_cycles_leak_nothing(bare_site):
    site = bare_site
    agent = site.agent().start()
    try:
        agent.wait_ready()
        links_before = sorted(site.host_links())
        assert site.host_routes() == {}
        errors: list[str] = []
        counter = iter(range(CYCLES))
        lock = threading.Lock()

        def worker(w: int) -> None:
            client = site.dockerd.client()
            try:
                while True:
                    with lock:
                        i = next(counter, None)
                    if i is None:
                        return
                    labels = (
                        {"overlay": "auto"}
                        if i % 2
                        else {"overlay.ipv4": f"100.64.{40 + w}.{1 + i % 250}", "overlay.anycast": "true"}
                    )
                    c = client.containers.run(
                        site.image, ["sleep", "600"], labels=labels, network_mode="none", detach=True
                    )
                    veth = "ovc" + c.id[:12]
                    try:
                        # Wired for real (route through its veth) before it goes away. Every
                        # label set gives an IPv4 address; one `ip netns exec` per poll, every
                        # 0.1 s: four workers polling both families at 50 Hz spawned up to 400
                        # processes a second, competing with dockerd and the agent for 2 cores.
                        wait_until(
                            lambda veth=veth: veth in site.host_routes(("-4",)).values(),
                            20,
                            interval=0.1,
                            what=f"route via {veth}",
                        )
                    except AssertionError as exc:
                        errors.append(str(exc))
                    # Alternate the ways a container ends: kill+rm, stop, rm -f.
                    if i % 3 == 0:
                        c.kill()
                        c.remove()
                    elif i % 3 == 1:
                        c.stop(timeout=0)
                        c.remove()
                    else:
                        c.remove(force=True)
            finally:
                client.close()

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(WORKERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        wait_until(lambda: site.host_routes() == {}, 20, what="no routes of protocol 149 left")
        wait_until(lambda: sorted(site.host_links()) == links_before, 20, what="no veth left")
        metrics = agent.metrics()
        assert "overlay_containers_wired 0.0" in metrics
        assert f'overlay_netlink_changes_total{{kind="wire"}} {float(CYCLES)}' in metrics
        assert agent.proc.poll() is None
        assert "Traceback" not in agent.log_text()
    finally:
        agent.stop()
