"""Parameter source against moto's SSM in server mode (real HTTP), seeded with the program's own parameters."""

from __future__ import annotations

import json
import random

import boto3
import pytest

from infra.parameters import PASSWORD_PLACEHOLDER, build_parameters, instance_path, onprem_password_name, password_name
from infra.plan import build_plan
from infra.publish import put_parameters
from infra.render import render_frr
from infra.stackfile import load_stack
from overlay_agent.errors import ConfigError, ParameterError
from overlay_agent.ssm import Cache, ParameterSource, Poller, load_bootstrap

pytestmark = pytest.mark.aws
PASSWORD = "unit-test-md5"


@pytest.fixture(scope="module")
def moto_url(moto_endpoint):
    return moto_endpoint


def client(url):
    return boto3.client(
        "ssm", endpoint_url=url, region_name="eu-west-1", aws_access_key_id="test", aws_secret_access_key="test"
    )


@pytest.fixture(scope="module")
def lab(moto_url):
    plan = build_plan(load_stack("lab"))
    params = build_parameters(plan, lambda n: render_frr(plan, n))
    put_parameters(client(moto_url), params, PASSWORD, onprem_password=ONPREM_PASSWORD, prune=True)
    return plan, params


ONPREM_PASSWORD = "onprem-md5-in-test"


def source(url, plan, instance):
    return ParameterSource(client(url), instance_path(plan, instance), password_name(plan), onprem_password_name(plan))


def test_fetch_is_the_programs_set(moto_url, lab):
    plan, params = lab
    snap = source(moto_url, plan, "router-1").fetch()
    base = instance_path(plan, "router-1")
    assert snap.revision == params[f"{base}/revision"].value
    assert snap.agent == params[f"{base}/agent"].value
    assert snap.frr == params[f"{base}/frr"].value and PASSWORD_PLACEHOLDER in snap.frr
    assert snap.tunnels == {k[len(base) + 1 :]: p.value for k, p in params.items() if k.startswith(f"{base}/tunnels/")}
    assert snap.password == PASSWORD  # the SecureString, decrypted
    # A router with on-prem peers reads the datacenter sessions' password too (review F10) ...
    assert snap.onprem_password == ONPREM_PASSWORD


class Recording:
    """A boto3 SSM client that records the names asked for and refuses one (as IAM would)."""

    def __init__(self, inner, refuse: str):
        self.inner, self.refuse, self.asked = inner, refuse, []

    def get_parameter(self, Name, **kw):
        self.asked.append(Name)
        if Name == self.refuse:
            raise RuntimeError(f"AccessDeniedException: not authorized to perform ssm:GetParameter on {Name}")
        return self.inner.get_parameter(Name=Name, **kw)

    def get_paginator(self, name):
        return self.inner.get_paginator(name)


def test_a_docker_host_never_asks_for_the_onprem_password(moto_url, lab):
    # ... a docker host's frr text has no on-prem placeholder, so its agent never asks for
    # that parameter (which its role may not read).
    plan, _ = lab
    c = Recording(client(moto_url), onprem_password_name(plan))
    snap = ParameterSource(c, instance_path(plan, "host-1"), password_name(plan), onprem_password_name(plan)).fetch()
    assert snap.onprem_password is None and snap.password == PASSWORD
    assert onprem_password_name(plan) not in c.asked and password_name(plan) in c.asked


def test_pagination_beyond_ten(moto_url):
    c = client(moto_url)
    path = "/overlay/pagetest/instances/router-9"
    for i in range(27):
        c.put_parameter(Name=f"{path}/tunnels/host-{i}", Value=json.dumps({"i": i}), Type="String", Overwrite=True)
    c.put_parameter(Name=f"{path}/revision", Value="r1", Type="String", Overwrite=True)
    snap = ParameterSource(c, path, None).fetch()
    assert len(snap.tunnels) == 27 and snap.password is None


def test_revision_poll_fetches_only_on_change(moto_url, tmp_path):
    c = client(moto_url)
    path = "/overlay/polltest/instances/host-1"
    c.put_parameter(Name=f"{path}/agent", Value="{}", Type="String", Overwrite=True)
    c.put_parameter(Name=f"{path}/revision", Value="a", Type="String", Overwrite=True)
    poller = Poller(ParameterSource(c, path, None), Cache(tmp_path))
    first = poller.start()
    assert first.revision == "a" and poller.state.fetches == 1
    assert poller.poll() is None and poller.poll() is None
    assert poller.state.fetches == 1 and poller.state.polls == 3
    c.put_parameter(Name=f"{path}/tunnels/router-1", Value="{}", Type="String", Overwrite=True)
    c.put_parameter(Name=f"{path}/revision", Value="b", Type="String", Overwrite=True)
    snap = poller.poll()
    assert snap.revision == "b" and "tunnels/router-1" in snap.tunnels and poller.state.fetches == 2


def test_unreachable_keeps_cache_and_backs_off(moto_url, lab, tmp_path):
    plan, _ = lab
    good = Poller(source(moto_url, plan, "host-1"), Cache(tmp_path))
    snap = good.start()
    good.cache.save(snap)
    assert oct((tmp_path / "parameters.json").stat().st_mode & 0o777) == "0o600"
    # A port nothing listens on: connection refused, as when SSM is unreachable.
    dead = ParameterSource(client("http://127.0.0.1:9"), instance_path(plan, "host-1"), password_name(plan))
    poller = Poller(dead, Cache(tmp_path), interval=15, backoff_min=1, backoff_max=60, rng=random.Random(1))
    restored = poller.start()
    assert restored == snap and poller.state.source == "cache" and not poller.state.ok
    assert "127.0.0.1:9" in poller.state.last_error and "\n" not in poller.state.last_error
    delays = []
    for _ in range(9):
        with pytest.raises(ParameterError):
            poller.poll()
        delays.append(poller.next_delay())
    assert delays[-1] <= 60 and delays[-1] > delays[0]
    assert poller.state.failures == 10


def test_missing_revision_is_an_error(moto_url):
    src = ParameterSource(client(moto_url), "/overlay/nothing/instances/ghost", None)
    with pytest.raises(ParameterError, match="ParameterNotFound"):
        src.revision()
    with pytest.raises(ParameterError, match="no revision parameter"):
        src.fetch()


def test_jitter_spreads_polls():
    p = Poller(None, None, interval=10, rng=random.Random(7))
    delays = {round(p.next_delay(), 3) for _ in range(50)}
    assert len(delays) > 40 and min(delays) >= 8 and max(delays) <= 12


def test_bootstrap(tmp_path):
    path = tmp_path / "bootstrap.json"
    path.write_text(
        json.dumps(
            {
                "schema": 1,
                "project": "overlay",
                "stack": "lab",
                "instance": "host-1",
                "role": "host",
                "region": "eu-west-1",
                "parameter_path": "/overlay/lab/instances/host-1",
            }
        )
    )
    b = load_bootstrap(path)
    assert b.password_name == "/overlay/lab/bgp-password" and b.endpoint_url is None
    path.write_text(json.dumps({"project": "overlay"}))
    with pytest.raises(ConfigError, match=r"bootstrap.json: missing key 'schema'$"):
        load_bootstrap(path)
    path.write_text(json.dumps({**b.__dict__, "schema": 1, "stack": ""}))
    with pytest.raises(ConfigError, match=r"bootstrap.json: stack: '' is not a name \(1-128 characters\)$"):
        load_bootstrap(path)
