"""The machine image recipe (image/): one package list and one script for AWS (Image Builder) and the lab's VMs."""

from __future__ import annotations

import subprocess

import yaml

from infra import image_recipe
from infra.render import PACKAGES
from lab.vm import image as vmimage


def test_the_image_has_every_package_a_role_checks_for_at_first_boot():
    baked = set(image_recipe.packages())
    for role, needed in PACKAGES.items():
        assert set(needed) <= baked, f"{role}: {sorted(set(needed) - baked)} not in image/packages.txt"


def test_provision_script_is_posix_sh_and_leaves_docker_and_frr_to_the_user_data():
    script = image_recipe.PROVISION_SCRIPT.read_text()
    subprocess.run(["sh", "-n", str(image_recipe.PROVISION_SCRIPT)], check=True)
    # Review F3: dockerd must not start before the user data's forwarding sysctls.
    assert "systemctl disable docker.service docker.socket containerd.service frr.service" in script
    assert "--no-install-recommends" in script and "python3 -m venv /opt/overlay-agent" in script
    # The agent's dependencies are baked by hash (first boot installs only the agent's wheel).
    assert "--require-hashes" in script and '-r "$lock"' in script
    # cloud-init's locale module needs Debian's default locale, or the config stage fails.
    assert "locales" in image_recipe.packages() and "locale-gen" in script


def test_component_document_carries_the_two_files_verbatim_and_runs_the_script():
    doc = yaml.safe_load(image_recipe.component_document())
    build, validate = doc["phases"]
    write, run = (s["inputs"]["commands"][0] for s in build["steps"])
    assert image_recipe.PACKAGES_FILE.read_text() in write and image_recipe.PROVISION_SCRIPT.read_text() in write
    assert image_recipe.LOCK_FILE.read_text() in write
    assert (
        run == "sh /tmp/overlay-image/provision.sh /tmp/overlay-image/packages.txt /tmp/overlay-image/requirements.lock"
    )
    check = validate["steps"][0]["inputs"]["commands"][0]
    assert all(p in check for p in image_recipe.packages())
    assert len(image_recipe.component_document()) <= image_recipe.COMPONENT_DATA_LIMIT


def test_build_instance_installs_the_ssm_agent_as_aws_documents_for_debian():
    text = image_recipe.build_user_data("eu-west-1", "arm64")
    assert "https://s3.eu-west-1.amazonaws.com/amazon-ssm-eu-west-1/latest/debian_arm64/amazon-ssm-agent.deb" in text
    assert "systemctl enable --now amazon-ssm-agent.service" in text


def test_lab_image_is_rebuilt_when_the_recipe_changes(tmp_path, monkeypatch):
    before = vmimage.recipe_hash()
    assert vmimage.RECIPE_DIR == image_recipe.RECIPE_DIR
    copy = tmp_path / "image"
    copy.mkdir()
    for f in ("packages.txt", "provision.sh"):
        (copy / f).write_text((image_recipe.RECIPE_DIR / f).read_text())
    monkeypatch.setattr(vmimage, "RECIPE_DIR", copy)
    assert vmimage.recipe_hash() == before
    (copy / "packages.txt").write_text((copy / "packages.txt").read_text() + "jq\n")
    assert vmimage.recipe_hash() != before
