"""put_parameters writes exactly build_parameters' set: password a SecureString, revisions last, pruning."""

from __future__ import annotations

import dataclasses

import boto3
import pytest
from moto import mock_aws

from infra.parameters import build_parameters, onprem_password_name, password_name
from infra.plan import build_plan
from infra.publish import put_parameters
from infra.stackfile import load_stack

pytestmark = pytest.mark.aws


class Recorder:
    """Wraps an SSM client, recording put order."""

    def __init__(self, client):
        self.client, self.names = client, []

    def put_parameter(self, **kw):
        self.names.append(kw["Name"])
        return self.client.put_parameter(**kw)

    def __getattr__(self, name):
        return getattr(self.client, name)


def frr(name: str) -> str:
    return f"hostname {name}\n"


def stored(client, root):
    out = {}
    for page in client.get_paginator("get_parameters_by_path").paginate(Path=root, Recursive=True, WithDecryption=True):
        for p in page["Parameters"]:
            out[p["Name"]] = (p["Type"], p["Value"])
    return out


@mock_aws
def test_put_then_prune():
    client = boto3.client("ssm", region_name="eu-west-1")
    cfg = load_stack("lab")
    plan = build_plan(dataclasses.replace(cfg, host_count=3))
    params = build_parameters(plan, frr)
    rec = Recorder(client)
    put_parameters(rec, params, "s3cret", onprem_password="dc-s3cret")
    secure = {password_name(plan): "s3cret", onprem_password_name(plan): "dc-s3cret"}
    assert stored(client, "/overlay/lab") == {
        n: (p.type, secure[n] if p.type == "SecureString" else p.value) for n, p in params.items()
    }
    revs = [i for i, n in enumerate(rec.names) if n.endswith("/revision")]
    assert revs == list(range(len(rec.names) - len(revs), len(rec.names)))

    smaller = build_parameters(build_plan(cfg), frr)
    put_parameters(client, smaller, "s3cret", onprem_password="dc-s3cret", prune=True)
    now = stored(client, "/overlay/lab")
    assert set(now) == set(smaller)
    assert now[password_name(plan)] == ("SecureString", "s3cret")


@mock_aws
def test_the_onprem_password_is_never_the_stacks():
    # A stack with on-prem peers and no on-prem password given: refused, never filled with
    # the docker hosts' password (review F10).
    client = boto3.client("ssm", region_name="eu-west-1")
    plan = build_plan(load_stack("lab"))
    with pytest.raises(ValueError, match="onprem-bgp-password: no value for a SecureString parameter"):
        put_parameters(client, build_parameters(plan, frr), "s3cret")
