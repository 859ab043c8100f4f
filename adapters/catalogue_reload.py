"""The adapters process following its connectors file: hot add, change and removal.

``statement-router adapters`` runs ``ReloadingAdapters``: one ``ConnectorWorker`` per
connector that has an endpoint in ``CONNECTORS_FILE``, and every ``RELOAD_INTERVAL``
seconds a look at the file's modification time, size and inode. When the file changed, it
is read and validated whole (catalogue and endpoints, secrets resolved, one read):

* a file that does not validate is **refused**: ``connectors_file_refused`` is logged at
  error level with the one-line reason, and the running workers stay as they are;
* otherwise only the difference is applied: a connector that appeared gets its two
  topics (``statements.partner.<id>`` and its ``.dlq``, created if missing) and a worker;
  one that disappeared has its worker stopped (what it finished is committed, the rest
  stays on its topic); one whose adapter or endpoint changed (a new URL, a rotated secret,
  another adapter kind) has its worker stopped and started again. **Every other worker is
  left running**: same consumer, same group membership, no pause in its deliveries.

Why polling and not SIGHUP: a Compose config or a Kubernetes ConfigMap is replaced in
place without anyone to send a signal, and a stat every two seconds costs nothing. A
secret *file* changed without the connectors file changing is not noticed: touch the
connectors file after a rotation.

Why a module of its own with small ``start_worker`` / ``stop_worker`` functions: the
supervision of the workers (what happens when one crashes) is ``adapters.worker``'s; this
module only decides which workers should run. A worker that crashes on the broker still
stops the process (``AdapterCrashed``), as with ``run_adapters``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer

from adapters.backoff import RetrySchedule
from adapters.delivery import Deliverer, DeliveryConfigError, PartnerEndpoint
from adapters.endpoints import ConnectorsConfig, read_connectors
from adapters.worker import (
    AdapterCrashed,
    ConnectorStats,
    ConnectorWorker,
    DelivererFactory,
    default_deliverer,
)
from config.catalogue import ConnectorSpec
from config.settings import Settings
from events.topics import Topics
from routing.broker import ProducerParams, ensure_topics, make_producer, require_topics
from routing.broker.errors import BrokerError, kafka_errors

log = structlog.get_logger("adapters.catalogue_reload")

#: Seconds between two looks at the connectors file.
RELOAD_INTERVAL = 2.0


@dataclass
class RunningWorker:
    """One connector's worker as started by ``start_worker``: enough to stop it alone."""

    spec: ConnectorSpec
    endpoint: PartnerEndpoint
    worker: ConnectorWorker
    deliverer: Deliverer
    stop: asyncio.Event
    task: asyncio.Task[None]

    @property
    def connector_id(self) -> str:
        return self.spec.connector_id


@dataclass(frozen=True)
class WorkerParams:
    """What every worker of the process shares."""

    producer: AIOKafkaProducer
    topics: Topics
    schedule: RetrySchedule
    bootstrap_servers: str
    deliverer_factory: DelivererFactory = default_deliverer
    session_timeout_ms: int = 10_000
    fetch_max_wait_ms: int = 20


def start_worker(
    spec: ConnectorSpec,
    endpoint: PartnerEndpoint,
    params: WorkerParams,
    stats: ConnectorStats | None = None,
) -> RunningWorker:
    """Start one connector's worker in a task of its own, with a stop event of its own."""
    deliverer = params.deliverer_factory(spec.connector_id, endpoint)
    worker = ConnectorWorker(
        spec.connector_id, deliverer, params.producer, params.topics, params.schedule,
        bootstrap_servers=params.bootstrap_servers,
        stats=stats or ConnectorStats(spec.connector_id),
        session_timeout_ms=params.session_timeout_ms,
        fetch_max_wait_ms=params.fetch_max_wait_ms,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop), name=f"adapter-{spec.connector_id}")
    return RunningWorker(spec, endpoint, worker, deliverer, stop, task)


async def stop_worker(running: RunningWorker) -> BaseException | None:
    """Stop one worker (it commits what it finished) and close its deliverer; its error."""
    running.stop.set()
    error: BaseException | None = None
    try:
        await running.task
    except asyncio.CancelledError:
        if not running.task.cancelled():
            raise
    except Exception as exc:
        error = exc
    with contextlib.suppress(Exception):
        await running.deliverer.close()
    return error


def _fingerprint(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


@dataclass
class ReloadReport:
    """What one reload did (also logged as ``connectors_reloaded``)."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


class ReloadingAdapters:
    """The workers of a connectors file, kept in line with it while the process runs.

    ``connector_ids`` restricts the process to some connectors (``--connector``): changes
    to others are ignored. ``workers`` is the live set (tests check that a worker left
    alone is the same object, its task still running); ``stats`` each one's
    ``ConnectorStats``. ``refused`` holds the last refusal's reason until a valid file.
    """

    def __init__(
        self,
        settings: Settings,
        topics: Topics,
        path: Path,
        *,
        bootstrap_servers: str,
        connector_ids: Sequence[str] | None = None,
        schedule: RetrySchedule | None = None,
        deliverer_factory: DelivererFactory = default_deliverer,
        stats: MutableMapping[str, ConnectorStats] | None = None,
        session_timeout_ms: int = 10_000,
        reload_interval: float = RELOAD_INTERVAL,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.path = path
        self.topics = topics
        self.bootstrap_servers = bootstrap_servers
        self.only = None if connector_ids is None else frozenset(connector_ids)
        self.schedule = schedule or RetrySchedule.from_settings(settings)
        self.deliverer_factory = deliverer_factory
        self.session_timeout_ms = session_timeout_ms
        self.fetch_max_wait_ms = settings.kafka_fetch_max_wait_ms
        self.replication_factor = settings.topic_replication_factor
        self.producer_params = ProducerParams.from_settings(
            settings, bootstrap_servers=bootstrap_servers, client_id="adapters")
        self.reload_interval = reload_interval
        self.environ = environ
        self.stats: MutableMapping[str, ConnectorStats] = stats if stats is not None else {}
        self.workers: dict[str, RunningWorker] = {}
        self.refused: str | None = None
        self.reloads = 0
        self.started = asyncio.Event()
        self._seen: tuple[int, int, int] | None = None
        self._changed = asyncio.Event()
        self._params: WorkerParams | None = None

    def _wanted(self, config: ConnectorsConfig) -> dict[str, tuple[ConnectorSpec, PartnerEndpoint]]:
        return {
            cid: (config.catalogue[cid], endpoint)
            for cid, endpoint in config.endpoints.items()
            if self.only is None or cid in self.only
        }

    def _read(self) -> ConnectorsConfig:
        self._seen = _fingerprint(self.path)
        return read_connectors(self.path, self.environ)

    async def run(self, stop_event: asyncio.Event) -> dict[str, ConnectorStats]:
        """Run until ``stop_event``; ``AdapterCrashed`` when a worker fails on the broker."""
        config = self._read()  # DeliveryConfigError: the caller refuses to start
        wanted = self._wanted(config)
        if not wanted:
            raise AdapterCrashed("no connector to run: configure at least one partner endpoint")
        needed = [t for cid in wanted for t in (self.topics.partner(cid),
                                                self.topics.partner_dlq(cid))]
        await require_topics(self.bootstrap_servers,
                             [*needed, self.topics.outcomes, self.topics.invalid])
        producer = make_producer(self.producer_params)
        try:
            async with kafka_errors("starting the adapters' producer", self.bootstrap_servers):
                await producer.start()
            self._params = WorkerParams(
                producer, self.topics, self.schedule, self.bootstrap_servers,
                self.deliverer_factory, self.session_timeout_ms, self.fetch_max_wait_ms)
            for spec, endpoint in wanted.values():
                self._start(spec, endpoint)
            await self._wait_ready()
            await self._supervise(stop_event)
        finally:
            errors = [await stop_worker(r) for r in list(self.workers.values())]
            self.workers.clear()
            await producer.stop()
        crashed = next((e for e in errors if e is not None), None)
        if crashed is not None:
            raise crashed if isinstance(crashed, AdapterCrashed) else AdapterCrashed(
                f"an adapter worker failed: {crashed!r}") from crashed
        return dict(self.stats)

    def _start(self, spec: ConnectorSpec, endpoint: PartnerEndpoint) -> None:
        assert self._params is not None
        self.stats[spec.connector_id] = ConnectorStats(spec.connector_id)
        self.workers[spec.connector_id] = start_worker(
            spec, endpoint, self._params, self.stats[spec.connector_id])

    async def _wait_ready(self) -> None:
        waits = [asyncio.ensure_future(r.worker.ready.wait()) for r in self.workers.values()]
        all_ready: asyncio.Future[Any] = asyncio.ensure_future(asyncio.gather(*waits))
        waiting: list[asyncio.Future[Any]] = [all_ready]
        waiting += [r.task for r in self.workers.values()]
        try:
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            all_ready.cancel()
            for w in waits:
                w.cancel()
        self._raise_crashed()
        self.started.set()

    def _raise_crashed(self) -> None:
        for running in self.workers.values():
            if running.task.done() and not running.task.cancelled():
                exc = running.task.exception()
                if exc is not None:
                    raise exc if isinstance(exc, AdapterCrashed) else AdapterCrashed(
                        f"connector {running.connector_id}: {exc!r}") from exc

    async def _supervise(self, stop_event: asyncio.Event) -> None:
        stopped = asyncio.ensure_future(stop_event.wait())
        try:
            while not stop_event.is_set():
                waiting: list[asyncio.Future[Any]] = [stopped]
                waiting += [r.task for r in self.workers.values()]
                await asyncio.wait(waiting, timeout=self.reload_interval,
                                   return_when=asyncio.FIRST_COMPLETED)
                self._raise_crashed()
                if not stop_event.is_set() and _fingerprint(self.path) != self._seen:
                    await self.reload()
        finally:
            stopped.cancel()

    async def reload(self) -> ReloadReport | None:
        """Read the file and apply the difference; None when the file was refused."""
        try:
            config = self._read()
        except DeliveryConfigError as exc:
            self.refused = str(exc)
            log.error("connectors_file_refused", path=str(self.path), reason=str(exc),
                      running=sorted(self.workers))
            return None
        self.refused = None
        wanted = self._wanted(config)
        report = ReloadReport()
        for cid, running in list(self.workers.items()):
            if cid not in wanted:
                report.removed.append(cid)
            elif (running.spec.adapter, running.endpoint) != (wanted[cid][0].adapter,
                                                              wanted[cid][1]):
                report.restarted.append(cid)
            else:
                running.spec = wanted[cid][0]  # a new display name needs no restart
                report.unchanged.append(cid)
        report.added = [cid for cid in wanted if cid not in self.workers]
        for cid in [*report.removed, *report.restarted]:
            running = self.workers.pop(cid)
            error = await stop_worker(running)
            if cid in report.removed:
                self.stats.pop(cid, None)
            if error is not None:
                log.warning("adapter_stopped_with_error", connector_id=cid, error=repr(error))
        if report.added:
            names = {n for cid in report.added
                     for n in (self.topics.partner(cid), self.topics.partner_dlq(cid))}
            try:
                await ensure_topics(
                    self.bootstrap_servers,
                    [spec for spec in self.topics.specs(report.added) if spec.name in names],
                    self.replication_factor,
                )
            except BrokerError as exc:
                # The others keep running; the new ones wait, and the next look retries.
                self._seen = None
                self.refused = f"topics of {', '.join(report.added)}: {exc}"
                log.error("connector_topics_failed", connectors=report.added, error=str(exc))
                report.added = []
        for cid in [*report.restarted, *report.added]:
            spec, endpoint = wanted[cid]
            self._start(spec, endpoint)
        self.reloads += 1
        log.info("connectors_reloaded", path=str(self.path), added=report.added,
                 removed=report.removed, restarted=report.restarted,
                 unchanged=report.unchanged,
                 adapters={cid: r.spec.adapter for cid, r in self.workers.items()})
        if not self.workers:
            log.warning("no_connector_to_run", path=str(self.path))
        return report
