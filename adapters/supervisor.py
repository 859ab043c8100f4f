"""The adapters process: one supervised worker per connector, isolated from the others.

**Isolation.** Each connector's worker (``adapters.worker.ConnectorWorker``) runs in a task
of its own with its own stop event. A fatal error of one worker (the broker refusing one of
its produces, a bug on one of its records) stops *that worker only*: its state becomes
``stopped`` with the error, ``statement_router_connector_worker_up{connector}`` drops to 0,
the state is published on the control topic (``adapters.control``, read by ``monitor`` and
``/ops/topics``), and the process's other connectors keep delivering. Only when every
worker of the process has stopped does the process stop, with ``AdapterCrashed`` (exit 8,
as before), so that a process supervisor restarts it: then nothing in it is healthy.

**Enable.** A stopped worker, or one disabled by a 410, stays so until an operator enables
it: ``statement-router adapters enable CONNECTOR`` or ``POST /ops/connectors/{id}/enable``
publish an ``enable`` command on the control topic, which every adapters process reads
from its end. The process running the connector stops its worker (if it still runs,
as a disabled one does: it commits what it finished) and starts a fresh one, which resumes
from the group's committed offsets: the statement that met the 410, or the record the
worker crashed on, comes first. The fresh worker counts that start against the record's
crash count (``ADAPTER_MAX_CRASHES``), so enabling a worker that crashes on the same record
again and again ends with the record parked, not with a loop.

**Following the connectors file.** ``statement-router adapters`` passes a ``FileFollow``
(through ``adapters.catalogue_reload.ReloadingAdapters``, a thin wrapper): the main loop
then also looks at ``CONNECTORS_FILE`` every ``interval`` seconds and applies a changed,
valid version with ``plan_reload``: a new connector gets its topics
(``ensure_connector_topics``) and a slot of its own, started like the first ones; a
removed connector's slot is stopped and dropped; a connector whose adapter or endpoint
changed gets a fresh slot (a new deliverer), started afresh even if its worker had stopped
or was disabled; every other slot is left alone, stopped and disabled ones included (they
wait for an enable). An invalid file is refused (logged by ``ConnectorsFileWatch``) and
nothing changes. One code path: the supervisor is the only thing that starts or stops
workers. ``statement-router up`` follows its file the same way, with a ``FileFollow``
whose ``default`` gives a connector without an endpoint the embedded directory drop. A
file that leaves no connector leaves the process up and idle (``no_connector_to_run``):
"every worker stopped" (exit 8) means failures, and an empty file is not one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer

from adapters.catalogue_reload import (
    ConnectorsFileWatch,
    ReloadReport,
    Wanted,
    ensure_connector_topics,
    plan_reload,
)
from adapters.control import (
    crash_marks,
    enabled_reason,
    listen_for_enable,
    read_control,
    send_control,
    state_record,
)
from adapters.delivery import Deliverer, PartnerEndpoint
from adapters.endpoints import ConnectorsConfig
from adapters.worker import (
    AdapterCrashed,
    ConnectorStats,
    ConnectorWorker,
    DelivererFactory,
    default_deliverer,
)
from config.catalogue import ConnectorSpec
from config.settings import Settings
from events.schemas import AdapterControl, WorkerState
from events.topics import Topics
from routing.broker import require_topics
from routing.broker.errors import BrokerError
from routing.observability import metrics
from routing.services.backoff import RetrySchedule

__all__ = ["FileFollow", "supervise"]

log = structlog.get_logger("adapters.supervisor")

_STOP_TIMEOUT = 30.0


@dataclass
class _Slot:
    """One connector: its deliverer, its current worker and task, and its state."""

    connector_id: str
    deliverer: Deliverer
    stats: ConnectorStats
    worker: ConnectorWorker | None = None
    task: asyncio.Task[None] | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    state: WorkerState = "running"
    reason: str | None = None
    spec: ConnectorSpec | None = None
    endpoint: PartnerEndpoint | None = None

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()


@dataclass(eq=False)
class FileFollow:
    """The connectors file the supervisor follows (``adapters.catalogue_reload``).

    ``only``: the ``--connector`` restriction (changes to other connectors are ignored);
    ``slots``: the supervisor's live slots, set when it starts; ``reloads``: how many
    versions of the file were applied.

    ``default``: the endpoint of a declared connector the file gives none. ``adapters``
    has none (such a connector runs no worker there); ``up`` gives the embedded directory
    drop, so that a table added without an endpoint delivers somewhere visible, as the
    ones present at start do. It must return an equal endpoint for the same connector
    every time, or ``plan_reload`` would see a change and restart the worker.
    ``on_reload``: told what each applied version did and every running connector's
    endpoint (``up`` keeps ``GET /connectors`` and its banner true with it).
    """

    watch: ConnectorsFileWatch
    only: frozenset[str] | None = None
    interval: float = 2.0
    replication_factor: int = 1
    reloads: int = 0
    slots: dict[str, _Slot] = field(default_factory=dict)
    default: Callable[[str], PartnerEndpoint] | None = None
    on_reload: Callable[[ReloadReport, dict[str, PartnerEndpoint]], None] | None = None

    def wanted(self, config: ConnectorsConfig) -> dict[str, tuple[ConnectorSpec, PartnerEndpoint]]:
        endpoints = dict(config.endpoints)
        if self.default is not None:
            for cid in config.catalogue:
                if cid not in endpoints:
                    endpoints[cid] = self.default(cid)
        return {
            cid: (config.catalogue[cid], endpoint)
            for cid, endpoint in endpoints.items()
            if self.only is None or cid in self.only
        }


class _Supervisor:
    def __init__(
        self,
        topics: Topics,
        slots: dict[str, _Slot],
        producer: AIOKafkaProducer,
        schedule: RetrySchedule,
        *,
        bootstrap_servers: str,
        session_timeout_ms: int,
        fetch_max_wait_ms: int,
        max_crashes: int,
        in_flight: int,
        deliverer_factory: DelivererFactory,
        live: MutableMapping[str, ConnectorStats],
    ) -> None:
        self.deliverer_factory = deliverer_factory
        self.live = live
        self.topics = topics
        self.slots = slots
        self.producer = producer
        self.schedule = schedule
        self.bootstrap = bootstrap_servers
        self.session_timeout_ms = session_timeout_ms
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.max_crashes = max_crashes
        self.in_flight = in_flight
        self.background: set[asyncio.Task[Any]] = set()

    async def publish(self, slot: _Slot, state: WorkerState, reason: str | None) -> None:
        """Set and publish a worker's state; a failed publish is logged, never fatal."""
        slot.state, slot.reason = state, reason
        slot.stats.state = state
        metrics.WORKER_UP.labels(slot.connector_id).set(0 if state == "stopped" else 1)
        try:
            async with asyncio.timeout(10):
                await send_control(self.producer, self.topics,
                                   state_record(slot.connector_id, state, reason))
        except (Exception, TimeoutError) as exc:
            log.warning("worker_state_not_published", connector_id=slot.connector_id,
                        state=state, error=repr(exc))

    def _disabled(self, slot: _Slot, detail: str) -> None:
        task = asyncio.create_task(self.publish(slot, "disabled", detail))
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def start(
        self, slot: _Slot, reason: str | None = None,
        control: list[AdapterControl] | None = None,
    ) -> None:
        """Start a fresh worker for the slot, with the crash counts the topic holds.

        ``control``: the control topic as already read, when several slots start together
        (at boot, a reload), so that the topic is read once rather than once per slot.
        """
        if control is None:
            control = await read_control(self.bootstrap, self.topics)
        marks = crash_marks(control, slot.connector_id)
        slot.stop = asyncio.Event()
        slot.stats.disabled = False
        slot.stats.disabled_reason = None
        worker = ConnectorWorker(
            slot.connector_id, slot.deliverer, self.producer, self.topics, self.schedule,
            bootstrap_servers=self.bootstrap, stats=slot.stats,
            session_timeout_ms=self.session_timeout_ms, fetch_max_wait_ms=self.fetch_max_wait_ms,
            max_crashes=self.max_crashes, in_flight=self.in_flight, crash_marks=marks,
            on_disabled=lambda detail: self._disabled(slot, detail),
        )
        slot.worker = worker
        slot.task = asyncio.create_task(worker.run(slot.stop),
                                        name=f"adapter-{slot.connector_id}")
        await self.publish(slot, "running", reason)

    async def stopped(self, slot: _Slot) -> None:
        """The slot's task ended on its own: a fatal error of that worker only."""
        assert slot.task is not None
        exc = None if slot.task.cancelled() else slot.task.exception()
        reason = str(exc) if exc is not None else "the worker stopped"
        slot.stats.last_error = reason
        log.error("adapter_worker_stopped", connector_id=slot.connector_id, error=reason,
                  action="the process's other connectors go on; fix the cause, then run "
                         f"statement-router adapters enable {slot.connector_id}")
        await self.publish(slot, "stopped", reason)

    async def enable(self, command: AdapterControl) -> None:
        """Restart the connector's worker (a running one too: it commits what it finished)."""
        slot = self.slots.get(command.connector_id)
        if slot is None:  # removed from the connectors file since the command was read
            log.warning("connector_enable_ignored", connector_id=command.connector_id,
                        reason="not in this process's connectors any more")
            return
        log.info("connector_enable", connector_id=slot.connector_id, was=slot.state,
                 requested_by=command.requested_by)
        if slot.running:
            assert slot.task is not None
            slot.stop.set()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(_STOP_TIMEOUT):
                    await asyncio.gather(slot.task, return_exceptions=True)
        await self.start(slot, enabled_reason(command))

    def new_slot(self, cid: str, endpoint: PartnerEndpoint,
                 spec: ConnectorSpec | None = None) -> _Slot:
        self.live[cid] = ConnectorStats(cid)
        return _Slot(cid, self.deliverer_factory(cid, endpoint), self.live[cid],
                     spec=spec, endpoint=endpoint)

    async def retire(self, slot: _Slot) -> None:
        """Stop a slot for good (removed or replaced): it commits what it finished."""
        slot.stop.set()
        if slot.task is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(_STOP_TIMEOUT):
                    await asyncio.gather(slot.task, return_exceptions=True)
            if (slot.task.done() and not slot.task.cancelled() and slot.state != "stopped"
                    and (exc := slot.task.exception()) is not None):
                log.warning("adapter_stopped_with_error", connector_id=slot.connector_id,
                            error=repr(exc))
        with contextlib.suppress(Exception):
            await slot.deliverer.close()

    async def reload(self, follow: FileFollow) -> None:
        """Apply a changed connectors file: add, remove or restart slots, no other."""
        config = follow.watch.refresh(list(self.slots))
        if config is None:
            return  # refused and logged; the running slots stay
        wanted = follow.wanted(config)
        running: Wanted = {cid: (s.spec, s.endpoint) for cid, s in self.slots.items()
                           if s.spec is not None and s.endpoint is not None}
        report = plan_reload(running, wanted)
        for cid in report.unchanged:
            self.slots[cid].spec = wanted[cid][0]  # a new display name needs no restart
        for cid in [*report.removed, *report.restarted]:
            slot = self.slots.pop(cid)
            await self.retire(slot)
            if cid in report.removed:
                self.live.pop(cid, None)
                with contextlib.suppress(KeyError):
                    metrics.WORKER_UP.remove(cid)
        if report.added:
            try:
                await ensure_connector_topics(self.bootstrap, self.topics, report.added,
                                              follow.replication_factor)
            except BrokerError as exc:
                # The others keep running; the new ones wait, and the next look retries.
                follow.watch.retry()
                follow.watch.refused = f"topics of {', '.join(report.added)}: {exc}"
                log.error("connector_topics_failed", connectors=report.added, error=str(exc))
                report.added = []
        starting = [*report.restarted, *report.added]
        control = await read_control(self.bootstrap, self.topics) if starting else []
        for cid in starting:
            spec, endpoint = wanted[cid]
            slot = self.new_slot(cid, endpoint, spec)
            await self.start(slot, "connectors file changed", control)
            self.slots[cid] = slot  # once its worker exists: readers see a whole slot
        follow.reloads += 1
        log.info("connectors_reloaded", path=str(follow.watch.path), added=report.added,
                 removed=report.removed, restarted=report.restarted,
                 unchanged=report.unchanged,
                 adapters={cid: s.endpoint.kind for cid, s in self.slots.items()
                           if s.endpoint is not None})
        if follow.on_reload is not None:
            try:
                follow.on_reload(report, {cid: s.endpoint for cid, s in self.slots.items()
                                          if s.endpoint is not None})
            except Exception as exc:  # a report that failed must not stop the deliveries
                log.warning("connectors_reload_report_failed", error=repr(exc))
        if not self.slots:
            log.warning("no_connector_to_run", path=str(follow.watch.path),
                        action="the process stays up, idle, until the file gives a connector")

    async def stop_all(self) -> list[BaseException]:
        for slot in self.slots.values():
            slot.stop.set()
        tasks = [slot.task for slot in self.slots.values() if slot.task is not None]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for task in list(self.background):
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        return [r for r in results if isinstance(r, BaseException)]


async def supervise(
    settings: Settings,
    topics: Topics,
    endpoints: Mapping[str, PartnerEndpoint],
    stop_event: asyncio.Event,
    *,
    producer: AIOKafkaProducer,
    bootstrap_servers: str,
    connector_ids: Sequence[str] | None = None,
    schedule: RetrySchedule | None = None,
    deliverer_factory: DelivererFactory = default_deliverer,
    stats: MutableMapping[str, ConnectorStats] | None = None,
    started: asyncio.Event | None = None,
    session_timeout_ms: int = 10_000,
    follow: FileFollow | None = None,
    specs: Mapping[str, ConnectorSpec] | None = None,
) -> dict[str, ConnectorStats]:
    """Run one supervised worker per connector until ``stop_event`` is set (see the module
    docstring); ``adapters.worker.run_adapters`` documents the arguments. ``follow``: the
    connectors file to follow (``adapters.catalogue_reload.ReloadingAdapters`` passes it,
    with each connector's ``specs``). ``producer``: the process's one started producer,
    shared by every worker (outcomes, dead letters, control states); the composition root
    (``routing.entrypoints.bootstrap.run_adapters_role``) builds, starts and stops it."""
    ids = list(endpoints) if connector_ids is None else list(connector_ids)
    missing = [cid for cid in ids if cid not in endpoints]
    if missing:
        raise AdapterCrashed(f"no partner endpoint configured for: {', '.join(missing)}")
    if not ids:
        raise AdapterCrashed("no connector to run: configure at least one partner endpoint")
    schedule = schedule or RetrySchedule.from_settings(settings)
    needed = [t for cid in ids for t in (topics.partner(cid), topics.partner_dlq(cid))]
    await require_topics(bootstrap_servers, [*needed, topics.outcomes, topics.invalid,
                                             topics.adapters_control])

    live: MutableMapping[str, ConnectorStats] = stats if stats is not None else {}
    slots: dict[str, _Slot] = follow.slots if follow is not None else {}
    sup = _Supervisor(
        topics, slots, producer, schedule, bootstrap_servers=bootstrap_servers,
        session_timeout_ms=session_timeout_ms,
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        max_crashes=settings.adapter_max_crashes,
        in_flight=settings.adapter_in_flight_per_partition,
        deliverer_factory=deliverer_factory, live=live,
    )
    for cid in ids:
        slots[cid] = sup.new_slot(cid, endpoints[cid], (specs or {}).get(cid))
    del settings
    enables: asyncio.Queue[AdapterControl] = asyncio.Queue()
    listening = asyncio.Event()

    async def listen() -> None:
        async for command in listen_for_enable(bootstrap_servers, topics, slots, listening):
            enables.put_nowait(command)

    listener: asyncio.Task[None] | None = None
    try:
        listener = asyncio.create_task(listen(), name="adapters-control")
        control = await read_control(bootstrap_servers, topics)
        for slot in slots.values():
            await sup.start(slot, control=control)
        await _run(sup, stop_event, enables, listener, listening, started, follow)
    finally:
        errors = await sup.stop_all()
        if listener is not None:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
        for slot in slots.values():
            with contextlib.suppress(Exception):
                await slot.deliverer.close()
    if errors and not stop_event.is_set():
        first = errors[0]
        if isinstance(first, AdapterCrashed):
            raise first
        raise AdapterCrashed(f"an adapter worker failed: {first!r}") from first
    return dict(live)


async def _run(
    sup: _Supervisor,
    stop_event: asyncio.Event,
    enables: asyncio.Queue[AdapterControl],
    listener: asyncio.Task[None],
    listening: asyncio.Event,
    started: asyncio.Event | None,
    follow: FileFollow | None = None,
) -> None:
    """Watch the workers until ``stop_event``; restart enabled ones; apply a changed
    connectors file (``follow``); stop when every worker has stopped."""
    stopping = asyncio.create_task(stop_event.wait())
    next_enable: asyncio.Task[AdapterControl] = asyncio.create_task(enables.get())
    ready = asyncio.create_task(_ready(list(sup.slots.values()), listening))
    try:
        while not stop_event.is_set():
            slots = list(sup.slots.values())
            waiting: set[asyncio.Future[Any]] = {stopping, next_enable, listener}
            waiting |= {s.task for s in slots if s.running and s.task is not None}
            if not ready.done():
                waiting.add(ready)
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED,
                                         timeout=follow.interval if follow else None)
            if ready in done and started is not None:
                started.set()
            if listener in done:
                exc = None if listener.cancelled() else listener.exception()
                raise AdapterCrashed(f"the adapters' control topic could not be read: {exc!r}")
            for slot in slots:
                if slot.task is not None and slot.task in done:
                    await sup.stopped(slot)
            if next_enable in done:
                await sup.enable(next_enable.result())
                next_enable = asyncio.create_task(enables.get())
            if follow is not None and not stop_event.is_set() and follow.watch.changed():
                await sup.reload(follow)
            if (not stop_event.is_set() and sup.slots
                    and not any(s.running for s in sup.slots.values())):
                reasons = "; ".join(f"{s.connector_id}: {s.reason}" for s in sup.slots.values())
                raise AdapterCrashed(f"every adapter worker of this process stopped ({reasons})")
    finally:
        for task in (stopping, next_enable, ready):
            task.cancel()
        await asyncio.gather(stopping, next_enable, ready, return_exceptions=True)


async def _ready(slots: Sequence[_Slot], listening: asyncio.Event) -> None:
    """Until the control listener and every first worker are ready (or that worker ended)."""
    await listening.wait()
    for slot in slots:
        if slot.worker is None or slot.task is None:
            continue
        ready = asyncio.ensure_future(slot.worker.ready.wait())
        await asyncio.wait([ready, slot.task], return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
