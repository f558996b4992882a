"""Writes a stack's parameter set (infra.parameters) to SSM with boto3: for the lab and tests."""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from infra.parameters import Parameter


def put_parameters(client: Any, params: Mapping[str, Parameter], password: str, *,
                   prune: bool = False, key_id: str | None = None) -> list[str]:
    """Put every parameter (the SecureString gets `password`); return the names written.

    Each instance's `revision` goes last, after the rest of its set, so an agent that sees
    a new revision always finds the parameters it describes. With `prune`, parameters
    under the stack's root that are not in the set (a removed host's) are deleted.
    `key_id` is the KMS key of the SecureStrings (default: SSM's aws/ssm).
    """
    ordered = sorted(params.values(), key=lambda p: (p.name.endswith("/revision"), p.name))
    written = []
    for p in ordered:
        value = password if p.type == "SecureString" else p.value
        if value is None:
            raise ValueError(f"{p.name}: no value for a {p.type} parameter")
        extra = {"KeyId": key_id} if key_id and p.type == "SecureString" else {}
        client.put_parameter(Name=p.name, Value=value, Type=p.type, Overwrite=True, Tier=p.tier, **extra)
        written.append(p.name)
    if prune and params:
        root = "/".join(next(iter(params)).split("/")[:3])
        stale = [n for n in _names_under(client, root) if n not in params]
        for i in range(0, len(stale), 10):  # DeleteParameters takes at most 10 names
            client.delete_parameters(Names=stale[i:i + 10])
    return written


def _names_under(client: Any, path: str) -> Iterable[str]:
    for page in client.get_paginator("get_parameters_by_path").paginate(Path=path, Recursive=True):
        for item in page["Parameters"]:
            yield item["Name"]
