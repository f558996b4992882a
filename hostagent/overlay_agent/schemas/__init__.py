"""The documents between the program and the agent, each defined once: a JSON Schema per document.

The files beside this module are the contract (docs/contracts.md). The program
(infra/parameters.py, infra/render.py) validates every document it writes against them and
the agent validates every document it reads, with the same `validate()`, so the two sides
cannot drift apart. What a schema cannot say (a block inside a pool, the two addresses of a
/31) the agent's parser checks after it.

The validator is fastjsonschema: pure Python with no dependencies, so the agent's wheelhouse
stays pure-Python wheels for every architecture (infra/agent_archive.py); the `jsonschema`
package needs rpds-py, a compiled wheel. tests/unit/test_schemas.py checks each file against
the draft-07 metaschema with `jsonschema`.
"""

from __future__ import annotations

import functools
import ipaddress
import json
from importlib import resources
from typing import Any, Callable

import fastjsonschema

from ..errors import ConfigError

# The documents, by file stem (<name>.schema.json). common and gre-link are parts the others refer to.
DOCUMENTS = ("bootstrap", "agent", "tunnel", "route-server", "vpc")
PARTS = ("common", "gre-link")
# The schemas' own base URI. `.invalid` (RFC 2606) never resolves: a `$ref` is always one of these files.
BASE = "https://overlay.invalid/schemas/"
_SHOW_MAX = 64


def _is(kind: Callable[[str], Any]) -> Callable[[str], bool]:
    def check(text: Any) -> bool:
        if not isinstance(text, str):  # a format says nothing about other types (draft-07 7.1)
            return True
        try:
            kind(text)
        except ValueError:
            return False
        return True

    return check


# Formats by Python's ipaddress (what the agent then builds from the text), instead of
# fastjsonschema's regexes: the same text is accepted by the schema and by the code after it.
FORMATS: dict[str, Callable[[Any], bool]] = {
    "ipv4": _is(ipaddress.IPv4Address),
    "ipv6": _is(ipaddress.IPv6Address),
    "ipv4-network": _is(ipaddress.IPv4Network),
    "ipv6-network": _is(ipaddress.IPv6Network),
}


def text(name: str) -> str:
    """The schema file's text (`name` without `.schema.json`)."""
    if name not in DOCUMENTS + PARTS:
        raise KeyError(f"no schema {name!r} (documents: {', '.join(DOCUMENTS)})")
    return resources.files(__package__).joinpath(f"{name}.schema.json").read_text(encoding="utf-8")


@functools.cache
def schema(name: str) -> dict[str, Any]:
    """The schema as a dict; callers must not modify it."""
    doc: dict[str, Any] = json.loads(text(name))
    return doc


def _resolve(uri: str) -> dict[str, Any]:
    if not uri.startswith(BASE) or not uri.endswith(".schema.json"):
        raise ConfigError(f"schema reference {uri!r} is not one of the agent's schemas")
    return schema(uri[len(BASE) : -len(".schema.json")])


@functools.cache
def _validator(name: str) -> Callable[[Any], Any]:
    # use_default=False: validation never changes the document; defaults are read by the parsers.
    return fastjsonschema.compile(schema(name), handlers={"https": _resolve}, formats=FORMATS, use_default=False)


def show(value: Any) -> str:
    """A value for a one-line message: its repr, cut at 64 characters."""
    try:
        r = repr(value)
    except ValueError:  # an int beyond sys.get_int_max_str_digits()
        r = f"<{type(value).__name__} too large to show>"
    return r if len(r) <= _SHOW_MAX else r[:_SHOW_MAX] + "..."


def _reason(exc: fastjsonschema.JsonSchemaValueException) -> str:
    rule, limit, value = exc.rule, exc.rule_definition, exc.value
    definition = exc.definition if isinstance(exc.definition, dict) else {}
    what = definition.get("description")
    if rule == "required":
        missing = [k for k in limit if not (isinstance(value, dict) and k in value)]
        return f"missing key {missing[0]!r}" if missing else "missing a key"
    v = show(value)
    if rule == "type":
        kinds = limit if isinstance(limit, list) else [limit]
        # A short description says what was meant ("a BGP AS number"); a long one would bury the line.
        return f"{v} is not of type {' or '.join(kinds)}" + (f" ({what})" if what and len(what) <= 64 else "")
    if rule == "minimum":
        return f"{v} is less than the minimum of {limit}"
    if rule == "maximum":
        return f"{v} is greater than the maximum of {limit}"
    if rule == "const":
        return f"{v} is not {limit!r}" + (f" ({what})" if what else "")
    if rule == "enum":
        return f"{v} is not one of {', '.join(repr(x) for x in limit)}"
    if rule == "maxItems":
        return f"has {len(value)} items, more than the maximum of {limit}"
    if rule == "minItems":
        return f"has {len(value)} items, fewer than the minimum of {limit}"
    if rule in ("pattern", "format", "not", "minLength", "maxLength") and what:
        return f"{v} is not {what}"
    said = exc.message.removeprefix(exc.name or "").strip()
    return said if isinstance(value, (dict, list)) else f"{v} is invalid ({said})"


def error(source: str, exc: fastjsonschema.JsonSchemaValueException) -> str:
    """One line: the document, the field (a JSON path such as tunnels[3].key), the value and the reason."""
    field = (exc.name or "data").removeprefix("data").lstrip(".")
    return f"{source}: {field + ': ' if field else ''}{_reason(exc)}"


def validate(name: str, doc: Any, source: str | None = None) -> None:
    """Check `doc` against the named schema; ConfigError with one line naming the field when it does not fit."""
    try:
        _validator(name)(doc)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise ConfigError(error(source or name, exc)) from None


# The contract version every document carries in its `schema` key (common.schema.json).
VERSION: int = schema("common")["definitions"]["version"]["const"]


def instance_path(project: str, stack: str, instance: str) -> str:
    """The SSM path of one instance's parameters: /<project>/<stack>/instances/<instance>."""
    return f"/{project}/{stack}/instances/{instance}"


def password_name(project: str, stack: str) -> str:
    """The SecureString of the sessions inside the stack (routers and docker hosts)."""
    return f"/{project}/{stack}/bgp-password"


def onprem_password_name(project: str, stack: str) -> str:
    """The datacenter sessions' own SecureString: stacks with on-prem peers; routers read it, hosts may not."""
    return f"/{project}/{stack}/onprem-bgp-password"


def bootstrap(
    project: str,
    stack: str,
    instance: str,
    role: str,
    region: str,
    *,
    endpoint_url: str | None = None,
    parameter_path: str | None = None,
) -> dict[str, Any]:
    """The bootstrap document (user data writes it; the lab too, with its endpoint), validated.

    `parameter_path` defaults to instance_path(project, stack, instance).
    """
    doc: dict[str, Any] = {
        "schema": VERSION,
        "project": project,
        "stack": stack,
        "instance": instance,
        "role": role,
        "region": region,
        "parameter_path": parameter_path or instance_path(project, stack, instance),
    }
    if endpoint_url is not None:
        doc["endpoint_url"] = endpoint_url
    validate("bootstrap", doc)
    return doc


def default(name: str, *path: str) -> Any:
    """The `default` the schema declares for a field (e.g. default("agent", "settings", "poll_interval"))."""
    node = schema(name)
    for key in path:
        node = node["properties"][key]
    return node["default"]
