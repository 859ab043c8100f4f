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
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer

from adapters.backoff import RetrySchedule
from adapters.control import (
    crash_marks,
    enabled_reason,
    listen_for_enable,
    read_control,
    send_control,
    state_record,
)
from adapters.delivery import Deliverer, PartnerEndpoint
from adapters.worker import (
    AdapterCrashed,
    ConnectorStats,
    ConnectorWorker,
    DelivererFactory,
    default_deliverer,
)
from config.settings import Settings
from events.schemas import AdapterControl, WorkerState
from events.topics import Topics
from routing import metrics
from routing.broker import ProducerParams, make_producer, require_topics
from routing.broker.errors import kafka_errors

__all__ = ["supervise"]

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

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()


class _Supervisor:
    def __init__(
        self,
        topics: Topics,
        slots: Mapping[str, _Slot],
        producer: AIOKafkaProducer,
        schedule: RetrySchedule,
        *,
        bootstrap_servers: str,
        session_timeout_ms: int,
        fetch_max_wait_ms: int,
        max_crashes: int,
    ) -> None:
        self.topics = topics
        self.slots = slots
        self.producer = producer
        self.schedule = schedule
        self.bootstrap = bootstrap_servers
        self.session_timeout_ms = session_timeout_ms
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.max_crashes = max_crashes
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

    async def start(self, slot: _Slot, reason: str | None = None) -> None:
        """Start a fresh worker for the slot, with the crash counts the topic holds."""
        marks = crash_marks(await read_control(self.bootstrap, self.topics), slot.connector_id)
        slot.stop = asyncio.Event()
        slot.stats.disabled = False
        slot.stats.disabled_reason = None
        worker = ConnectorWorker(
            slot.connector_id, slot.deliverer, self.producer, self.topics, self.schedule,
            bootstrap_servers=self.bootstrap, stats=slot.stats,
            session_timeout_ms=self.session_timeout_ms, fetch_max_wait_ms=self.fetch_max_wait_ms,
            max_crashes=self.max_crashes, crash_marks=marks,
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
        slot = self.slots[command.connector_id]
        log.info("connector_enable", connector_id=slot.connector_id, was=slot.state,
                 requested_by=command.requested_by)
        if slot.running:
            assert slot.task is not None
            slot.stop.set()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(_STOP_TIMEOUT):
                    await asyncio.gather(slot.task, return_exceptions=True)
        await self.start(slot, enabled_reason(command))

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
    bootstrap_servers: str,
    connector_ids: Sequence[str] | None = None,
    schedule: RetrySchedule | None = None,
    deliverer_factory: DelivererFactory = default_deliverer,
    stats: MutableMapping[str, ConnectorStats] | None = None,
    started: asyncio.Event | None = None,
    session_timeout_ms: int = 10_000,
) -> dict[str, ConnectorStats]:
    """Run one supervised worker per connector until ``stop_event`` is set (see the module
    docstring); ``adapters.worker.run_adapters`` documents the arguments."""
    ids = list(endpoints) if connector_ids is None else list(connector_ids)
    missing = [cid for cid in ids if cid not in endpoints]
    if missing:
        raise AdapterCrashed(f"no partner endpoint configured for: {', '.join(missing)}")
    if not ids:
        raise AdapterCrashed("no connector to run: configure at least one partner endpoint")
    schedule = schedule or RetrySchedule.from_settings(settings)
    producer_params = ProducerParams.from_settings(
        settings, bootstrap_servers=bootstrap_servers, client_id="adapters"
    )
    needed = [t for cid in ids for t in (topics.partner(cid), topics.partner_dlq(cid))]
    await require_topics(bootstrap_servers, [*needed, topics.outcomes, topics.invalid,
                                             topics.adapters_control])

    live: MutableMapping[str, ConnectorStats] = stats if stats is not None else {}
    slots: dict[str, _Slot] = {}
    for cid in ids:
        live[cid] = ConnectorStats(cid)
        slots[cid] = _Slot(cid, deliverer_factory(cid, endpoints[cid]), live[cid])
    producer = make_producer(producer_params)
    sup = _Supervisor(
        topics, slots, producer, schedule, bootstrap_servers=bootstrap_servers,
        session_timeout_ms=session_timeout_ms,
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        max_crashes=settings.adapter_max_crashes,
    )
    del settings
    enables: asyncio.Queue[AdapterControl] = asyncio.Queue()
    listening = asyncio.Event()

    async def listen() -> None:
        async for command in listen_for_enable(bootstrap_servers, topics, slots, listening):
            enables.put_nowait(command)

    listener: asyncio.Task[None] | None = None
    try:
        async with kafka_errors("starting the adapters' producer", bootstrap_servers):
            await producer.start()
        listener = asyncio.create_task(listen(), name="adapters-control")
        for slot in slots.values():
            await sup.start(slot)
        await _run(sup, stop_event, enables, listener, listening, started)
    finally:
        errors = await sup.stop_all()
        if listener is not None:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
        await producer.stop()
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
) -> None:
    """Watch the workers until ``stop_event``; restart enabled ones; stop when all stopped."""
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
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
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
            if not stop_event.is_set() and not any(s.running for s in sup.slots.values()):
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
