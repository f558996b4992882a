"""Reads `stacks/Pulumi.<stack>.yaml` for tools that run without the Pulumi CLI (report, lab, verify)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from infra.config import PROJECT, ConfigError, StackConfig, parse

REPO_ROOT = Path(__file__).resolve().parent.parent
STACKS_DIR = REPO_ROOT / "stacks"


def stack_path(stack: str, stacks_dir: Path = STACKS_DIR) -> Path:
    return stacks_dir / f"Pulumi.{stack}.yaml"


def list_stacks(stacks_dir: Path = STACKS_DIR) -> list[str]:
    return sorted(p.name[len("Pulumi."):-len(".yaml")] for p in stacks_dir.glob("Pulumi.*.yaml"))


def overlay_values(document: Any, source: str) -> dict[str, Any]:
    """The `overlay:*` values of a stack file's `config:` mapping, namespace stripped."""
    if not isinstance(document, dict) or not isinstance(document.get("config"), dict):
        raise ConfigError("config", None, "the stack file has no 'config:' mapping", source)
    values: dict[str, Any] = {}
    for key, value in document["config"].items():
        namespace, _, name = str(key).partition(":")
        if namespace == PROJECT and name:
            values[name] = value
    return values


def load_stack(stack: str, stacks_dir: Path = STACKS_DIR) -> StackConfig:
    """Parse and validate one stack file; every error is a one-line ConfigError naming the file."""
    path = stack_path(stack, stacks_dir)
    source = str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)
    if not path.exists():
        known = ", ".join(list_stacks(stacks_dir)) or "none"
        raise ConfigError("stack", stack, f"no such stack file {source} (stacks: {known})")
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError("yaml", source, f"is not valid YAML{where}", source) from None
    try:
        return parse(overlay_values(document, source), stack)
    except ConfigError as exc:
        raise exc.with_source(source) from None
