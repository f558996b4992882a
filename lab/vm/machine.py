"""One lab VM: qemu (TCG) with the lab image, a NoCloud seed, a tap on a VPC bridge and a command channel.

One NIC, the instance's ENI (ens5): a tap device on the subnet's bridge in the lab's VPC
namespace, with the instance's fixed addresses. No internet: the image has every package.
qemu runs in the root namespace; the tap is moved into the VPC namespace once qemu holds it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from lab import daemon
from lab.underlay import LabError, sh
from lab.vm.image import Image

# -m 768: dockerd, containerd, FRR and the agent next to cloud-init; tb-size keeps qemu's
# translation cache (and RSS) small (shared/notes/vm-boot.md).
MEMORY_MB = int(os.environ.get("OVERLAY_VM_MEMORY", "768"))
# vCPUs per VM (multi-threaded TCG: one host thread per vCPU).
CPUS = int(os.environ.get("OVERLAY_VM_CPUS", "1"))
ACCEL = "tcg,tb-size=256"


@dataclass(frozen=True)
class VM:
    name: str
    dir: Path  # per-VM state: disk overlay, seed, console log, pid, command socket
    tap: str
    mac_index: int

    @property
    def console(self) -> Path:
        return self.dir / "console.log"

    @property
    def pidfile(self) -> Path:
        return self.dir / "qemu.pid"

    @property
    def cmd_socket(self) -> Path:
        return self.dir / "cmd.sock"


def write_seed(vm: VM, user_data: str, network_config: str, vendor_data: str) -> Path:
    vm.dir.mkdir(parents=True, exist_ok=True)
    (vm.dir / "user-data").write_text(user_data)
    (vm.dir / "meta-data").write_text(f"instance-id: i-lab-{vm.name}\nlocal-hostname: {vm.name}\n")
    (vm.dir / "network-config").write_text(network_config)
    (vm.dir / "vendor-data").write_text(vendor_data)
    seed = vm.dir / "seed.img"
    subprocess.run(
        [
            "cloud-localds",
            "-N",
            str(vm.dir / "network-config"),
            "-V",
            str(vm.dir / "vendor-data"),
            str(seed),
            str(vm.dir / "user-data"),
            str(vm.dir / "meta-data"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return seed


def mac(vm: VM, nic: int) -> str:
    return f"52:54:00:4c:{nic:02x}:{vm.mac_index:02x}"


def start(vm: VM, image: Image, vpc_ns: str, bridge: str, mtu: int) -> None:
    """Boot the VM (throw-away qcow2 overlay on the image) and put its tap on the bridge."""
    disk = vm.dir / "disk.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(image.disk), "-F", "raw", str(disk)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    vm.cmd_socket.unlink(missing_ok=True)
    argv = [
        "qemu-system-x86_64",
        "-accel",
        ACCEL,
        "-m",
        str(MEMORY_MB),
        "-smp",
        str(CPUS),
        "-kernel",
        str(image.kernel),
        "-initrd",
        str(image.initrd),
        "-append",
        "root=/dev/vda rw console=ttyS0 net.ifnames=0 biosdevname=0",
        "-drive",
        f"file={disk},if=virtio,format=qcow2",
        "-drive",
        f"file={vm.dir / 'seed.img'},if=virtio,format=raw,readonly=on",
        "-netdev",
        f"tap,id=eni,ifname={vm.tap},script=no,downscript=no",
        "-device",
        f"virtio-net-pci,netdev=eni,mac={mac(vm, 1)}",
        "-device",
        "virtio-serial",
        "-chardev",
        f"socket,id=cmd,path={vm.cmd_socket},server=on,wait=off",
        "-device",
        "virtserialport,chardev=cmd,name=lab.cmd",
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        f"file:{vm.console}",
        "-no-reboot",
    ]
    with open(vm.dir / "qemu.log", "ab") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    vm.pidfile.write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + 30
    while not Path(f"/sys/class/net/{vm.tap}").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise LabError(f"VM {vm.name}: qemu did not start ({(vm.dir / 'qemu.log').read_text()[-300:]})")
        time.sleep(0.1)
    # The tap keeps working for qemu's open file when it moves to another namespace.
    sh(None, "ip", "link", "set", vm.tap, "netns", vpc_ns)
    sh(vpc_ns, "ip", "link", "set", vm.tap, "mtu", str(mtu), "master", bridge, "up")


def stop(vm_dir: Path) -> None:
    daemon.stop(vm_dir / "qemu.pid", grace=3.0)


def stop_all(state: Path) -> int:
    n = 0
    for pidfile in sorted((state / "vm").glob("*/qemu.pid")):
        stop(pidfile.parent)
        n += 1
    return n


class Channel:
    """The host side of lab-guestcmd (lab/vm/guestcmd.py) over the VM's virtio-serial socket."""

    def __init__(self, vm: VM):
        self.vm = vm
        self._seq = 0

    def run(self, argv: list[str] | str, timeout: float = 60) -> subprocess.CompletedProcess:
        self._seq += 1
        req = {"id": self._seq, "timeout": timeout, **({"sh": argv} if isinstance(argv, str) else {"argv": argv})}
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout + 15)
            s.connect(str(self.vm.cmd_socket))
            s.sendall(json.dumps(req).encode() + b"\n")
            buf = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    raise LabError(f"VM {self.vm.name}: command channel closed")
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    with contextlib.suppress(json.JSONDecodeError):
                        reply = json.loads(line)
                        if reply.get("id") == self._seq:
                            return subprocess.CompletedProcess(argv, reply["rc"], reply["out"], reply["err"])

    def wait_ready(self, timeout: float) -> None:
        """Until lab-guestcmd answers (systemd reached multi-user)."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError, LabError, TimeoutError):
                if self.run(["true"], timeout=5).returncode == 0:
                    return
            if time.monotonic() > deadline:
                raise LabError(
                    f"VM {self.vm.name}: no answer on its command channel after {timeout:.0f} s "
                    f"(console: {self.vm.console})"
                )
            time.sleep(2)
