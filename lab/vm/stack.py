"""`python -m lab up --vms [STACK]`: the stack's routers and docker hosts as Debian 12 VMs.

Each VM boots the lab image (lab/vm/image.py) with the user data the program renders for that
instance (infra.render.render_user_data, byte for byte) as its NoCloud seed, on its subnet's
bridge in the lab's VPC namespace. Its first boot is the production path: the image has the
packages (image/provision.sh, the recipe the program's Image Builder pipeline runs), and the
user data's overlay-agent-install.service starts FRR (and Docker, after the forwarding
sysctls) and installs the agent bundle the program builds (infra/agent_archive.py) from the
stack's bucket; the agent reads its parameters from SSM, with kernel GRE. The lab's moto server stands in for
SSM and S3: the seed's vendor data (not the user data) writes /etc/overlay-agent/environment
with AWS_ENDPOINT_URL and throwaway credentials, as an instance profile and AWS's endpoints
would supply them. On-prem routers, clients and the VPC-native instance stay namespaces.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from infra.agent_archive import build_bundle
from infra.parameters import instance_path
from infra.program import AGENT_KEY
from infra.render import render_user_data
from lab import ssm
from lab.topology import Instance
from lab.underlay import LabError, build_underlay
from lab.vm import image as vmimage
from lab.vm import machine

# s: boot and agent install under TCG on a shared 2-core machine; measured 2026-12-02 at load
# 6-8: cloud-init final at 550-560 s, the bundle fetched at 13 min, pip still installing at 15.
BOOT_TIMEOUT = float(os.environ.get("OVERLAY_VM_BOOT_TIMEOUT", "2400"))
# s: agents active -> every BGP session Established (lab/vm/background.py sets both longer:
# a VM booting at idle priority may be starved for minutes).
SESSIONS_TIMEOUT = float(os.environ.get("OVERLAY_VM_SESSIONS_TIMEOUT", "300"))


def bucket_name(lab) -> str:
    return f"{lab.plan.project}-{lab.plan.stack}-agent-lab"


def vm_for(lab, inst: Instance, index: int) -> machine.VM:
    return machine.VM(inst.name, lab.state / "vm" / inst.name, inst.vpc_port, index)


def vms(lab) -> list[tuple[Instance, machine.VM]]:
    insts = [i for i in lab.topo.instances if i.role in ("router", "host")]
    return [(i, vm_for(lab, i, n + 1)) for n, i in enumerate(insts)]


def network_config(inst: Instance, vm: machine.VM) -> str:
    """The ENI as EC2's DHCP and router advertisements configure it: the fixed addresses and
    the default routes via the VPC router. It is the VM's only NIC: the image has every
    package and the agent bundle comes from the stack's bucket (the lab's S3 in the VPC), so
    nothing at boot needs the internet."""
    # gateway4/gateway6, not `routes`: cloud-init renders those as ifupdown's own `gateway`
    # lines, while `routes` become `post-up route add ... || true`, which silently does nothing
    # without net-tools (not in the image).
    eni: dict[str, object] = {
        "match": {"macaddress": machine.mac(vm, 1)},
        "set-name": "ens5",
        "addresses": [f"{inst.address}/{inst.segment.cidr.prefixlen}"]
        + ([f"{inst.address_v6}/64"] if inst.address_v6 is not None else []),
        "gateway4": str(inst.segment.gateway),
    }
    if inst.address_v6 is not None and inst.segment.gateway_v6 is not None:
        eni["gateway6"] = str(inst.segment.gateway_v6)
    return json.dumps({"version": 2, "ethernets": {"ens5": eni}}, indent=1)


def vendor_data(inst: Instance) -> str:
    return (
        "#!/bin/sh\n# Lab only: the AWS endpoints are the lab's moto server (no AWS here).\n"
        "mkdir -p /etc/overlay-agent\n"
        "cat > /etc/overlay-agent/environment <<EOF\n"
        f"AWS_ENDPOINT_URL={ssm.endpoint_for(inst)}\nAWS_ACCESS_KEY_ID=lab\nAWS_SECRET_ACCESS_KEY=lab\n"
        "EOF\n"
    )


def upload_bundle(lab, bundle: Path) -> None:
    code = (
        "import boto3,sys\n"
        "s3=boto3.client('s3',endpoint_url=sys.argv[1],region_name=sys.argv[2],"
        "aws_access_key_id='lab',aws_secret_access_key='lab')\n"
        "s3.create_bucket(Bucket=sys.argv[3],CreateBucketConfiguration={'LocationConstraint':sys.argv[2]})\n"
        "s3.upload_file(sys.argv[4],sys.argv[3],sys.argv[5])\n"
    )
    proc = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            lab.topo.vpc_ns,
            sys.executable,
            "-c",
            code,
            f"http://127.0.0.1:{ssm.PORT}",
            lab.plan.region,
            bucket_name(lab),
            str(bundle),
            AGENT_KEY,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0:
        raise LabError(f"uploading the agent bundle to the lab's S3 failed: {proc.stderr.strip()[-300:]}")


def boot(lab) -> str:
    from lab.stack import underlay_mtu

    img = vmimage.build(say=lab.say)
    bundle = build_bundle()
    upload_bundle(lab, bundle)
    for inst, vm in vms(lab):
        # The instance's namespace made way for the VM: its veth end leaves with it, and
        # the VM's tap takes the same name on the bridge.
        subprocess.run(["ip", "netns", "del", inst.ns], capture_output=True, timeout=30)
        user_data = render_user_data(
            lab.plan,
            inst.name,
            bucket=bucket_name(lab),
            agent_key=AGENT_KEY,
            parameter_path=instance_path(lab.plan, inst.name),
        )
        machine.write_seed(vm, user_data, network_config(inst, vm), vendor_data(inst))
        machine.start(vm, img, lab.topo.vpc_ns, inst.segment.bridge, underlay_mtu(lab.plan))
        (vm.dir / "t0").write_text(f"{time.time()}\n")
    return f"{len(vms(lab))} VMs booting (image {img.dir.name})"


def wait_installed(lab, timeout: float = BOOT_TIMEOUT) -> str:
    """Every VM: cloud-init done and overlay-agent active (the boot install finished)."""
    deadline = time.monotonic() + timeout
    out = []
    for inst, vm in vms(lab):
        ch = machine.Channel(vm)
        ch.wait_ready(max(5, deadline - time.monotonic()))
        while True:
            r = ch.run(
                "systemctl is-active overlay-agent.service; cat /var/lib/overlay-agent/install.json 2>/dev/null",
                timeout=20,
            )
            if r.stdout.startswith("active"):
                break
            if time.monotonic() > deadline:
                raise LabError(f"VM {inst.name}: agent not active after {timeout:.0f} s: {' '.join(r.stdout.split())}")
            time.sleep(5)
        t0 = float((vm.dir / "t0").read_text())
        out.append(f"{inst.name} {time.time() - t0:.0f} s")
    return "agents active: " + ", ".join(out)


def bgp_established(vm: machine.VM) -> int:
    r = machine.Channel(vm).run(["vtysh", "-c", "show bgp summary json"], timeout=20)
    if r.returncode != 0:
        return 0
    try:
        doc = json.loads(r.stdout or "{}")
    except json.JSONDecodeError:
        return 0
    return sum(
        1
        for af in doc.values()
        if isinstance(af, dict)
        for p in (af.get("peers") or {}).values()
        if p.get("state") == "Established"
    )


def up(lab) -> None:
    """Underlay, moto (SSM + S3), the VMs, on-prem; then wait for BGP everywhere."""
    from lab import stack

    stack.down(lab, quiet=True)
    lab.state.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    steps = [
        (
            "underlay (namespaces, subnets, VPC route tables, IGW NAT, internet, on-prem LANs)",
            lambda: build_underlay(lab.plan, lab.topo, stack.underlay_mtu(lab.plan)) or "done",
        ),
        (
            "parameter store and bucket (moto SSM + S3 in the VPC, seeded by the program's code path)",
            lambda: (ssm.start(lab.topo, lab.state), f"{len(ssm.seed(lab.plan, lab.topo, lab.stacks_dir))} parameters")[
                1
            ],
        ),
        ("VMs (lab image, the program's user data as NoCloud seed, taps on the VPC bridges)", lambda: boot(lab)),
        ("on-prem routers (GRE to the EIPs, FRR from the stack's on-prem config)", lambda: stack._start_onprem(lab)),
        ("first boot: services started and the agent installed by user data", lambda: wait_installed(lab)),
        ("BGP sessions", lambda: wait_sessions(lab, SESSIONS_TIMEOUT)),
    ]
    try:
        for i, (what, fn) in enumerate(steps, 1):
            stack._step(lab, i, len(steps), what, fn)
    except BaseException:
        kept = keep_consoles(lab)
        lab.say(f"up failed; removing what was built (VM consoles kept in {kept})")
        stack.down(lab, quiet=True)
        raise
    (lab.state / "vms.json").write_text(json.dumps({n: str(vm.dir) for n, vm in ((i.name, vm) for i, vm in vms(lab))}))
    stack._mark_up(lab, time.monotonic() - t0)
    lab.say(f"lab {lab.plan.stack} is up with VMs in {time.monotonic() - t0:.1f} s")


def keep_consoles(lab) -> Path:
    """The VMs' serial consoles, copied out of the state dir that `down` removes."""
    import shutil

    out = lab.state.parent / f"{lab.plan.stack}.vm-consoles"
    out.mkdir(parents=True, exist_ok=True)
    for inst, vm in vms(lab):
        if vm.console.exists():
            shutil.copyfile(vm.console, out / f"{inst.name}.console.log")
    return out


def wait_sessions(lab, timeout: float = 300) -> str:
    from lab.stack import expected_sessions

    want = expected_sessions(lab)
    by_name = {i.name: vm for i, vm in vms(lab)}
    deadline = time.monotonic() + timeout
    while True:
        have = {}
        for name in want:
            if name in by_name:
                have[name] = bgp_established(by_name[name])
            else:
                try:
                    have[name] = lab.frr_for(name).bgp_established()
                except Exception:  # noqa: BLE001 - a daemon not answering counts as no sessions
                    have[name] = 0
        up_, total = sum(min(have[n], want[n]) for n in want), sum(want.values())
        if up_ == total:
            return f"{up_}/{total} BGP sessions Established"
        if time.monotonic() > deadline:
            missing = ", ".join(f"{n} {have[n]}/{want[n]}" for n in want if have[n] < want[n])
            raise LabError(f"BGP sessions not all Established after {timeout:.0f} s: {missing}")
        time.sleep(3)
