"""The docker SDK shim: running containers, one container, and the event stream, as plain records."""

from __future__ import annotations

import datetime as _dt
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Protocol

import docker
import docker.errors
import docker.types
import docker.utils
import requests.exceptions
import urllib3.exceptions

from .errors import DockerError
from .metrics import Metrics

log = logging.getLogger(__name__)

EVENT_IDLE = 600.0  # seconds without any container event before the stream is renewed

# Events that can change what a container needs from us. health_status arrives as
# "health_status: healthy"; exec_* and the like are ignored.
RELEVANT = frozenset(
    {"start", "restart", "die", "stop", "kill", "oom", "destroy", "pause", "unpause", "health_status", "update"}
)


@dataclass(frozen=True)
class ContainerInfo:
    """What the wiring needs to know about one container."""

    id: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    running: bool = True
    pid: int = 0  # 0: not known (a listing has no pid); the wiring asks Docker when needed
    health: str | None = None  # "healthy", "unhealthy", "starting", or None without a healthcheck
    network_mode: str = "none"
    networks: tuple[str, ...] = ()  # Docker networks other than "none"
    created: float = 0.0


@dataclass(frozen=True)
class Event:
    container_id: str
    action: str
    time_ns: int
    labels: Mapping[str, str] = field(default_factory=dict)


def _health_from_status(status: str) -> str | None:
    # The listing has no State.Health; its Status string carries it: "Up 3 s (healthy)".
    if "(healthy)" in status:
        return "healthy"
    if "(unhealthy)" in status:
        return "unhealthy"
    if "(health: starting)" in status:
        return "starting"
    return None


def _created(value: object) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value:
        # Docker gives nanoseconds ("2024-01-01T00:00:00.123456789Z"); fromisoformat takes micro.
        text = value.rstrip("Z")
        if "." in text:
            head, frac = text.split(".", 1)
            text = f"{head}.{frac[:6]}"
        try:
            return _dt.datetime.fromisoformat(text).replace(tzinfo=_dt.timezone.utc).timestamp()
        except ValueError:
            return 0.0
    return 0.0


def _networks(mode: str, nets: Mapping[str, Any] | None) -> tuple[str, ...]:
    names = [n for n in (nets or {}) if n not in ("none", "host")]
    return tuple(sorted(names))


class DockerShim:
    """A thin wrapper over docker.APIClient; every docker/requests error becomes DockerError."""

    def __init__(self, base_url: str | None = None, timeout: float = 10.0):
        self.base_url = base_url or "unix:///var/run/docker.sock"
        self.timeout = timeout
        # Created lazily: the daemon may not be up when the agent starts.
        self._api: docker.APIClient | None = None

    def _client(self) -> docker.APIClient:
        if self._api is None:
            try:
                # A fixed API version skips the version probe; 1.41 is Docker 20.10 (Debian 12).
                # types-docker says int; docker-py hands the timeout to requests, which takes a float.
                self._api = docker.APIClient(base_url=self.base_url, timeout=self.timeout, version="1.41")  # type: ignore[arg-type]
            except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
                raise DockerError(f"docker at {self.base_url}: {exc}") from exc
        return self._api

    def ping(self) -> None:
        try:
            self._client().ping()
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise DockerError(f"docker at {self.base_url} not answering: {exc}") from exc

    def list_running(self) -> list[ContainerInfo]:
        """Every running container, from one listing call (no per-container inspect)."""
        try:
            rows = self._client().containers(filters={"status": "running"})
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise DockerError(f"docker at {self.base_url}: list containers: {exc}") from exc
        out = []
        for row in rows:
            mode = (row.get("HostConfig") or {}).get("NetworkMode") or ""
            nets = (row.get("NetworkSettings") or {}).get("Networks")
            out.append(
                ContainerInfo(
                    id=row["Id"],
                    name=(row.get("Names") or ["/" + row["Id"][:12]])[0].lstrip("/"),
                    labels=dict(row.get("Labels") or {}),
                    running=row.get("State") == "running",
                    health=_health_from_status(row.get("Status") or ""),
                    network_mode=mode,
                    networks=_networks(mode, nets),
                    created=_created(row.get("Created")),
                )
            )
        return out

    def inspect(self, container_id: str) -> ContainerInfo | None:
        """One container, with its pid; None when Docker no longer knows it."""
        try:
            data = self._client().inspect_container(container_id)
        except docker.errors.NotFound:
            return None
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise DockerError(f"docker at {self.base_url}: inspect {container_id[:12]}: {exc}") from exc
        state = data.get("State") or {}
        mode = (data.get("HostConfig") or {}).get("NetworkMode") or ""
        health = (state.get("Health") or {}).get("Status")
        return ContainerInfo(
            id=data["Id"],
            name=(data.get("Name") or data["Id"][:12]).lstrip("/"),
            labels=dict((data.get("Config") or {}).get("Labels") or {}),
            running=bool(state.get("Running")) and not state.get("Restarting"),
            pid=int(state.get("Pid") or 0),
            health=health if health in ("healthy", "unhealthy", "starting") else None,
            network_mode=mode,
            networks=_networks(mode, (data.get("NetworkSettings") or {}).get("Networks")),
            created=_created(data.get("Created")),
        )

    def events(self) -> Iterator[Event]:
        """Subscribe (connects now, raises DockerError) and return the container events as they happen.

        The returned iterator ends or raises DockerError when the daemon goes away.
        """
        # Not APIClient.events(): it waits for the response headers without a timeout, and a
        # daemon that is shutting down can accept the connection and never answer, which
        # hung the agent's event pump for good. Here the headers must come within 5 s; then
        # the stream may idle for EVENT_IDLE seconds (Docker sends no keepalives) before we
        # reconnect, which costs one full resync.
        # Any: the private APIClient methods below are not in types-docker (review W5).
        api: Any = self._client()
        try:
            response = api._get(
                api._url("/events"),
                params={"filters": docker.utils.convert_filters({"type": "container"})},
                stream=True,
                timeout=(5, 5),
            )
            api._raise_for_status(response)
            raw = api._get_raw_response_socket(response)
            getattr(raw, "_sock", raw).settimeout(EVENT_IDLE)  # a SocketIO over a unix socket
        except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
            raise DockerError(f"docker at {self.base_url}: events: {exc}") from exc
        return self._decode(docker.types.CancellableStream(api._stream_helper(response, decode=True), response))

    def _decode(self, stream: docker.types.CancellableStream[dict[str, Any]]) -> Iterator[Event]:
        try:
            for raw in stream:
                action = (raw.get("Action") or raw.get("status") or "").split(":", 1)[0]
                if action not in RELEVANT:
                    continue
                actor = raw.get("Actor") or {}
                cid = actor.get("ID") or raw.get("id")
                if not cid:
                    continue
                attrs = actor.get("Attributes") or {}
                yield Event(cid, action, int(raw.get("timeNano") or 0), attrs)
        except (
            docker.errors.DockerException,
            requests.exceptions.RequestException,
            ValueError,
            OSError,
            urllib3.exceptions.HTTPError,
        ) as exc:
            raise DockerError(f"docker at {self.base_url}: event stream broke: {exc}") from exc
        finally:
            try:
                stream.close()
            except Exception:  # noqa: BLE001 - closing a dead stream may fail in many ways
                pass

    def close(self) -> None:
        if self._api is not None:
            self._api.close()
            self._api = None


# -- the event pump ------------------------------------------------------------------------

RESYNC = "resync"  # put after every (re)connect of the stream: events may have been missed


class Sink(Protocol):
    def put(self, item: Event | str) -> None: ...


def pump_events(docker: DockerShim, sink: Sink, stop: threading.Event, metrics: Metrics | None = None) -> None:
    """Feed Docker events into `sink` until `stop`; after every (re)connect, ask for a full resync.

    Events missed while disconnected (a daemon restart) are covered by that resync.
    """
    backoff = 0.2
    while not stop.is_set():
        try:
            stream = docker.events()
            if metrics:
                metrics.docker_up.set(1)
            sink.put(RESYNC)
            backoff = 0.2
            for ev in stream:
                sink.put(ev)
                if stop.is_set():
                    return
            raise DockerError("event stream ended")
        except DockerError as exc:
            if metrics:
                metrics.docker_up.set(0)
            log.warning("docker events: %s; reconnecting", exc, extra={"reason": "docker_events"})
            stop.wait(backoff)
            backoff = min(backoff * 2, 5.0)
