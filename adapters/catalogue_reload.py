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

Why a module of its own, in pieces: the supervision of the workers (what happens when one
crashes) is not this module's business; it only decides which workers should run. The
pieces a supervisor needs to follow the file are separate: ``ConnectorsFileWatch`` (has
the file changed, its validated new version, the refusal logged), ``plan_reload`` (pure:
what to add, remove, restart, leave alone), ``ensure_connector_topics``, and the small
``start_worker`` / ``stop_worker`` that ``ReloadingAdapters`` applies the plan with. Here
a worker that crashes on the broker still stops the process (``AdapterCrashed``), as
with ``run_adapters``.
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


Wanted = Mapping[str, tuple[ConnectorSpec, PartnerEndpoint]]


async def ensure_connector_topics(
    bootstrap_servers: str, topics: Topics, connector_ids: Sequence[str],
    replication_factor: int,
) -> None:
    """Create the partner topic and dead-letter topic of new connectors (``BrokerError``,
    e.g. ``TopicMismatch`` for an existing topic with another partition count)."""
    names = {n for cid in connector_ids
             for n in (topics.partner(cid), topics.partner_dlq(cid))}
    await ensure_topics(bootstrap_servers,
                        [spec for spec in topics.specs(connector_ids) if spec.name in names],
                        replication_factor)


def plan_reload(running: Wanted, wanted: Wanted) -> ReloadReport:
    """Which workers to stop, start and restart to go from ``running`` to ``wanted``.

    Pure, so any supervisor can apply it: a connector whose adapter and endpoint are
    unchanged is ``unchanged`` (a new display name included), never restarted.
    """
    report = ReloadReport()
    for cid, (spec, endpoint) in running.items():
        if cid not in wanted:
            report.removed.append(cid)
        elif (spec.adapter, endpoint) != (wanted[cid][0].adapter, wanted[cid][1]):
            report.restarted.append(cid)
        else:
            report.unchanged.append(cid)
    report.added = [cid for cid in wanted if cid not in running]
    return report


class ConnectorsFileWatch:
    """The connectors file as a process follows it: has it changed, and its new version.

    ``changed()`` compares modification time, size and inode with the last read;
    ``read()`` validates the whole file (``DeliveryConfigError``); ``refresh()`` reads a
    changed file and logs a refusal (``connectors_file_refused``), returning None then.
    """

    def __init__(self, path: Path, environ: Mapping[str, str] | None = None) -> None:
        self.path = path
        self.environ = environ
        self.refused: str | None = None
        self._seen: tuple[int, int, int] | None = None

    def changed(self) -> bool:
        return _fingerprint(self.path) != self._seen

    def retry(self) -> None:
        """Make the next ``changed()`` true, to apply the same file again."""
        self._seen = None

    def read(self) -> ConnectorsConfig:
        self._seen = _fingerprint(self.path)
        return read_connectors(self.path, self.environ)

    def refresh(self, running: Sequence[str] = ()) -> ConnectorsConfig | None:
        try:
            config = self.read()
        except DeliveryConfigError as exc:
            self.refused = str(exc)
            log.error("connectors_file_refused", path=str(self.path), reason=str(exc),
                      running=sorted(running))
            return None
        self.refused = None
        return config


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
        self.watch = ConnectorsFileWatch(path, environ)
        self.stats: MutableMapping[str, ConnectorStats] = stats if stats is not None else {}
        self.workers: dict[str, RunningWorker] = {}
        self.reloads = 0
        self.started = asyncio.Event()
        self._params: WorkerParams | None = None

    def _wanted(self, config: ConnectorsConfig) -> dict[str, tuple[ConnectorSpec, PartnerEndpoint]]:
        return {
            cid: (config.catalogue[cid], endpoint)
            for cid, endpoint in config.endpoints.items()
            if self.only is None or cid in self.only
        }

    @property
    def refused(self) -> str | None:
        """Why the last version of the file was refused, until a valid one."""
        return self.watch.refused

    async def run(self, stop_event: asyncio.Event) -> dict[str, ConnectorStats]:
        """Run until ``stop_event``; ``AdapterCrashed`` when a worker fails on the broker."""
        config = self.watch.read()  # DeliveryConfigError: the caller refuses to start
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
                if not stop_event.is_set() and self.watch.changed():
                    await self.reload()
        finally:
            stopped.cancel()

    async def reload(self) -> ReloadReport | None:
        """Read the file and apply the difference; None when the file was refused."""
        config = self.watch.refresh(list(self.workers))
        if config is None:
            return None
        wanted = self._wanted(config)
        report = plan_reload(
            {cid: (r.spec, r.endpoint) for cid, r in self.workers.items()}, wanted)
        for cid in report.unchanged:
            self.workers[cid].spec = wanted[cid][0]  # a new display name needs no restart
        for cid in [*report.removed, *report.restarted]:
            running = self.workers.pop(cid)
            error = await stop_worker(running)
            if cid in report.removed:
                self.stats.pop(cid, None)
            if error is not None:
                log.warning("adapter_stopped_with_error", connector_id=cid, error=repr(error))
        if report.added:
            try:
                await ensure_connector_topics(self.bootstrap_servers, self.topics, report.added,
                                              self.replication_factor)
            except BrokerError as exc:
                # The others keep running; the new ones wait, and the next look retries.
                self.watch.retry()
                self.watch.refused = f"topics of {', '.join(report.added)}: {exc}"
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
