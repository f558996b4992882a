#!/bin/sh
# Provisions the overlay's machine image on a Debian 12 (bookworm) root: the one recipe for
#   - AWS: the stack's EC2 Image Builder component runs it on a build instance started from
#     Debian's own AMI (infra/components/image.py), and the stack's instances boot the result;
#   - the lab: lab/vm/image.py runs it in the debootstrapped root (chroot), natively.
# Usage (as root): provision.sh [PACKAGES_FILE [REQUIREMENTS_LOCK [WHEEL_DIR]]]
#   PACKAGES_FILE      Debian packages (default: packages.txt next to this script)
#   REQUIREMENTS_LOCK  the agent's pinned, hashed dependencies (hostagent/requirements.lock;
#                      default: requirements.lock next to this script)
#   WHEEL_DIR          where their wheels are (offline: the lab passes the wheels it downloaded
#                      and hash-checked); without it pip fetches them from PyPI, by hash
# Safe to run again. Starts nothing: services are configured and started by the user data.
set -eu
export DEBIAN_FRONTEND=noninteractive
list=${1:-$(dirname "$0")/packages.txt}
lock=${2:-$(dirname "$0")/requirements.lock}
wheels=${3:-}
pkgs=$(sed -e 's/#.*//' "$list" | tr -s ' \n' '  ')
say() { echo "overlay-image: $*"; }

say "apt-get update"
apt-get -q -o Acquire::Languages=none update
say "installing:$pkgs"
# shellcheck disable=SC2086
apt-get -q -y --no-install-recommends -o Dpkg::Options::=--force-confold install $pkgs

# dockerd must not start before the user data's forwarding sysctls are loaded: moby sets the
# iptables FORWARD policy to DROP whenever dockerd itself turns net.ipv4.ip_forward on
# (libnetwork setupIPForwarding), which drops every routed container packet. A docker host's
# overlay-agent-install.service loads the sysctls and then enables and starts Docker (Debian's
# units, iptables management on). FRR likewise starts only once the user data's daemons file
# is in place (the `datacenter` defaults profile is read only when the daemons start).
# containerd too: routers have no use for it, and docker.service pulls it in on hosts
# (Wants=containerd.service).
systemctl disable docker.service docker.socket containerd.service frr.service
# e2fsprogs' e2scrub_reap removes stale e2scrub LVM snapshots at every boot; the image has no
# LVM (a first boot under emulation spent 14-16 s of CPU on it).
systemctl disable e2scrub_reap.service

# cloud-init's locale module (cc_locale) sets Debian's default LANG=en_US.UTF-8 at first boot:
# it fails its whole config stage when the locale is not generated, and regenerates it (a slow
# locale-gen on every first boot) unless /etc/default/locale already names it. Both, once, here.
sed -i 's/^# *en_US.UTF-8 UTF-8/en_US.UTF-8 UTF-8/' /etc/locale.gen
locale-gen
update-locale LANG=en_US.UTF-8

# The agent's virtualenv with its dependencies (boto3, botocore, pyroute2, docker, ...) installed
# and byte-compiled here, natively and once, by hash (pip's hash-checking mode: a file whose
# sha256 is not the lock's is refused). First boot then installs only the agent's own wheel
# from the stack's bundle: the bundle's requirements.txt pins these same versions, which pip
# finds already satisfied (a bundle with other pins replaces them, from its own wheels).
python3 -m venv /opt/overlay-agent
if [ -n "$wheels" ]; then
  from="--no-index --find-links $wheels"
else
  from="--only-binary=:all:"
fi
say "agent dependencies from $lock"
# shellcheck disable=SC2086
/opt/overlay-agent/bin/pip install -q --disable-pip-version-check --no-cache-dir --no-deps --require-hashes \
  $from -r "$lock"

apt-get clean
rm -rf /var/lib/apt/lists/*
. /etc/os-release
printf 'overlay image: Debian %s, packages: %s\n' "$VERSION" "$(echo $pkgs)" > /etc/overlay-image
say "done: $(cat /etc/overlay-image)"
