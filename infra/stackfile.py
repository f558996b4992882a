"""Reads `stacks/Pulumi.<stack>.yaml` for tools that run without the Pulumi CLI (report, lab, verify)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Hashable

import yaml

from infra.config import PROJECT, ConfigError, StackConfig, foreign_key_problem, parse

REPO_ROOT = Path(__file__).resolve().parent.parent
STACKS_DIR = REPO_ROOT / "stacks"


MAX_DEPTH = 20  # a stack file is 4 levels deep; PyYAML recurses per level
MAX_BYTES = 1 << 20


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys, aliases and deep nesting.

    PyYAML keeps the last of two equal keys (the first silently lost), shares aliased nodes
    so a "billion laughs" file loads fast and then hangs whatever walks it, and recurses once
    per nesting level (RecursionError past ~1000). A stack file needs none of these.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]  # unannotated in types-PyYAML
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed in a stack file", event.start_mark
            )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                event = self.peek_event()  # type: ignore[no-untyped-call]  # unannotated in types-PyYAML
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_DEPTH} levels", event.start_mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    None, None, "a mapping key must be a plain value", key_node.start_mark
                ) from None
            if duplicate:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        return super().construct_mapping(node, deep)


def load_yaml(data: bytes | str, source: str) -> Any:
    """Parse a stack file's text; every problem is a one-line ConfigError naming the file."""
    if len(data) > MAX_BYTES:
        raise ConfigError("yaml", source, f"is larger than {MAX_BYTES} bytes", source)
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError("yaml", source, f"is not UTF-8 (byte {exc.start})", source) from None
    try:
        return yaml.load(data, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None)
        why = f": {problem}" if problem else ""
        raise ConfigError("yaml", source, f"is not valid YAML{where}{why}", source) from None
    except RecursionError:
        raise ConfigError("yaml", source, f"nests deeper than {MAX_DEPTH} levels", source) from None
    except ValueError as exc:  # PyYAML's int() of a 5,000-digit number
        raise ConfigError("yaml", source, f"is not valid YAML: {str(exc)[:80]}", source) from None


def stack_path(stack: str, stacks_dir: Path = STACKS_DIR) -> Path:
    return stacks_dir / f"Pulumi.{stack}.yaml"


def list_stacks(stacks_dir: Path = STACKS_DIR) -> list[str]:
    return sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in stacks_dir.glob("Pulumi.*.yaml"))


def overlay_values(document: Any, source: str) -> dict[str, Any]:
    """The `overlay:*` values of a stack file's `config:` mapping, namespace stripped."""
    if not isinstance(document, dict) or not isinstance(document.get("config"), dict):
        raise ConfigError("config", None, "the stack file has no 'config:' mapping", source)
    values: dict[str, Any] = {}
    for key, value in document["config"].items():
        problem = foreign_key_problem(str(key))
        if problem is not None:
            raise ConfigError(str(key), value, problem, source)
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
        data = path.read_bytes()
    except OSError as exc:  # a directory, no permission
        raise ConfigError("stack", source, f"cannot be read ({exc.strerror})", source) from None
    document = load_yaml(data, source)
    try:
        return parse(overlay_values(document, source), stack)
    except ConfigError as exc:
        raise exc.with_source(source) from None
