"""Every stack in stacks/ boots in the lab and its demo passes (sessions, reachability from on-prem, ECMP)."""
from __future__ import annotations

import os
import shutil

import pytest
import yaml

from infra.stackfile import list_stacks, stack_path
from lab import demo, stack
from lab.frr import available as frr_available
from lab.underlay import lab_namespaces
from tests.support.netns import have_root_netns

pytestmark = [pytest.mark.lab, pytest.mark.root, pytest.mark.frr, pytest.mark.docker]


# `lab` itself is covered in depth by test_lab_e2e.py.
@pytest.mark.parametrize("source", [s for s in list_stacks() if s != "lab"])
def test_stack_boots_and_demo_passes(source, tmp_path):
    if not have_root_netns() or not frr_available() or not shutil.which("dockerd"):
        pytest.skip("needs root, FRR and dockerd")
    # A copy under a name of our own, so a user's running lab of that stack is never touched.
    name = f"s{os.getpid() % 1000}{source[:4]}"
    (tmp_path / f"Pulumi.{name}.yaml").write_text(yaml.safe_dump(yaml.safe_load(stack_path(source).read_text())))
    lab = stack.Lab.load(name, tmp_path, say=print)
    try:
        stack.up(lab)
        assert demo.run(lab) == 0
    finally:
        stack.down(lab)
    assert lab_namespaces(name) == []
