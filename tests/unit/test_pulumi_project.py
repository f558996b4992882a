"""Pulumi.yaml's `config:` declarations (generated from infra/config.py SCHEMA) follow Pulumi's
project-file rules, and every stack file in the repository passes the check the Pulumi CLI
runs against them before the program (tests/support/pulumi_project.py states those rules)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from infra import config
from tools import gendocs
from tests.support.pulumi_project import (
    PROJECT_SCHEMA,
    PulumiConfigError,
    check_stack,
    validate_project,
    value_is,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
# Every stack file the repository holds: the region stacks and the lab (stacks/, the CLI's
# stackConfigDir) and the vm tier's (tests/vm/stacks, booted from the same program's output).
STACK_FILES = sorted(
    [*(REPO_ROOT / "stacks").glob("Pulumi.*.yaml"), *(REPO_ROOT / "tests/vm/stacks").glob("Pulumi.*.yaml")]
)


def _project() -> dict[str, Any]:
    return yaml.safe_load((REPO_ROOT / "Pulumi.yaml").read_text())


def _stack(path: Path) -> tuple[str, dict[str, Any]]:
    return path.name[len("Pulumi.") : -len(".yaml")], yaml.safe_load(path.read_text())["config"]


def _with_secrets(stack_config: dict[str, Any]) -> dict[str, Any]:
    """The stack after docs/deploy.md step 3: `pulumi config set --secret` of the passwords."""
    out = dict(stack_config)
    for name in config.SECRET_KEYS:
        out.setdefault(f"{config.PROJECT}:{name}", {"secure": "v1:AAAA"})
    return out


def _overlay(merged: dict[str, Any]) -> dict[str, Any]:
    return {k.split(":", 1)[1]: v for k, v in merged.items() if k.startswith(f"{config.PROJECT}:")}


def test_stack_files_found():
    assert {p.name for p in STACK_FILES} >= {
        "Pulumi.lab.yaml",
        "Pulumi.prod-euw1.yaml",
        "Pulumi.test-use2.yaml",
        "Pulumi.vmlab.yaml",
    }


def test_pulumi_yaml_follows_the_project_file_rules():
    project = _project()
    jsonschema.Draft202012Validator.check_schema(PROJECT_SCHEMA)
    jsonschema.Draft202012Validator(PROJECT_SCHEMA).validate(project)
    validate_project(project)
    assert project["requiredPulumiVersion"] == ">=3.187.0"  # `type: object` (tools/gendocs.py)


def test_every_top_level_key_is_declared_or_its_absence_explained():
    decls = _project()["config"]
    undeclared = [name for name in config.TOP_KEYS if f"{config.PROJECT}:{name}" not in decls]
    assert undeclared == ["onpremBgpPassword"]
    text = (REPO_ROOT / "Pulumi.yaml").read_text()
    assert "# - overlay:onpremBgpPassword: a secret required only by some stacks" in text
    # Required in Pulumi exactly where infra/config.py requires: a required key, or a section
    # with a required key; every other declaration has a default.
    required = {k for k, d in decls.items() if "default" not in d}
    assert required == {"overlay:region", "overlay:vpc", "overlay:pools", "overlay:bgpPassword"}
    assert decls["overlay:bgpPassword"] == {**decls["overlay:bgpPassword"], "type": "string", "secret": True}


@pytest.mark.parametrize(
    "bad",
    [
        {"overlay:vpc": {"type": "map"}},  # not a Pulumi type
        {"overlay:onprem": {"type": "array"}},  # an array needs `items`
        {"overlay:vpc": {"type": "object", "properties": {}}},  # members are not typed
        {"overlay:region": {"type": "string", "required": True}},  # no such attribute
    ],
)
def test_the_project_schema_refuses_what_pulumi_refuses(bad):
    project = _project()
    project["config"].update(bad)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(project, PROJECT_SCHEMA)


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"overlay:routers": {"type": "object", "default": []}}, "not of the expected type"),
        ({"overlay:environment": {"type": "string", "default": "test", "value": "prod"}}, "both"),
        ({"aws:region": {"type": "string", "value": "eu-west-1"}}, "no type"),
        ({"aws:region": {"default": "eu-west-1"}}, "no default"),
        ({"aws:region": {"description": "the provider's region"}}, "must provide 'value'"),
    ],
)
def test_project_validate_refuses_what_the_schema_cannot_say(bad, message):
    project = _project()
    project["config"].update(bad)
    with pytest.raises(PulumiConfigError, match=message):
        validate_project(project)


@pytest.mark.parametrize("path", STACK_FILES, ids=lambda p: p.name)
def test_stack_file_satisfies_the_declarations(path):
    """As `pulumi up` checks before the program runs: required keys present, secrets encrypted,
    types matching. The repository's stack files hold no secret yet (docs/deploy.md step 3 sets
    them with `pulumi config set --secret`): without them Pulumi reports exactly those."""
    stack, stack_config = _stack(path)
    with pytest.raises(PulumiConfigError, match=r"missing configuration value\(s\) overlay:bgpPassword$"):
        check_stack(_project(), stack, stack_config)
    check_stack(_project(), stack, _with_secrets(stack_config))


@pytest.mark.parametrize("path", STACK_FILES, ids=lambda p: p.name)
def test_pulumi_defaults_change_nothing(path):
    """The config the program receives with Pulumi's defaults merged in (a missing section as
    `{}`, onprem as `[]`) parses to the same stack config as the file alone."""
    stack, stack_config = _stack(path)
    merged = check_stack(_project(), stack, _with_secrets(stack_config))
    added = set(merged) - set(_with_secrets(stack_config))
    assert added  # every stack leaves some section to its defaults
    secrets = {f"{config.PROJECT}:{n}" for n in config.SECRET_KEYS}
    raw = _overlay({k: v for k, v in merged.items() if k not in secrets})
    assert config.parse(raw, stack) == config.parse(_overlay(stack_config), stack)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"overlay:region": None}, r"missing configuration value\(s\) overlay:region$"),
        ({"overlay:vpc": None, "overlay:pools": None}, r"value\(s\) overlay:pools, overlay:vpc$"),
        ({"overlay:vpc": "10.20.0.0/16"}, "'overlay:vpc' must be of type 'object'"),
        ({"overlay:onprem": {"name": "dc1"}}, "'overlay:onprem' must be of type 'array'"),
        ({"overlay:onprem": ["dc1"]}, "'overlay:onprem' must be of type 'array'"),
        ({"overlay:bgpPassword": "in-clear-text"}, "'overlay:bgpPassword' must be encrypted"),
    ],
)
def test_the_cli_check_refuses(change, message):
    stack, stack_config = _stack(REPO_ROOT / "stacks/Pulumi.prod-euw1.yaml")
    stack_config = _with_secrets(stack_config)
    for key, value in change.items():
        if value is None:
            del stack_config[key]
        else:
            stack_config[key] = value
    with pytest.raises(PulumiConfigError, match=message):
        check_stack(_project(), stack, stack_config)


def test_value_is_follows_validate_config_value():
    """The type rules of project.go ValidateConfigValue the checks above rest on."""
    assert value_is("integer", None, "42") and value_is("integer", None, 42.0) and value_is("integer", None, "-3")
    assert not value_is("integer", None, "4.2") and not value_is("integer", None, True)
    assert value_is("boolean", None, "true") and not value_is("boolean", None, "True")
    assert value_is("array", {"type": "object"}, [{}]) and not value_is("array", None, [])
    assert value_is("array", {"type": "array", "items": {"type": "string"}}, [["a"]])


def test_pulumi_yaml_outside_the_block_is_untouched():
    """Only the marked block is generated: the hand-written project settings stay as written."""
    text = (REPO_ROOT / "Pulumi.yaml").read_text()
    head = text.split("# generated: config declarations\n", 1)[0]
    project = yaml.safe_load(head)
    assert project["name"] == config.PROJECT and project["stackConfigDir"] == "stacks"
    assert project["runtime"] == {
        "name": "python",
        "options": {"toolchain": "pip", "virtualenv": ".venv"},
    }


def _declare(monkeypatch, *keys):
    schema = (*config.SCHEMA, *keys)
    monkeypatch.setattr(config, "SCHEMA", schema)
    monkeypatch.setattr(config, "KEYS", {k.name: k for k in schema})
    return gendocs.pulumi_declarations()[0]


def test_a_new_top_level_key_is_declared_by_its_type(monkeypatch):
    decls = _declare(
        monkeypatch,
        config.Key("retries", config._int_type(1, 5), 3, "retries"),
        config.Key("verbose", config.BOOL, False, "verbose"),
    )
    assert decls["overlay:retries"] == {"type": "integer", "description": "retries", "default": 3}
    assert decls["overlay:verbose"] == {"type": "boolean", "description": "verbose", "default": False}
    project = {**_project(), "config": decls}
    jsonschema.validate(project, PROJECT_SCHEMA)
    validate_project(project)


@pytest.mark.parametrize(
    "key, message",
    [
        # a list or a single CIDR: Pulumi's types have no "either"
        (config.Key("extraPools", config._net_list_type(4), (), "x"), "no Pulumi type"),
        # Pulumi's default is fixed, this one would depend on other keys
        (config.Key("mode", config.STR, "a", "x", default_doc="a, or b with c"), "depends on other keys"),
    ],
)
def test_a_key_pulumi_cannot_declare_stops_the_generator(monkeypatch, key, message):
    with pytest.raises(ValueError, match=message):
        _declare(monkeypatch, key)
