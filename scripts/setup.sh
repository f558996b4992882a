#!/usr/bin/env bash
# One-time (and idempotent) set-up on Debian 12 as root: Debian packages, .venv, pinned pip packages.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the lab and the root test tiers use: FRR (+ frr-reload.py), Docker,
# cloud-init (schema checks), systemd (systemd-analyze verify of the user data's units),
# busybox-static (test image), nftables, tcpdump, iproute2;
# the vm tier's image build and VMs: qemu, debootstrap, cloud-localds (cloud-image-utils).
DEB_PACKAGES=(frr frr-pythontools docker.io cloud-init systemd busybox-static nftables tcpdump iproute2
              iputils-ping procps python3-venv qemu-system-x86 qemu-utils debootstrap
              cloud-image-utils e2fsprogs)

missing=()
for pkg in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing Debian packages (${missing[*]}); run as root to install them" >&2
    exit 1
  fi
  echo "setup: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Installing frr/docker.io may try to start their services; there may be no init here.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Mermaid's own parser validates the topology diagrams (tools/mermaid-check); it runs on
# Node.js. Use the machine's node if there is one, else Debian's.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "setup: installing Node.js (Debian)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
mstamp=tools/mermaid-check/node_modules/.lock.sha256
mwant=$(sha256sum tools/mermaid-check/package-lock.json | cut -d' ' -f1)
if [ "$(cat "$mstamp" 2>/dev/null)" != "$mwant" ]; then
  echo "setup: installing the Mermaid checker (npm ci)"
  (cd tools/mermaid-check && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  echo "$mwant" > "$mstamp"
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
# Reinstall only when the pins change: the stamp holds a hash of both requirement files.
stamp=.venv/.requirements.sha256
want=$(cat requirements.txt hostagent/pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing pinned Python packages into .venv"
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
  .venv/bin/pip install -q --disable-pip-version-check -e hostagent
  echo "$want" > "$stamp"
fi
