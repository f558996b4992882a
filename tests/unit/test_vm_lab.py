"""The pure parts of `lab up --vms`: what each VM's seed says, and when the image is rebuilt."""

from __future__ import annotations

import json
from pathlib import Path

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
