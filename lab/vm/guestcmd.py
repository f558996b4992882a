"""The lab's stand-in for SSM Run Command inside a lab VM: runs commands sent over a virtio-serial port.

Baked into the lab image only (lab/vm/image.py), never into user data: on AWS, operators reach
instances with the SSM agent the user data installs. The lab's VMs cannot reach AWS, and the
image has no ssh server, so the lab and the vm tests talk to a VM through this port, which
only the qemu process on the lab machine can open (a unix socket under the lab's state dir).

Protocol: one JSON object per line each way. Request {"argv": [...], "timeout": s} or
{"sh": "...", "timeout": s}; reply {"rc": int, "out": str, "err": str}.
Runs as root under systemd (lab-guestcmd.service), standard library only.
"""

import json
import os
import subprocess
import sys
import time

PORT = "/dev/virtio-ports/lab.cmd"


def serve(path: str) -> None:
    while not os.path.exists(path):
        time.sleep(0.5)
    with open(path, "r+b", buffering=0) as dev:
        buf = b""
        while True:
            chunk = dev.read(65536)
            if not chunk:  # no host connected: the port reads EOF until one is
                time.sleep(0.2)
                continue
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if line.strip():
                    dev.write(json.dumps(run(line)).encode() + b"\n")


def run(line: bytes) -> dict:
    try:
        req = json.loads(line)
        argv = ["/bin/sh", "-c", req["sh"]] if "sh" in req else list(req["argv"])
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=float(req.get("timeout", 60)), stdin=subprocess.DEVNULL
        )
        return {"id": req.get("id"), "rc": proc.returncode, "out": proc.stdout, "err": proc.stderr}
    except subprocess.TimeoutExpired as exc:
        return {"id": req.get("id"), "rc": 124, "out": "", "err": f"timed out after {exc.timeout} s"}
    except Exception as exc:  # noqa: BLE001 - every failure goes back to the caller as a reply
        return {"rc": 125, "out": "", "err": f"{type(exc).__name__}: {exc}"}


if __name__ == "__main__":
    serve(sys.argv[1] if len(sys.argv) > 1 else PORT)
