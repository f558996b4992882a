"""The pure parts of `lab up --vms`: what each VM's seed says, and when the image is rebuilt."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from infra.parameters import instance_path
from infra.program import AGENT_KEY
from infra.render import render_user_data
from lab import stack
from lab.vm import image, machine
from lab.vm import stack as vmstack

STACKS = Path(__file__).resolve().parent.parent / "vm" / "stacks"


def test_each_vm_gets_its_eni_address_and_the_lab_endpoints_outside_the_user_data():
    lab = stack.Lab.load("vmlab", STACKS, say=lambda _: None)
    pairs = vmstack.vms(lab)
    assert [i.name for i, _ in pairs] == ["router-1", "host-1"]
    macs = set()
    for inst, vm in pairs:
        net = json.loads(vmstack.network_config(inst, vm))
        eni = net["ethernets"]["ens5"]
        assert eni["addresses"] == [f"{inst.address}/{inst.segment.cidr.prefixlen}", f"{inst.address_v6}/64"]
        # The ENI is the only NIC (no internet at boot): default routes via the VPC router.
        assert list(net["ethernets"]) == ["ens5"]
        assert (eni["gateway4"], eni["gateway6"]) == (str(inst.segment.gateway), str(inst.segment.gateway_v6))
        assert "routes" not in eni  # cloud-init renders those with net-tools' `route`, not in the image
        macs.add(machine.mac(vm, 1))
        assert vm.tap == inst.vpc_port  # the tap takes the namespace veth's place on the bridge
        env = vmstack.vendor_data(inst)
        assert f"AWS_ENDPOINT_URL=http://{inst.segment.gateway}:4566" in env
        # The VM boots the program's own user data, which knows nothing of the lab.
        ud = render_user_data(
            lab.plan,
            inst.name,
            bucket=vmstack.bucket_name(lab),
            agent_key=AGENT_KEY,
            parameter_path=instance_path(lab.plan, inst.name),
        )
        assert "4566" not in ud and "AWS_ENDPOINT_URL=" not in ud
    assert len(macs) == 2


def test_image_recipe_hash_follows_the_recipe(monkeypatch):
    first = image.recipe_hash()
    assert image.recipe_hash() == first
    monkeypatch.setattr(image, "BASE_PACKAGES", image.BASE_PACKAGES + ("tcpdump",))
    assert image.recipe_hash() != first
    monkeypatch.undo()
    monkeypatch.setattr(image, "RECIPE_VERSION", image.RECIPE_VERSION + 1)
    assert image.recipe_hash() != first
    assert image.current().dir.name == image.recipe_hash()


@pytest.mark.skipif(os.geteuid() != 0, reason="raising another process's scheduling class needs root")
def test_background_priority_is_raised_for_every_thread_of_every_marked_process():
    """lab/vm/background.py finds what the background `lab up` started by its environment
    mark, wherever it was reparented, and raises each thread from SCHED_IDLE."""
    from lab.vm import background

    token = f"test-{os.getpid()}"
    code = "import threading, time; threading.Thread(target=time.sleep, args=(60,)).start(); time.sleep(60)"
    marked = subprocess.Popen(
        ["chrt", "--idle", "0", sys.executable, "-c", code], env={**os.environ, background.MARK: token}
    )
    other = subprocess.Popen(["chrt", "--idle", "0", "sleep", "60"])
    try:
        tasks = Path(f"/proc/{marked.pid}/task")
        deadline = time.monotonic() + 10
        while len(list(tasks.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        tids = [int(t.name) for t in tasks.iterdir()]
        assert len(tids) == 2 and all(os.sched_getscheduler(t) == os.SCHED_IDLE for t in tids)
        assert background.raise_priority(token) == 1
        assert [os.sched_getscheduler(t) for t in tids] == [os.SCHED_OTHER] * 2
        assert os.sched_getscheduler(other.pid) == os.SCHED_IDLE  # not marked: left alone
    finally:
        for p in (marked, other):
            p.kill()
            p.wait()
