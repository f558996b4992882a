"""Pulumi's rules for a project file's `config:` declarations and for the stack config they
check, restated for tests (no Pulumi CLI on this machine).

Read from pulumi/pulumi at 1b59498 (August 2026, after v3.259.0), not copied:
- sdk/go/common/workspace/project.json: the JSON Schema the CLI validates Pulumi.yaml with
  (ValidateProject); PROJECT_SCHEMA below states its rules for the keys this project uses;
- sdk/go/common/workspace/project.go: Project.Validate (what the schema cannot say) and
  ValidateConfigValue (a value against a declared type);
- pkg/workspace/config.go: mergeConfig and validateStackConfigValue, what `pulumi up`,
  `preview` and `destroy` do with a stack's config before the program runs.
"""

from __future__ import annotations

from typing import Any

# The project file's schema, for the parts Pulumi.yaml uses (project.json; top-level keys the
# schema does not list are allowed, "additionalProperties": true).
_CONFIG_TYPE = {"enum": ["string", "integer", "boolean", "array", "object"]}  # simpleConfigType
PROJECT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["name", "runtime"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "description": {"type": ["string", "null"]},
        "main": {"type": ["string", "null"]},
        "stackConfigDir": {"type": ["string", "null"]},
        "requiredPulumiVersion": {"type": "string"},
        "runtime": {
            "oneOf": [
                {"type": "string", "minLength": 1},
                {
                    "type": "object",
                    "properties": {"name": {"type": "string", "minLength": 1}, "options": {"type": "object"}},
                    "additionalProperties": False,
                },
            ]
        },
        "config": {
            "type": ["object", "string", "null"],
            "additionalProperties": {
                "oneOf": [
                    {"type": "string"},
                    {"type": "integer"},
                    {"type": "boolean"},
                    {"type": "array"},
                    {"$ref": "#/$defs/declaration"},
                ]
            },
        },
    },
    "additionalProperties": True,
    "$defs": {
        "items": {  # configItemsType
            "type": "object",
            "required": ["type"],
            "properties": {
                "type": {"oneOf": [_CONFIG_TYPE, {"$ref": "#/$defs/items"}]},
                "items": {"$ref": "#/$defs/items"},
            },
            "if": {"properties": {"type": {"const": "array"}}},
            "then": {"required": ["items"]},
        },
        "declaration": {  # configTypeDeclaration
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "type": _CONFIG_TYPE,
                "items": {"$ref": "#/$defs/items"},
                "description": {"type": "string"},
                "secret": {"type": "boolean"},
                "default": {},
                "value": {},
            },
            "if": {"properties": {"type": {"const": "array"}}},
            "then": {"required": ["items"]},
        },
    },
}


class PulumiConfigError(ValueError):
    """What the Pulumi CLI would print instead of running the program."""


def _namespaced_by_project(project: str, key: str) -> bool:
    return ":" not in key or key.startswith(f"{project}:")


def _full_key(project: str, key: str) -> str:
    return key if ":" in key else f"{project}:{key}"


def value_is(type_name: str, items: dict[str, Any] | None, value: Any) -> bool:
    """project.go ValidateConfigValue: does `value` (a string for a plain stack value, the JSON
    for an object value) satisfy the declared type?"""
    if type_name == "string":
        return isinstance(value, str)
    if type_name == "integer":
        if isinstance(value, bool):
            return False
        if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
            return True
        if isinstance(value, str):  # strconv.Atoi
            digits = value[1:] if value[:1] in "+-" else value
            return digits.isascii() and digits.isdigit()
        return False
    if type_name == "boolean":
        return isinstance(value, bool) or value in ("true", "false")
    if type_name == "object":
        return isinstance(value, dict)
    if not isinstance(value, list) or items is None:
        return False
    return all(value_is(items["type"], items.get("items"), v) for v in value)


def validate_project(project: dict[str, Any]) -> None:
    """project.go Project.Validate: what the JSON Schema cannot state (run after it)."""
    name = project["name"]
    for key, decl in (project.get("config") or {}).items():
        if not isinstance(decl, dict):
            continue  # the short form `key: value`
        if "default" in decl and "value" in decl:
            raise PulumiConfigError(f"project config '{key}' cannot have both a 'default' and 'value' attribute")
        if _namespaced_by_project(name, key):
            if decl.get("type") == "array" and "items" not in decl:
                raise PulumiConfigError(f"The configuration key '{key}' declares an array without 'items'")
            if "type" in decl and decl.get("default") is not None:
                if not value_is(decl["type"], decl.get("items"), decl["default"]):
                    raise PulumiConfigError(
                        f"The default value specified for configuration key '{key}' is not of the expected type"
                    )
        else:
            if "type" in decl:
                raise PulumiConfigError(f"Configuration key '{key}' is not namespaced by the project: no type")
            if "default" in decl:
                raise PulumiConfigError(f"Configuration key '{key}' is not namespaced by the project: no default")
            if "value" not in decl:
                raise PulumiConfigError(f"Configuration key '{key}' is namespaced and must provide 'value'")


def _stack_value(raw: Any) -> tuple[Any, bool]:
    """A stack file's value as the CLI holds it (config.Value): a `secure:` value is a secret
    string; a mapping or list an object value (its JSON); any other a plain string."""
    if isinstance(raw, dict) and set(raw) == {"secure"}:
        return "(decrypted)", True
    if isinstance(raw, (dict, list)):
        return raw, False
    if isinstance(raw, bool):
        return "true" if raw else "false", False
    return "" if raw is None else str(raw), False


def check_stack(project: dict[str, Any], stack: str, config: dict[str, Any]) -> dict[str, Any]:
    """pkg/workspace/config.go mergeConfig with validation: the stack's `config:` with the
    project's defaults merged in, as the program receives it; PulumiConfigError for what the
    CLI refuses before running the program (a missing required key, an unencrypted secret,
    a value of the wrong type)."""
    name = project["name"]
    decls = {
        _full_key(name, k): d if isinstance(d, dict) else {"value": d} for k, d in (project.get("config") or {}).items()
    }
    merged = dict(config)
    missing = []
    for key in sorted(decls):
        decl = decls[key]
        if key in merged:
            continue
        if decl.get("default") is None and decl.get("value") is None:
            if key.startswith(f"{name}:"):
                missing.append(key)
            continue
        merged[key] = decl["default"] if decl.get("default") is not None else decl["value"]
    if missing:
        raise PulumiConfigError(f"Stack '{stack}' is missing configuration value(s) {', '.join(missing)}")
    for key in sorted(decls):
        decl = decls[key]
        if "type" not in decl:
            continue
        # A default is merged as createConfigValue makes it: plain text, or an object's JSON.
        value, secure = _stack_value(merged[key])
        if decl.get("secret") and not secure:
            raise PulumiConfigError(f"Stack '{stack}' with configuration key '{key}' must be encrypted as it's secret")
        if not value_is(decl["type"], decl.get("items"), value):
            raise PulumiConfigError(f"Stack '{stack}' with configuration key '{key}' must be of type '{decl['type']}'")
    return merged
