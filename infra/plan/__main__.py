"""`python -m infra.plan STACK`: the plan report for pull-request review, from the stack file alone."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


from infra.cli import EXIT_BAD_INPUT, EXIT_OK, common_parser
from infra.config import ConfigError, parse
from infra.plan import build_plan
from infra.plan.report import diff, plan_data, to_json, to_markdown, to_mermaid
from infra.stackfile import STACKS_DIR, load_stack, load_yaml, overlay_values

FORMATS = {"markdown": to_markdown, "json": to_json, "mermaid": to_mermaid}


def _load_other(path: Path, stack: str) -> dict[str, Any]:
    """A previous plan to diff against: a plan JSON, or a stack YAML file (planned here)."""
    if not path.exists():
        raise ConfigError("--diff", str(path), "no such file")
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8")
    except OSError as exc:  # a directory, no permission
        raise ConfigError("--diff", str(path), f"cannot be read ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError("--diff", str(path), f"is not UTF-8 (byte {exc.start})") from None
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError("--diff", str(path), f"is not valid JSON (line {exc.lineno})") from None
        except RecursionError:
            raise ConfigError("--diff", str(path), "is nested too deeply for a plan JSON") from None
        if not isinstance(data, dict) or "pairings" not in data:
            raise ConfigError("--diff", str(path), "is not a plan JSON (python -m infra.plan STACK --format json)")
        return data
    try:
        document = load_yaml(text, str(path))
    except ConfigError as exc:
        raise ConfigError("--diff", str(path), f"is neither plan JSON nor valid stack YAML ({exc.reason})") from None
    try:
        return plan_data(build_plan(parse(overlay_values(document, str(path)), stack)))
    except ConfigError as exc:
        raise exc.with_source(str(path)) from None


def parser() -> argparse.ArgumentParser:
    parser = common_parser("python -m infra.plan", __doc__)
    parser.add_argument("stack", help="stack name: reads stacks/Pulumi.STACK.yaml")
    parser.add_argument("--format", choices=sorted(FORMATS), default="markdown")
    parser.add_argument(
        "--diff",
        metavar="OTHER",
        type=Path,
        help="the old plan (JSON from --format json) or old stack YAML; prints what changes",
    )
    parser.add_argument("--stacks-dir", type=Path, default=STACKS_DIR, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        plan = build_plan(load_stack(args.stack, args.stacks_dir))
        if args.diff:
            changes = diff(_load_other(args.diff, args.stack), plan_data(plan))
            if args.format == "json":
                sys.stdout.write(json.dumps({"changes": changes}, indent=2) + "\n")
            else:
                sys.stdout.write(f"# Plan changes for stack `{args.stack}` against {args.diff}\n\n")
                sys.stdout.write("".join(f"- {c}\n" for c in changes) if changes else "No changes.\n")
            return EXIT_OK
        sys.stdout.write(FORMATS[args.format](plan))
        return EXIT_OK
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
