"""Program evaluation under Pulumi mocks, 20 to 200 hosts (goal: 200 in under 10 s, time per host flat)."""

from __future__ import annotations

import argparse
import contextvars
import os
import platform
import runpy
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import pulumi  # noqa: E402 - after REPO joins sys.path (REPO is computed first)
from pulumi.runtime import settings  # noqa: E402 - as above

from infra.mockrun import cli_config  # noqa: E402 - as above

STACK = "prod-euw1"  # 3 AZs, 2 routers, 2 on-prem peers, IPv6 and delegated /80s
SIZES = (20, 50, 100, 200)


class CountingMocks(pulumi.runtime.Mocks):
    """The least a mock can do: echo inputs, count resources, answer the AMI lookup."""

    def __init__(self) -> None:
        self.count = 0

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.count += 1
        outs = dict(args.inputs)
        if args.typ == "aws:ec2/vpc:Vpc":
            outs["ipv6CidrBlock"] = "2600:1f18:4a3:6c00::/56"
        elif args.typ == "aws:ec2/eip:Eip":
            outs["publicIp"] = "203.0.113.10"
        elif args.typ == "aws:s3/bucket:Bucket":
            outs.update(bucket="agent-bucket", arn="arn:aws:s3:::agent-bucket")
        return f"{args.name}-id", outs

    # The bare dict, as infra/mockrun.py: the mock monitor takes it or Mocks.call's (dict, failures) tuple.
    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:  # type: ignore[override]  # see above
        return {"id": "ami-0debian12"}


def evaluate(hosts: int) -> tuple[float, int]:
    # /24 blocks: the prod stack's /23 blocks fit only 128 hosts in its /16 pool.
    config, secret_keys = cli_config(STACK, {"hosts.count": hosts, "hosts.blockPrefix": 24})

    def program() -> None:
        runpy.run_path(str(REPO / "infra"), run_name="__main__")

    def run() -> tuple[float, int]:
        mocks = CountingMocks()
        settings.ROOT.set(None)
        pulumi.runtime.set_mocks(mocks, project="overlay", stack=STACK, preview=False)
        pulumi.runtime.set_all_config(config, secret_keys)
        t0 = time.perf_counter()
        pulumi.runtime.test(program)()  # type: ignore[no-untyped-call]  # unannotated in pulumi
        return time.perf_counter() - t0, mocks.count

    return contextvars.Context().run(run)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="*", default=list(SIZES))
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}, "
        f"pulumi {version('pulumi')}, pulumi-aws {version('pulumi-aws')}; stack {STACK}"
    )
    evaluate(2)  # warm-up: imports and the agent archive
    print(f"{'hosts':>5}  {'resources':>9}  {'seconds':>7}  {'ms/host':>7}  {'ms/resource':>11}")
    rows = []
    for hosts in args.sizes:
        seconds, count = evaluate(hosts)
        rows.append((hosts, count, seconds))
        print(
            f"{hosts:>5}  {count:>9}  {seconds:>7.2f}  {1000 * seconds / hosts:>7.1f}  {1000 * seconds / count:>11.2f}"
        )
    if len(rows) >= 2:
        (h0, _, t0), (h1, _, t1) = rows[0], rows[-1]
        print(f"marginal: {1000 * (t1 - t0) / (h1 - h0):.1f} ms per added host ({h0} -> {h1})")
    big = [t for h, _, t in rows if h == 200]
    if big:
        verdict = "meets" if big[0] < 10 else "MISSES"
        print(f"200 hosts: {big[0]:.2f} s ({verdict} the 10 s goal)")
        return 0 if big[0] < 10 else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
