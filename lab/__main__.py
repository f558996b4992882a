"""`python -m lab up|status|demo|down [STACK]`: a whole stack on this machine, in network namespaces."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from infra.cli import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, common_parser
from infra.config import ConfigError
from infra.stackfile import STACKS_DIR


def parser() -> argparse.ArgumentParser:
    p = common_parser("python -m lab", __doc__)
    p.add_argument("command", choices=("up", "status", "demo", "down"))
    p.add_argument("stack", nargs="?", default="lab", help="stack name (stacks/Pulumi.STACK.yaml); default lab")
    p.add_argument("--stacks-dir", type=Path, default=STACKS_DIR, help=argparse.SUPPRESS)
    p.add_argument("--keep", action="store_true", help="demo: leave the demo containers running")
    p.add_argument(
        "--vms",
        action="store_true",
        help="up: routers and docker hosts as Debian 12 VMs booted with the program's user data",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_intermixed_args(argv)  # `up --vms STACK` as well as `up STACK --vms`
    from lab import daemon, demo, stack

    # SIGTERM unwinds: `up` removes what it built on the way out instead of leaving
    # namespaces, VMs and daemons.
    daemon.unwind_on_sigterm(lambda signum: SystemExit(128 + signum))
    from lab.underlay import LabError

    try:
        lab = stack.Lab.load(args.stack, args.stacks_dir, say=lambda line: print(line, flush=True))
        if args.command == "up" and args.vms:
            from lab.vm import stack as vmstack

            vmstack.up(lab)
        elif args.command == "up":
            stack.up(lab)
        elif args.command == "down":
            stack.down(lab)
        elif args.command == "status":
            return demo.status(lab)
        elif args.command == "demo":
            return demo.run(lab, keep=args.keep)
        return EXIT_OK
    except ConfigError as exc:  # the stack file: bad input
        print(f"lab: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except LabError as exc:  # the lab could not be brought up, checked or taken down
        print(f"lab: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("lab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    if __import__("os").geteuid() != 0 and not {"-h", "--help", "--version"} & set(sys.argv[1:]):
        print("lab: must run as root (it creates network namespaces and runs FRR and dockerd)", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    sys.exit(main())
