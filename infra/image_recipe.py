"""The overlay's machine image recipe (image/packages.txt + image/provision.sh + the agent's
hostagent/requirements.lock) as the program hands it to EC2 Image Builder; pure (reads the files, no AWS).

The same files build the lab's VM image (lab/vm/image.py, natively in a chroot), so the
VM test boots what the stack's instances boot: Debian 12 with FRR, docker.io, nftables,
awscli and the agent's virtualenv with its pinned dependencies baked in, and first boot only
configures them and installs the agent's own wheel from the bundle.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml

from infra.stackfile import REPO_ROOT

RECIPE_DIR = REPO_ROOT / "image"
PACKAGES_FILE = RECIPE_DIR / "packages.txt"
PROVISION_SCRIPT = RECIPE_DIR / "provision.sh"
# The agent's pinned, hashed dependencies: baked into the image's virtualenv, so first boot
# installs only the agent's own wheel (the bundle pins the same versions).
LOCK_FILE = REPO_ROOT / "hostagent" / "requirements.lock"
# Where the Image Builder component writes the recipe on the build instance.
BUILD_DIR = "/tmp/overlay-image"
# Image Builder refuses component documents over 16,000 characters (CreateComponent `data`).
COMPONENT_DATA_LIMIT = 16000


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the scripts) as literal blocks, readable in the console and the state."""


_Dumper.add_representer(
    str,
    lambda dumper, text: dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text else None),
)


def packages(path: Path = PACKAGES_FILE) -> tuple[str, ...]:
    """The package names the recipe installs (comments and blank lines skipped)."""
    out: list[str] = []
    for line in path.read_text().splitlines():
        out.extend(line.split("#", 1)[0].split())
    return tuple(out)


def digest() -> str:
    """What the image is made of (the three files): names the Image Builder resources, which
    AWS never changes in place (a component or recipe version is immutable)."""
    h = hashlib.sha256()
    for path in (PACKAGES_FILE, PROVISION_SCRIPT, LOCK_FILE):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def component_document() -> str:
    """The Image Builder (AWSTOE) component: writes the three files and runs the script, then
    checks that every package is installed. Raises ValueError past Image Builder's size limit."""
    write = (
        f"mkdir -p {BUILD_DIR}\n"
        f"cat > {BUILD_DIR}/packages.txt <<'OVERLAY_PACKAGES'\n{PACKAGES_FILE.read_text()}OVERLAY_PACKAGES\n"
        f"cat > {BUILD_DIR}/provision.sh <<'OVERLAY_PROVISION'\n{PROVISION_SCRIPT.read_text()}OVERLAY_PROVISION\n"
        f"cat > {BUILD_DIR}/requirements.lock <<'OVERLAY_LOCK'\n{LOCK_FILE.read_text()}OVERLAY_LOCK\n"
    )
    check = (
        "for p in "
        + " ".join(packages())
        + "; do dpkg-query -W -f='${Status}\\n' \"$p\" | grep -qx 'install ok installed' || { echo \"missing $p\"; exit 1; }; done"
    )
    doc = {
        "name": "overlay-provision",
        "description": "The overlay's machine image: image/provision.sh with image/packages.txt",
        "schemaVersion": 1.0,
        "phases": [
            {
                "name": "build",
                "steps": [
                    {"name": "WriteRecipe", "action": "ExecuteBash", "inputs": {"commands": [write]}},
                    {
                        "name": "Provision",
                        "action": "ExecuteBash",
                        "inputs": {
                            "commands": [
                                f"sh {BUILD_DIR}/provision.sh {BUILD_DIR}/packages.txt {BUILD_DIR}/requirements.lock"
                            ]
                        },
                    },
                ],
            },
            {
                "name": "validate",
                "steps": [{"name": "Packages", "action": "ExecuteBash", "inputs": {"commands": [check]}}],
            },
        ],
    }
    text = yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=1000)
    if len(text) > COMPONENT_DATA_LIMIT:
        raise ValueError(
            f"image component: {len(text)} characters; Image Builder accepts at most {COMPONENT_DATA_LIMIT}"
        )
    return text


def build_user_data(region: str, arch: str) -> str:
    """The build instance's user data: the SSM Agent, installed the way AWS documents for Debian
    (Debian's AMI has none, and Image Builder drives the build through it). The recipe keeps it
    in the image (uninstall_after_build false): it is how operators reach instances (Session
    Manager, Run Command)."""
    deb = "arm64" if arch == "arm64" else "amd64"
    url = f"https://s3.{region}.amazonaws.com/amazon-ssm-{region}/latest/debian_{deb}/amazon-ssm-agent.deb"
    return (
        "#!/bin/sh\n"
        "set -eu\n"
        f"curl -fsS --retry 10 --retry-all-errors -o /tmp/amazon-ssm-agent.deb {url}\n"
        "dpkg -i /tmp/amazon-ssm-agent.deb\n"
        "systemctl enable --now amazon-ssm-agent.service\n"
    )
