"""Writes a stack's parameter set (infra.parameters) to SSM with boto3: for the lab and tests."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from infra.parameters import Parameter


def put_parameters(
    client: Any,
    params: Mapping[str, Parameter],
    password: str,
    *,
    onprem_password: str | None = None,
    prune: bool = False,
    key_id: str | None = None,
) -> list[str]:
    """Put every parameter (the bgp-password SecureString gets `password`, onprem-bgp-password
    `onprem_password`); return the names written.

    Each instance's `revision` goes last, after the rest of its set, so an agent that sees
    a new revision always finds the parameters it describes. With `prune`, parameters
    under the stack's root that are not in the set (a removed host's) are deleted.
    `key_id` is the KMS key of the SecureStrings (default: SSM's aws/ssm).
    """
    ordered = sorted(params.values(), key=lambda p: (p.name.endswith("/revision"), p.name))

    def value_of(p: Parameter) -> str | None:
        if p.type != "SecureString":
            return p.value
        # The on-prem password is never the stack's: a docker host holds that one (review F10).
        return onprem_password if p.name.endswith("/onprem-bgp-password") else password

    missing = [p.name for p in ordered if value_of(p) is None]
    if missing:  # before anything is written
        raise ValueError(f"{missing[0]}: no value for a SecureString parameter")
    written = []
    for p in ordered:
        value = value_of(p)
        extra = {"KeyId": key_id} if key_id and p.type == "SecureString" else {}
        client.put_parameter(Name=p.name, Value=value, Type=p.type, Overwrite=True, Tier=p.tier, **extra)
        written.append(p.name)
    if prune and params:
        root = "/".join(next(iter(params)).split("/")[:3])
        stale = [n for n in _names_under(client, root) if n not in params]
        for i in range(0, len(stale), 10):  # DeleteParameters takes at most 10 names
            client.delete_parameters(Names=stale[i : i + 10])
    return written


def _names_under(client: Any, path: str) -> Iterable[str]:
    for page in client.get_paginator("get_parameters_by_path").paginate(Path=path, Recursive=True):
        for item in page["Parameters"]:
            yield item["Name"]
