"""The lab's "AMI": the overlay's machine image built from Debian packages only, cached by a hash of its recipe.

Two layers, as on AWS:
1. What Debian's own EC2 AMI holds (BASE_PACKAGES: the cloud kernel, cloud-init, systemd,
   ifupdown, curl, python3), by debootstrap.
2. The overlay's image recipe, the same one the program's EC2 Image Builder pipeline runs on
   Debian's AMI (infra/components/image.py): image/provision.sh with image/packages.txt (FRR,
   docker.io, nftables, python3-venv, awscli, the agent's virtualenv), run here natively in a
   chroot of the root, not inside a VM under software emulation.
So a lab VM's first boot runs exactly what an instance's does: the user data the program
renders (userdata/*.cloud-config.j2) configures the baked packages and installs the agent bundle.

Lab-only additions, none of which the user data relies on: a root password for the serial
console (debugging), `datasource_list: [NoCloud]` (the lab's seed ISO stands in for IMDS), and
lab-guestcmd (lab/vm/guestcmd.py), the lab's stand-in for SSM Session Manager / Run Command
over virtio-serial (the AMI's SSM agent is installed by Image Builder from AWS's S3 bucket,
which the lab cannot reach).

The image lives in /var/cache/overlay-vm/<recipe hash>/ (base.raw, vmlinuz, initrd.img) and is
rebuilt when the recipe (recipe_hash: base packages, image/*, mirror, guestcmd.py,
RECIPE_VERSION) changes. Build: about 4 min on an idle 2-core machine (README, "Measured").
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from infra import image_recipe
from infra.agent_archive import download_wheelhouse
from lab.underlay import LabError

CACHE_ROOT = Path(os.environ.get("OVERLAY_VM_CACHE", "/var/cache/overlay-vm"))
MIRROR = os.environ.get("OVERLAY_VM_MIRROR", "http://deb.debian.org/debian")
SUITE = "bookworm"
# The image recipe shared with the program's Image Builder pipeline.
RECIPE_DIR = image_recipe.RECIPE_DIR
LOCK_FILE = image_recipe.LOCK_FILE
# Layer 1, what Debian's EC2 AMI starts from. python3-cffi-backend must be listed: debootstrap
# does not resolve python3-cryptography's virtual dependency (python3-cffi-backend-api-*),
# and cloud-init would stay unconfigured.
BASE_PACKAGES = (
    "systemd-sysv",
    "udev",
    "dbus",
    "cloud-init",
    "python3-cffi-backend",
    "iproute2",
    "ifupdown",
    "isc-dhcp-client",
    "kmod",
    "initramfs-tools",
    "linux-image-cloud-amd64",
    "iputils-ping",
    "procps",
    "ca-certificates",
    "netbase",
    "curl",
    "gnupg",
    "less",
    "python3",
)
DISK_SIZE = "4G"
RECIPE_VERSION = 3
# Layer 1's own version: bump when _build_base changes what it writes.
BASE_VERSION = 1
# Host tools the build and the VMs need (Debian packages).
HOST_PACKAGES = {
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "debootstrap": "debootstrap",
    "mkfs.ext4": "e2fsprogs",
    "cloud-localds": "cloud-image-utils",
}
_HERE = Path(__file__).resolve().parent

GUESTCMD_UNIT = """[Unit]
Description=Lab only: command channel over virtio-serial (stand-in for SSM Run Command)
After=systemd-udevd.service
[Service]
ExecStart=/usr/bin/python3 /usr/local/lib/lab-guestcmd.py /dev/virtio-ports/lab.cmd
Restart=always
RestartSec=1
[Install]
WantedBy=multi-user.target
"""


@dataclass(frozen=True)
class Image:
    dir: Path

    @property
    def disk(self) -> Path:
        return self.dir / "base.raw"

    @property
    def kernel(self) -> Path:
        return self.dir / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.dir / "initrd.img"

    def ready(self) -> bool:
        return all(p.exists() for p in (self.disk, self.kernel, self.initrd, self.dir / "done"))


def base_hash() -> str:
    """Layer 1 (what Debian's AMI holds, plus the lab's console and command channel)."""
    h = hashlib.sha256()
    for part in (
        str(BASE_VERSION),
        SUITE,
        MIRROR,
        ",".join(BASE_PACKAGES),
        GUESTCMD_UNIT,
        (_HERE / "guestcmd.py").read_text(),
    ):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:16]


def recipe_hash() -> str:
    """The whole image: layer 1 and the overlay's recipe (image/); bump RECIPE_VERSION when
    _build_into changes what it writes."""
    h = hashlib.sha256()
    for part in (
        str(RECIPE_VERSION),
        base_hash(),
        (RECIPE_DIR / "packages.txt").read_text(),
        (RECIPE_DIR / "provision.sh").read_text(),
        LOCK_FILE.read_text(),
        DISK_SIZE,
    ):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:16]


def base_dir() -> Path:
    return CACHE_ROOT / f"base-{base_hash()}"


def current() -> Image:
    return Image(CACHE_ROOT / recipe_hash())


def missing_host_tools() -> list[str]:
    return sorted({pkg for tool, pkg in HOST_PACKAGES.items() if shutil.which(tool) is None})


def _run(cmd: list[str], log: Path, what: str, timeout: float = 900, env: dict[str, str] | None = None) -> None:
    with open(log, "ab") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=timeout, env=env)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        raise LabError(f"VM image: {what} failed (exit {proc.returncode}): {' / '.join(tail)}")


def _unmount_under(root: Path) -> None:
    points = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            p = line.split()[4]
            if p == str(root) or p.startswith(str(root) + "/"):
                points.append(p)
    for p in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", p], capture_output=True)


def build(say=print) -> Image:
    """The current image, built if the cache has none for this recipe. One build at a time (flock)."""
    img = current()
    if img.ready():
        return img
    missing = missing_host_tools()
    if missing:
        raise LabError(f"VM image: host packages missing: {' '.join(missing)} (scripts/setup.sh installs them)")
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    with open(CACHE_ROOT / ".build.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            t0 = time.monotonic()
            say(f"      waiting for the VM image build under way (log: {CACHE_ROOT}/*.build/build.log) ...")
            fcntl.flock(lock, fcntl.LOCK_EX)
            say(f"      waited {time.monotonic() - t0:.0f} s for it")
        if img.ready():
            return img
        t0 = time.monotonic()
        say(
            f"      building the VM image {img.dir} ({'cached' if (base_dir() / 'rootfs.tar').exists() else 'debootstrap'} {SUITE} root, then image/provision.sh) ..."
        )
        work = img.dir.with_name(img.dir.name + ".build")
        _unmount_under(work)
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        try:
            _build_into(work)
        except BaseException:
            _unmount_under(work)
            raise
        shutil.rmtree(img.dir, ignore_errors=True)
        work.rename(img.dir)
        # Older recipes' images (and layer-1 roots) are of no further use.
        for old in CACHE_ROOT.iterdir():
            if old.is_dir() and old not in (img.dir, base_dir()) and not old.name.endswith(".build"):
                shutil.rmtree(old, ignore_errors=True)
        say(f"      VM image built in {time.monotonic() - t0:.0f} s")
    return img


def _provision(rootfs: Path, log: Path) -> None:
    """Layer 2: image/provision.sh in a chroot of the root, with /proc, /sys and /dev/pts
    mounted (dpkg maintainer scripts read them) and the host's resolver for apt. Nothing is
    started: policy-rc.d refuses every service start, and systemctl in a chroot only enables."""
    recipe = rootfs / "tmp/overlay-image"
    recipe.mkdir(parents=True, exist_ok=True)
    for name in ("packages.txt", "provision.sh"):
        shutil.copyfile(RECIPE_DIR / name, recipe / name)
    shutil.copyfile(LOCK_FILE, recipe / "requirements.lock")
    # The agent's dependencies as the bundle ships them (pip download, hash-checked, through
    # this machine's package index): the chroot's pip installs them offline, by the same hashes.
    download_wheelhouse(LOCK_FILE, recipe / "wheels")
    policy = rootfs / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    resolv = rootfs / "etc/resolv.conf"
    saved = resolv.read_bytes() if resolv.is_file() and not resolv.is_symlink() else None
    resolv.unlink(missing_ok=True)
    shutil.copyfile("/etc/resolv.conf", resolv)
    mounts = [("proc", "proc", "proc"), ("sysfs", "sys", "sysfs"), ("devpts", "dev/pts", "devpts")]
    try:
        for src, point, fstype in mounts:
            (rootfs / point).mkdir(parents=True, exist_ok=True)
            subprocess.run(["mount", "-t", fstype, src, str(rootfs / point)], check=True, capture_output=True)
        _run(
            [
                "chroot",
                str(rootfs),
                "sh",
                "/tmp/overlay-image/provision.sh",
                "/tmp/overlay-image/packages.txt",
                "/tmp/overlay-image/requirements.lock",
                "/tmp/overlay-image/wheels",
            ],
            log,
            "image/provision.sh",
            timeout=1800,
            # The recipe sees a build instance's environment, not this machine's (no PIP_*).
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root"},
        )
    finally:
        _unmount_under(rootfs)
        policy.unlink(missing_ok=True)
        shutil.rmtree(rootfs / "tmp/overlay-image", ignore_errors=True)
        resolv.unlink(missing_ok=True)
        if saved is not None:
            resolv.write_bytes(saved)


def _build_base(log: Path) -> Path:
    """Layer 1 as a tar of the root, cached under base-<hash>/ (debootstrap takes minutes, and
    most recipe changes are to image/, layer 2)."""
    out = base_dir() / "rootfs.tar"
    if out.exists():
        return out
    work = base_dir().with_name(base_dir().name + ".build")
    _unmount_under(work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rootfs = work / "rootfs"
    try:
        _run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", SUITE, str(rootfs), MIRROR],
            log,
            "debootstrap",
            timeout=3600,
        )
    finally:
        _unmount_under(rootfs)
    base = MIRROR.rsplit("/debian", 1)[0]
    (rootfs / "etc/apt/sources.list").write_text(
        f"deb {MIRROR} {SUITE} main\ndeb {MIRROR} {SUITE}-updates main\n"
        f"deb {base}/debian-security {SUITE}-security main\n"
    )
    (rootfs / "etc/hostname").write_text("debian\n")
    (rootfs / "etc/fstab").write_text("/dev/vda / ext4 defaults,errors=remount-ro 0 1\n")
    (rootfs / "etc/cloud/cloud.cfg.d/90-lab.cfg").write_text("datasource_list: [ NoCloud, None ]\n")
    subprocess.run(["chroot", str(rootfs), "sh", "-c", "echo root:root | chpasswd"], check=True)
    shutil.copyfile(_HERE / "guestcmd.py", rootfs / "usr/local/lib/lab-guestcmd.py")
    (rootfs / "etc/systemd/system/lab-guestcmd.service").write_text(GUESTCMD_UNIT)
    (rootfs / "etc/systemd/system/multi-user.target.wants").mkdir(parents=True, exist_ok=True)
    os.symlink(
        "/etc/systemd/system/lab-guestcmd.service",
        rootfs / "etc/systemd/system/multi-user.target.wants/lab-guestcmd.service",
    )
    # The cloud kernel has virtio_blk/virtio_pci as modules: a small initramfs with just those
    # (made in layer 2, after the packages).
    conf = rootfs / "etc/initramfs-tools/initramfs.conf"
    conf.write_text(conf.read_text().replace("MODULES=most", "MODULES=list"))
    with open(rootfs / "etc/initramfs-tools/modules", "a") as f:
        f.write("virtio_pci\nvirtio_blk\nvirtio_net\nvirtio_console\next4\n")
    _run(["chroot", str(rootfs), "apt-get", "clean"], log, "apt-get clean")
    _tar(rootfs, work / "rootfs.tar", log)
    shutil.rmtree(rootfs)
    shutil.rmtree(base_dir(), ignore_errors=True)
    work.rename(base_dir())
    return out


def _tar(rootfs: Path, out: Path, log: Path) -> None:
    # numeric owners, modes, and xattrs (file capabilities: ping's cap_net_raw)
    _run(
        ["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-C", str(rootfs), "-cpf", str(out), "."],
        log,
        "tar",
    )


def _build_into(work: Path) -> None:
    rootfs, log = work / "rootfs", work / "build.log"
    base = _build_base(log)
    rootfs.mkdir()
    _run(
        ["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-C", str(rootfs), "-xpf", str(base)],
        log,
        "untar layer 1",
    )
    _provision(rootfs, log)
    _run(["chroot", str(rootfs), "update-initramfs", "-u", "-k", "all"], log, "update-initramfs")
    _run(["chroot", str(rootfs), "apt-get", "clean"], log, "apt-get clean")
    if not list(rootfs.glob("lib/modules/*/kernel/net/ipv4/ip_gre.ko")):
        raise LabError("VM image: the cloud kernel has no ip_gre module")
    shutil.copyfile(next(rootfs.glob("boot/vmlinuz-*")), work / "vmlinuz")
    shutil.copyfile(next(rootfs.glob("boot/initrd.img-*")), work / "initrd.img")
    _unmount_under(rootfs)
    _run(
        ["mkfs.ext4", "-q", "-F", "-L", "vmroot", "-d", str(rootfs), str(work / "base.raw"), DISK_SIZE],
        log,
        "mkfs.ext4",
    )
    shutil.rmtree(rootfs)
    (work / "done").write_text("ok\n")


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # through build()'s cleanup: no chroot mount left behind


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _terminate)
    print(build().dir)
