"""Every stack in stacks/ boots in the lab and its demo passes (sessions, reachability from on-prem, ECMP)."""

from __future__ import annotations

import os

import pytest
import yaml

from infra.stackfile import list_stacks, stack_path
from lab import demo
from tests.support.labrun import require_lab, running_lab

pytestmark = [pytest.mark.lab, pytest.mark.root, pytest.mark.frr, pytest.mark.docker]


# `lab` itself is covered in depth by test_lab_e2e.py.
@pytest.mark.parametrize("source", [s for s in list_stacks() if s != "lab"])
def test_stack_boots_and_demo_passes(source, tmp_path):
    require_lab()
    # A copy under a name of our own, so a user's running lab of that stack is never touched.
    name = f"s{os.getpid() % 1000}{source[:4]}"
    (tmp_path / f"Pulumi.{name}.yaml").write_text(yaml.safe_dump(yaml.safe_load(stack_path(source).read_text())))
    with running_lab(name, tmp_path, print) as lab:
        assert demo.run(lab) == 0
