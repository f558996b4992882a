"""The instance's documents from SSM (revision poll, fetch, disk cache): one source feeding both reconcilers."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable

from prometheus_client import CollectorRegistry

from . import config as config_mod
from .config import AgentConfig
from .errors import ConfigError, ParameterError
from .metrics import SourceMetrics
from .ssm import Cache, Poller, Snapshot

log = logging.getLogger("overlay_agent.pairing")

# Told of every accepted snapshot with the last good agent document (None until one is known).
SnapshotListener = Callable[[Snapshot, AgentConfig | None], None]
ConfigListener = Callable[[AgentConfig], None]


class DocumentSource:
    """Polls the `revision` parameter (jittered; SIGHUP polls now), fetches the set when it moves, and hands
    each new snapshot to the pairing sync and each changed `agent` document to the container wiring.

    Hazards:
    - Parameters unreachable: the last snapshot stays in force (in memory, and in the disk
      cache for a restart without SSM); polls back off exponentially; `status` and the
      `overlay_parameters_ok` metric say so. Nothing is handed on for lack of news, so
      nothing is torn down.
    - A malformed `agent` document: the previous one stays (route protocol, pools, intervals)
      and is what both reconcilers keep using; the error is reported. The rest of the
      snapshot (tunnels, FRR) is still handed on.
    - Threads: listeners are called on the source's thread and must only hand the value over
      (a queue, a flag and a wake-up); each reconciler applies on its own thread.
    """

    def __init__(self, poller: Poller, cache: Cache, metrics: SourceMetrics | None = None) -> None:
        self.poller = poller
        self.cache = cache
        self.metrics = metrics or SourceMetrics()
        self.snapshot: Snapshot | None = None
        self.cfg: AgentConfig | None = None  # the last good agent document
        self.agent_error: str | None = None
        self.next_poll: float | None = None  # set by the first step(), relative to its clock
        self._hup = False
        self._wake = threading.Event()
        self._snapshot_listeners: list[SnapshotListener] = []
        self._config_listeners: list[ConfigListener] = []

    # -- listeners ---------------------------------------------------------------------------
    def on_snapshot(self, listener: SnapshotListener) -> None:
        """Hand `listener` the current snapshot (if any) now, and every new one from now on."""
        self._snapshot_listeners.append(listener)
        if self.snapshot is not None:
            listener(self.snapshot, self.cfg)

    def on_config(self, listener: ConfigListener) -> None:
        """Hand `listener` every changed, valid agent document from now on (not the current one)."""
        self._config_listeners.append(listener)

    # -- reading -----------------------------------------------------------------------------
    def hup(self) -> None:
        """SIGHUP: poll now (safe from a signal handler: only sets flags)."""
        self._hup = True
        self._wake.set()

    def start(self) -> Snapshot | None:
        """First read: SSM, else the disk cache."""
        snap = self.poller.start()
        self._account()
        if snap is not None:
            self._accept(snap)
        return snap

    def poll_now(self) -> None:
        try:
            snap = self.poller.poll()
        except ParameterError as exc:
            self.metrics.parameter_failures.inc()
            log.error(
                "parameters: %s (keeping revision %s; retry in %.0f s)",
                exc,
                self.poller.state.revision,
                self.poller.next_delay(),
            )
            snap = None
        else:
            if snap is not None:
                self.metrics.parameter_fetches.inc()
                log.info("parameters: revision %s", snap.revision, extra={"revision": snap.revision})
        self._account()
        if snap is not None:
            self._accept(snap)

    def step(self, now: float | None = None) -> bool:
        """Poll when due (or on SIGHUP); True if it polled."""
        now = time.monotonic() if now is None else now
        if self.next_poll is None:  # start() has just read everything
            self.next_poll = now + self.poller.next_delay()
        if not (self._hup or now >= self.next_poll):
            return False
        self._hup = False
        self.poll_now()
        self.next_poll = now + self.poller.next_delay()
        return True

    def run(self, stop: threading.Event) -> None:
        if self.snapshot is None and self.poller.state.polls == 0:
            self.start()
        while not stop.is_set():
            self._wake.clear()
            self.step()
            assert self.next_poll is not None
            # Wake at least every second to notice `stop`.
            self._wake.wait(timeout=min(max(0.0, self.next_poll - time.monotonic()), 1.0))

    def wait_config(self, stop: threading.Event) -> AgentConfig | None:
        """Block until the agent document is known (SSM or cache), retrying with backoff; None if stopped."""
        self.start()
        while self.cfg is None and not stop.is_set():
            delay = self.poller.next_delay()
            log.error(
                "no usable agent parameter yet (%s); retry in %.0f s",
                self.agent_error or self.poller.state.last_error or "not published",
                delay,
            )
            if stop.wait(delay):
                return None
            self.poll_now()
        return self.cfg

    def _account(self) -> None:
        st = self.poller.state
        self.metrics.parameters_ok.set(1 if st.ok else 0)
        if st.last_success:
            self.metrics.parameters_age.set(st.last_success)

    def _accept(self, snap: Snapshot) -> None:
        self.snapshot = snap
        changed: AgentConfig | None = None
        if snap.agent is not None:
            try:
                cfg = config_mod.parse(config_mod.loads(snap.agent, "agent"), "agent")
                if cfg != self.cfg:
                    changed = cfg
                self.cfg = cfg
                self.agent_error = None
                # The program may change the poll interval (docs/contracts.md settings).
                self.poller.interval = cfg.settings.poll_interval
            except Exception as exc:  # any bad document is a refused update, never a crash
                # Keep the previous (last good) document; a bad one must not reset the route
                # protocol, nor stop the pairing thread (tunnels and FRR keep being applied).
                if isinstance(exc, ConfigError):
                    self.agent_error = f"{exc} (keeping the last good agent document)"
                else:
                    log.exception("agent document refused")
                    self.agent_error = (
                        f"agent: refused ({type(exc).__name__}: {str(exc)[:200]}); keeping the last good one"
                    )
                self.metrics.agent_refused.inc()
                log.error("%s", self.agent_error)
        if self.poller.state.source == "ssm":
            try:  # a restart without SSM starts from it
                self.cache.save(snap)
            except OSError as exc:
                log.error("cannot write parameter cache %s: %s", self.cache.path, exc)
        for snapshot_listener in self._snapshot_listeners:
            snapshot_listener(snap, self.cfg)
        if changed is not None:
            for config_listener in self._config_listeners:
                config_listener(changed)

    # -- status ------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The `parameters` part of the pairing status file."""
        st = self.poller.state
        return {
            "ok": st.ok,
            "source": st.source,
            "revision": st.revision,
            "failures": st.failures,
            "error": st.last_error,
            "last_success": st.last_success,
            "agent_error": self.agent_error,
        }


def build(bootstrap_path: str, *, state_dir: str, registry: CollectorRegistry | None = None) -> DocumentSource:
    """The real source: boto3 against the bootstrap's parameter path, the cache in `state_dir`."""
    from .ssm import ParameterSource, load_bootstrap, make_client

    boot = load_bootstrap(bootstrap_path)
    sdir = Path(state_dir)
    sdir.mkdir(parents=True, exist_ok=True)
    source = ParameterSource(make_client(boot), boot.parameter_path, boot.password_name, boot.onprem_password_name)
    cache = Cache(sdir)
    return DocumentSource(Poller(source, cache), cache, SourceMetrics(registry))
