"""Parameter source: the instance's SSM parameters with boto3 (cheap revision poll, full fetch when it moves, disk cache).

Hazards:
- SSM throughput is shared by the whole account and region (GetParameter ~40 TPS by
  default): each instance polls only its `revision` parameter, with jitter so a fleet
  started together does not poll in step, and fetches the full set only when it moves.
- GetParametersByPath returns at most 10 parameters per page: always paginate (a router
  has one tunnel parameter per host).
- A set read while the program is writing it: the program writes `revision` last, and we
  take the revision from the fetched set itself, so a torn read shows an old revision and
  the next poll fetches again.
- SSM unreachable (no route yet at boot, throttling, an expired role): the last applied
  set stays in force, read from the disk cache after a restart; retries back off
  exponentially (with jitter) up to a cap, and the failure shows in metrics and status.
- The cache holds the BGP password (it is in frr.conf too): written 0600, atomically.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from . import placeholders, schemas
from .config import loads as config_loads
from .errors import ConfigError, ParameterError
from .fsutil import atomic_write_json

CACHE_NAME = "parameters.json"


@dataclass(frozen=True)
class Bootstrap:
    """The instance's bootstrap document (written by user data): where its parameters live."""

    project: str
    stack: str
    instance: str
    role: str
    region: str
    parameter_path: str
    endpoint_url: str | None = None

    @property
    def password_name(self) -> str:
        return schemas.password_name(self.project, self.stack)

    @property
    def onprem_password_name(self) -> str:
        """The datacenter sessions' own password: routers with on-prem peers read it (review F10)."""
        return schemas.onprem_password_name(self.project, self.stack)


def load_bootstrap(path: str | Path) -> Bootstrap:
    """Read and validate the bootstrap document (schemas/bootstrap.schema.json)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    doc = config_loads(data, str(path))
    schemas.validate("bootstrap", doc, str(path))
    return Bootstrap(
        doc["project"],
        doc["stack"],
        doc["instance"],
        doc["role"],
        doc["region"],
        doc["parameter_path"],
        doc.get("endpoint_url"),
    )


@dataclass(frozen=True)
class Snapshot:
    """One consistent read of an instance's parameters. Tunnel values are kept raw: they are validated one by one."""

    revision: str
    agent: str | None
    frr: str | None
    tunnels: dict[str, str]  # "tunnels/<peer>" -> JSON text
    password: str | None
    fetched_at: float = 0.0
    # Routers in routeServer mode: the route server's ASN and endpoint addresses (JSON).
    route_server: str | None = None
    # Routers of IPv6 stacks: the VPC's IPv6 block (JSON), for the on-prem import filter.
    vpc: str | None = None
    # Routers with on-prem peers: the datacenter sessions' password.
    onprem_password: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> "Snapshot":
        return cls(
            doc["revision"],
            doc.get("agent"),
            doc.get("frr"),
            dict(doc.get("tunnels") or {}),
            doc.get("password"),
            float(doc.get("fetched_at") or 0),
            doc.get("route_server"),
            doc.get("vpc"),
            doc.get("onprem_password"),
        )


def _error(exc: Exception, what: str) -> ParameterError:
    """botocore's errors -> one line naming the call and the reason (code and message, or the transport error)."""
    resp = getattr(exc, "response", None)
    if isinstance(resp, dict) and "Error" in resp:
        err = resp["Error"]
        return ParameterError(f"{what}: {err.get('Code')}: {err.get('Message')}")
    return ParameterError(f"{what}: {exc}")


def make_client(bootstrap: Bootstrap) -> Any:  # a boto3 SSM client (boto3 is untyped here)
    """An SSM client with bounded retries (botocore's standard mode retries throttling with backoff)."""
    import boto3
    from botocore.config import Config

    cfg = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=3, read_timeout=10)
    return boto3.client("ssm", region_name=bootstrap.region, endpoint_url=bootstrap.endpoint_url, config=cfg)


class Source(Protocol):
    """What the poller reads: ParameterSource on an instance; a fake or a fixed snapshot in tests and benches."""

    def revision(self) -> str: ...

    def fetch(self) -> Snapshot: ...


class ParameterSource:
    """Reads one instance's parameters through a boto3 SSM client (injected)."""

    def __init__(
        self, client: Any, parameter_path: str, password_name: str | None, onprem_password_name: str | None = None
    ):
        self.client = client
        self.path = parameter_path.rstrip("/")
        self.password_name = password_name
        self.onprem_password_name = onprem_password_name

    def revision(self) -> str:
        name = f"{self.path}/revision"
        try:
            value: str = self.client.get_parameter(Name=name)["Parameter"]["Value"]
            return value
        except Exception as exc:  # botocore raises ClientError, BotoCoreError and friends
            raise _error(exc, f"get {name}") from exc

    def fetch(self) -> Snapshot:
        values: dict[str, str] = {}
        try:
            pages = self.client.get_paginator("get_parameters_by_path").paginate(
                Path=self.path, Recursive=True, WithDecryption=True
            )
            for page in pages:
                for p in page["Parameters"]:
                    values[p["Name"][len(self.path) + 1 :]] = p["Value"]
        except Exception as exc:
            raise _error(exc, f"list {self.path}") from exc
        if "revision" not in values:
            raise ParameterError(f"list {self.path}: no revision parameter (not published yet?)")
        password = None
        if self.password_name:
            try:
                password = self.client.get_parameter(Name=self.password_name, WithDecryption=True)["Parameter"]["Value"]
            except Exception as exc:
                raise _error(exc, f"get {self.password_name}") from exc
        # The on-prem password only where the frr text asks for it (routers with on-prem
        # peers); a docker host's role may not read it at all (infra/iam.py).
        onprem = None
        if self.onprem_password_name and placeholders.ONPREM_BGP_PASSWORD in (values.get("frr") or ""):
            try:
                onprem = self.client.get_parameter(Name=self.onprem_password_name, WithDecryption=True)["Parameter"][
                    "Value"
                ]
            except Exception as exc:
                raise _error(exc, f"get {self.onprem_password_name}") from exc
        tunnels = {k: v for k, v in values.items() if k.startswith("tunnels/")}
        return Snapshot(
            values["revision"],
            values.get("agent"),
            values.get("frr"),
            tunnels,
            password,
            time.time(),
            values.get("route-server"),
            values.get("vpc"),
            onprem,
        )


class Cache:
    """The last snapshot read from SSM, on disk, so a restart without SSM keeps the same state."""

    def __init__(self, state_dir: str | Path):
        self.path = Path(state_dir) / CACHE_NAME

    def save(self, snap: Snapshot) -> None:
        atomic_write_json(self.path, snap.to_json())  # root-only: it holds the BGP password

    def load(self) -> Snapshot | None:
        try:
            return Snapshot.from_json(json.loads(self.path.read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            return None  # a damaged cache is no cache; SSM is the truth


@dataclass
class PollState:
    """What `status` and the metrics show about the parameter source."""

    revision: str | None = None
    ok: bool = False
    failures: int = 0
    last_error: str | None = None
    last_success: float | None = None
    source: str = "none"  # "ssm", "cache" or "none"
    fetches: int = 0
    polls: int = 0


@dataclass
class Poller:
    """When to poll and what a poll yields. `poll()` returns a new snapshot, or None when nothing moved."""

    source: Source
    cache: Cache
    interval: float = 15.0
    jitter: float = 0.2  # +-20% of the interval
    backoff_min: float = 1.0
    backoff_max: float = 300.0
    rng: random.Random = field(default_factory=random.Random)
    state: PollState = field(default_factory=PollState)

    def start(self) -> Snapshot | None:
        """First read: SSM if it answers, else the cache (kept in force until SSM answers)."""
        try:
            snap = self.poll(force=True)
        except ParameterError:
            snap = self.cache.load()
            if snap is not None:
                self.state.source = "cache"
                self.state.revision = snap.revision
        return snap

    def poll(self, force: bool = False) -> Snapshot | None:
        self.state.polls += 1
        try:
            rev = self.source.revision()
            if not force and rev == self.state.revision and self.state.source == "ssm":
                self._ok()
                return None
            snap = self.source.fetch()
            self.state.fetches += 1
        except ParameterError as exc:
            self.state.ok = False
            self.state.failures += 1
            self.state.last_error = str(exc)
            raise
        self._ok()
        self.state.source = "ssm"
        self.state.revision = snap.revision
        return snap

    def _ok(self) -> None:
        self.state.ok = True
        self.state.failures = 0
        self.state.last_error = None
        self.state.last_success = time.time()

    def next_delay(self) -> float:
        """Seconds to the next poll: the interval with jitter, or exponential backoff after failures."""
        if self.state.failures:
            base: float = min(self.backoff_max, self.backoff_min * 2 ** (self.state.failures - 1))
            return base * self.rng.uniform(0.5, 1.0)  # "equal jitter": never zero, never in step
        return self.interval * self.rng.uniform(1 - self.jitter, 1 + self.jitter)
