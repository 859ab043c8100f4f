"""The per-connector adapter worker: consume ``statements.partner.<id>``, deliver, never lose.

One worker per connector, each with its own consumer group ``<prefix>.adapter.<id>``, its
own consumer, tasks, deliverer and backoff (DESIGN §3). ``run_adapters`` runs any number of
them in one process; they share only the event loop and one producer (for dead letters
and outcomes), so a partner that is down, slow or gone delays its own connector only.

**Commit rule (at-least-once).** A record's offset is committed only once its statement
was delivered, or dead-lettered with the dead letter acknowledged by the broker, and its
``delivery.outcome/v1`` acknowledged too. A crash anywhere before the commit redelivers
the statement: partners may see it twice, always with the same idempotency key (the
statement id as ``webhook-id``; the same file name in a drop), never zero times.

**Order.** Per IBAN, statements must reach the partner in the order they were received
(DESIGN §5). The topic is keyed by IBAN, so one IBAN lives in one partition. The fetch
loop appends each partition's records to that partition's buffer, drained by a task of
its own (a *lane*), and keeps fetching while the lanes deliver. A lane has up to
``in_flight`` deliveries in flight (``ADAPTER_IN_FLIGHT_PER_PARTITION``), each for a
different IBAN: a record starts once every earlier record of its IBAN is done, so a
statement being retried holds back its own IBAN, and only the slot it takes from the
others. While a partition is *careful* (its first record since it was assigned, or a
crash count kept for one of its records: see Crashes) its lane delivers one record at a
time, so that the count names the record in flight. The commit never passes a record that
is not done, so a crash redelivers from the first unfinished record of the partition. A
partition whose buffer reaches ``max_buffered`` records (a retrying or slow partner) is
paused until its lane has worked it down to half, so a retrying partition neither blocks
the others nor lets its records pile up in memory.

**Latency.** The fetch loop never waits for a lane: records of a partition are fetched
while the previous ones are delivered, so a statement waits for the deliveries ahead of
it of its IBAN and for a free slot of its lane, and not for a pause, a poll timeout and
a new fetch as well (that
cycle cost ~100-250 ms per batch, most of the end-to-end budget; docs/performance.md).
Commits are taken off the delivery path too: a committer task commits every partition's
finished offsets in one request every ``_COMMIT_INTERVAL`` (sooner once a partition has
``_COMMIT_EVERY`` uncommitted records), so a delivery never waits for a commit round trip.

**Redelivery.** Transient failures are retried after ``RetrySchedule.delay`` (exponential
backoff, full jitter, at least the partner's ``Retry-After``), up to ``max_attempts``;
before each wait, what the partition finished so far is committed, so a long wait never
holds finished work hostage. Attempts are counted in memory: after a restart a statement
starts again from attempt 1 (the worst case is more attempts, never fewer deliveries).

**Dead letters.** A permanent failure, or the last allowed attempt failing, publishes a
``statement.dead-letter/v1`` with every attempt to ``statements.partner.<id>.dlq``; the
worker then moves on. ``adapters.dlq`` lists and replays them.

**Disabled.** A ``disabled`` answer (HTTP 410 Gone: the partner removed the endpoint) stops
the whole connector: every partition is paused, nothing more is committed (the statement
that met the 410 and everything behind it stay on the topic), an ``connector_disabled``
error is logged and ``ConnectorStats.disabled`` is set. Dead-lettering statement after
statement would bury a configuration problem under thousands of dead letters. The worker
keeps its group membership; once the endpoint is fixed, ``statement-router adapters enable``
(or the operator API) restarts it without restarting the process (``adapters.supervisor``).

**Parked.** A dead letter copies the delivery. When that copy cannot be written (it would
exceed the size rule's ``MAX_RECORD_BYTES``, or the broker refuses it for its size), the
worker writes a *parked* dead letter instead: one that refers to the record by topic,
partition, offset and size (``parked``), which ``dlq replay`` re-reads from the partner
topic. It is counted (``statement_router_parked_total{component="adapters"}``), logged
once (``statement_parked``) and the worker moves on. If even that cannot be written, the
worker stops (a fatal error, below).

**Crashes.** Any other error escaping a record (the broker refusing a produce, a bug) is
fatal for the worker only (``adapters.supervisor`` keeps the process's other connectors
going). So that no record can crash-loop a connector, the worker keeps a crash count per
partition in the control topic (``adapters.control``): before the first record of a
partition after a start (the one a crash would bring back), it writes "started once more"
and awaits the ack; a record finished resets it; an error on a record counts it. When a
start finds ``max_crashes`` (``ADAPTER_MAX_CRASHES``) for the record it is about to
handle, it parks it (parked dead letter, or if even that fails, a log line and
``statement_router_parked_total{how="unwritable"}``) and moves on. A process killed while
handling that record (``kill -9``, out of memory) counts as a crash too.

**Malformed records** (not a valid ``statement.partner-delivery/v1``) cannot be delivered
and are never skipped silently: they go to ``statements.invalid`` with the reason and raw
bytes, then their offset is committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.errors import (
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)
from aiokafka.structs import ConsumerRecord, TopicPartition

from adapters.control import CrashMark, crash_record, send_control
from adapters.delivery import Deliverer, DeliveryResult, PartnerEndpoint, make_deliverer
from config.catalogue import ConnectorSpec
from config.settings import Settings
from events.limits import MAX_RECORD_BYTES
from events.schemas import (
    DeliveryAttempt,
    DeliveryOutcome,
    OutcomeKind,
    ParkedRecord,
    StatementDeadLetter,
    StatementPartnerDelivery,
)
from events.topics import Topics
from events.wire import InvalidEvent, decode
from routing.broker.errors import BrokerError, kafka_errors
from routing.domain.iban import mask_iban
from routing.domain.identity import statement_key
from routing.observability import metrics
from routing.services.backoff import RetrySchedule
from routing.services.parking import Refused, write_invalid

log = structlog.get_logger("adapters.worker")

DelivererFactory = Callable[[str, PartnerEndpoint], Deliverer]

# Commit finished offsets this often (seconds), or sooner once a partition has this many
# uncommitted records, so a crash redelivers little. One commit covers every partition and
# costs one broker round trip, off the delivery path (the committer task).
_COMMIT_EVERY = 50
_COMMIT_INTERVAL = 0.2
# How long one getmany waits when nothing is buffered: only bounds how soon a failed lane
# is noticed and a stop is seen, since getmany returns as soon as records are there.
_POLL_TIMEOUT_MS = 100
_MAX_RECORDS = 500
# Records buffered per partition before it is paused (resumed at half). ~2 KB each.
_MAX_BUFFERED = 1_000
# Default of KAFKA_FETCH_MAX_WAIT_MS (config.settings), for workers built without settings.
_FETCH_MAX_WAIT_MS = 20
_SHUTDOWN_FLUSH_TIMEOUT = 10.0
_STATEMENT_FIELDS = ("statement_id", "cabinet_id", "connector_id")
# Default of ADAPTER_MAX_CRASHES (config.settings).
_MAX_CRASHES = 3
# Default of ADAPTER_IN_FLIGHT_PER_PARTITION (config.settings).
_IN_FLIGHT = 4
# Records of a partition's buffer looked at, per delivery slot, for one that may start.
_SCAN_PER_SLOT = 16
_MARK_TIMEOUT = 10.0
PARK_COMPONENT = "adapters"
SIZE_ERRORS = (MessageSizeTooLargeError, RecordTooLargeError, RecordListTooLargeError)


class AdapterCrashed(Exception):
    """A worker stopped on an error it cannot deliver around (the broker, a bug)."""


def default_deliverer(connector_id: str, endpoint: PartnerEndpoint) -> Deliverer:
    """The deliverer of an endpoint's own kind.

    The endpoints mapping handed to ``run_adapters`` is authoritative: a deployment's
    connectors file was already checked against the catalogue (``adapters.endpoints``),
    and the embedded mode deliberately stands a directory drop in for every connector,
    which ``make_deliverer`` would refuse against the catalogue's adapter kind.
    """
    return make_deliverer(ConnectorSpec(connector_id, connector_id, endpoint.kind), endpoint)


@dataclass
class ConnectorStats:
    """What one connector's worker did; live while it runs (for ``up`` and operators)."""

    connector_id: str
    delivered: int = 0
    retries: int = 0
    dead_lettered: int = 0
    invalid: int = 0
    parked: int = 0
    state: str = "running"
    disabled: bool = False
    disabled_reason: str | None = None
    assigned_partitions: list[int] = field(default_factory=list)
    last_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "connector_id": self.connector_id,
            "delivered": self.delivered,
            "retries": self.retries,
            "dead_lettered": self.dead_lettered,
            "invalid": self.invalid,
            "parked": self.parked,
            "state": self.state,
            "disabled": self.disabled,
            "disabled_reason": self.disabled_reason,
            "assigned_partitions": list(self.assigned_partitions),
            "last_error": self.last_error,
        }


@dataclass
class _Checkpoint:
    """A partition's progress: acks still awaited and the next offset to commit.

    Invariant (what makes a commit safe while the lane keeps delivering): the lane appends
    a record's produces to ``pending`` *before* it advances ``next_offset`` past the
    record, so a snapshot ``(next_offset, len(pending))`` taken without an await in
    between covers every ack the offset depends on.
    """

    next_offset: int = -1
    committed: int = -1
    pending: list[asyncio.Future[Any]] = field(default_factory=list)
    since_commit: int = 0


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: ConnectorWorker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        await self._worker._release(list(revoked))

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        self._worker._assigned(list(assigned))


def _now() -> datetime:
    return datetime.now(UTC)


class ConnectorWorker:
    """Delivers one connector's statements; see the module docstring for the guarantees."""

    def __init__(
        self,
        connector_id: str,
        deliverer: Deliverer,
        producer: AIOKafkaProducer,
        topics: Topics,
        schedule: RetrySchedule,
        *,
        bootstrap_servers: str,
        stats: ConnectorStats | None = None,
        rng: random.Random | None = None,
        max_records: int = _MAX_RECORDS,
        max_buffered: int = _MAX_BUFFERED,
        session_timeout_ms: int = 10_000,
        fetch_max_wait_ms: int = _FETCH_MAX_WAIT_MS,
        max_crashes: int = _MAX_CRASHES,
        in_flight: int = _IN_FLIGHT,
        crash_marks: Mapping[int, CrashMark] | None = None,
        on_disabled: Callable[[str], None] | None = None,
    ) -> None:
        self.connector_id = connector_id
        self.topic = topics.partner(connector_id)
        self.group_id = topics.group("adapter", connector_id)
        self.stats = stats or ConnectorStats(connector_id)
        self._topics = topics
        self._deliverer = deliverer
        self._producer = producer
        self._schedule = schedule
        self._bootstrap = bootstrap_servers
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self._max_records = max_records
        self._max_buffered = max(1, max_buffered)
        self._session_timeout_ms = session_timeout_ms
        self._fetch_max_wait_ms = fetch_max_wait_ms
        self._consumer: AIOKafkaConsumer | None = None
        self._tasks: dict[TopicPartition, asyncio.Task[None]] = {}
        self._buffers: dict[TopicPartition, deque[ConsumerRecord]] = {}
        self._throttled: set[TopicPartition] = set()
        self._checkpoints: dict[TopicPartition, _Checkpoint] = {}
        self._commit_lock = asyncio.Lock()
        self._commit_soon = asyncio.Event()
        self._committer: asyncio.Task[None] | None = None
        self._disabled = False
        self._max_crashes = max(1, max_crashes)
        self._in_flight = max(1, in_flight)
        # partition -> (offset, crashes): read from the control topic at start, then ours.
        self._marks: dict[int, CrashMark] = dict(crash_marks or {})
        # Partitions whose next record is the first since they were assigned.
        self._fresh: set[TopicPartition] = set()
        # partition -> (offset, crashes before): a record counted as started, unfinished.
        self._armed: dict[TopicPartition, CrashMark] = {}
        self._on_disabled = on_disabled
        self.ready = asyncio.Event()
        self._log = log.bind(connector_id=connector_id)

    # ----------------------------------------------------------------- the fetch loop

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set; raises ``AdapterCrashed`` on a broker failure."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=self.group_id,
            client_id=f"adapter-{self.connector_id}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=self._fetch_max_wait_ms,
            # The router writes the partner topics in transactions with KAFKA_EXACTLY_ONCE:
            # a record of an aborted transaction is never delivered.
            isolation_level="read_committed",
            session_timeout_ms=self._session_timeout_ms,
            heartbeat_interval_ms=max(100, self._session_timeout_ms // 5),
        )
        self._consumer = consumer
        try:
            async with kafka_errors(f"starting the {self.connector_id} adapter", self._bootstrap):
                await consumer.start()
                # Subscribe only to an existing topic (checked by run_adapters): a metadata
                # request for a missing one would auto-create it with the wrong count.
                consumer.subscribe([self.topic], listener=_Rebalance(self))
            # Series exist from the start, so rates and alerts see a 0, not an absence.
            metrics.init_connector(self.connector_id)
            self._committer = asyncio.create_task(
                self._commit_loop(), name=f"adapter-{self.connector_id}-committer")
            self.ready.set()
            self._log.info("adapter_started", topic=self.topic, group_id=self.group_id)
            while not stop.is_set():
                self._reap()
                try:
                    batches = await consumer.getmany(
                        timeout_ms=_POLL_TIMEOUT_MS, max_records=self._max_records
                    )
                except KafkaError as exc:
                    raise AdapterCrashed(
                        f"connector {self.connector_id}: reading {self.topic} failed: {exc!r}"
                    ) from exc
                self._reap()
                if self._disabled:
                    continue  # paused; keep polling so the group keeps us as a member
                assignment = consumer.assignment()
                for tp, records in batches.items():
                    if records and tp in assignment:
                        self._enqueue(tp, records)
        finally:
            # Also after a failure: what the lanes finished is committed (its acks are
            # awaited first), so a restart begins at the record the worker failed on.
            await self._shutdown(flush=True)
            self._consumer = None
            self._log.info("adapter_stopped", **self.stats.as_dict())

    def _enqueue(self, tp: TopicPartition, records: list[ConsumerRecord]) -> None:
        """Append fetched records to the partition's buffer; start its lane if idle.

        A lane never awaits between finding its buffer empty and finishing, so a lane that
        is not done will still see these records, and a done one is replaced.
        """
        buffer = self._buffers.setdefault(tp, deque())
        buffer.extend(records)
        if len(buffer) >= self._max_buffered and tp not in self._throttled:
            assert self._consumer is not None
            self._consumer.pause(tp)
            self._throttled.add(tp)
        task = self._tasks.get(tp)
        if task is None or task.done():
            self._tasks[tp] = asyncio.create_task(
                self._lane(tp, buffer), name=f"adapter-{self.connector_id}-p{tp.partition}"
            )

    def _reap(self) -> None:
        """Surface the errors of finished lanes and of the committer; forget finished lanes."""
        for tp, task in list(self._tasks.items()):
            if not task.done():
                continue
            del self._tasks[tp]
            if not task.cancelled() and (exc := task.exception()) is not None:
                self.stats.last_error = repr(exc)
                raise AdapterCrashed(
                    f"connector {self.connector_id}, partition {tp.partition}: {exc!r}"
                ) from exc
        committer = self._committer
        if committer is not None and committer.done():
            self._committer = None
            exc = None if committer.cancelled() else committer.exception()
            self.stats.last_error = repr(exc)
            raise AdapterCrashed(
                f"connector {self.connector_id}: the committer stopped: {exc!r}"
            ) from exc

    async def _cancel(self, partitions: Iterable[TopicPartition]) -> None:
        """Stop the partitions' lanes; a record they were on was interrupted, not crashed on,
        so its crash count goes back to what it was."""
        partitions = list(partitions)
        tasks = [self._tasks.pop(tp) for tp in partitions if tp in self._tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for tp in partitions:
            armed = self._armed.pop(tp, None)
            if armed is not None:
                await self._write_mark(tp, armed[0], armed[1], wait=True)

    async def _release(self, revoked: list[TopicPartition]) -> None:
        """Before the group moves partitions: stop their lanes, commit what they finished.

        A delivery interrupted here, and the records still buffered, are simply
        redelivered by the next owner (this one included: a newly assigned partition
        starts again from its committed offset).
        """
        await self._cancel(revoked)
        for tp in revoked:
            self._buffers.pop(tp, None)
            self._throttled.discard(tp)
        with contextlib.suppress(KafkaError, BrokerError, TimeoutError):
            async with asyncio.timeout(_SHUTDOWN_FLUSH_TIMEOUT):
                await self._commit(revoked)
        for tp in revoked:
            self._checkpoints.pop(tp, None)

    def _assigned(self, assigned: list[TopicPartition]) -> None:
        self.stats.assigned_partitions = sorted(tp.partition for tp in assigned)
        self._fresh.update(assigned)
        if self._disabled and assigned and self._consumer is not None:
            self._consumer.pause(*assigned)
        self._log.info("partitions_assigned", partitions=self.stats.assigned_partitions)

    async def _shutdown(self, *, flush: bool) -> None:
        consumer = self._consumer
        await self._cancel(list(self._tasks))
        committer, self._committer = self._committer, None
        if committer is not None:
            committer.cancel()
            await asyncio.gather(committer, return_exceptions=True)
        if flush:
            try:
                async with asyncio.timeout(_SHUTDOWN_FLUSH_TIMEOUT):
                    await self._commit(list(self._checkpoints))
            except (KafkaError, BrokerError, TimeoutError, AdapterCrashed) as exc:
                # A failed produce: nothing is committed, the records are redelivered.
                self._log.warning("final_commit_failed", error=repr(exc))
        self._checkpoints.clear()
        self._buffers.clear()
        self._throttled.clear()
        if consumer is not None:
            await consumer.stop()

    # ------------------------------------------------------------ one partition's lane

    async def _lane(self, tp: TopicPartition, buffer: deque[ConsumerRecord]) -> None:
        """Deliver the partition's buffered records, in order per IBAN, until it is empty.

        One record at a time while the partition is *careful* (its first record since it
        was assigned, or a crash count recorded for one of its records: the count must
        name the record in flight), several IBANs at once otherwise (:meth:`_window`).
        """
        checkpoint = self._checkpoints.setdefault(tp, _Checkpoint())
        while buffer:
            if self._disabled:
                return
            if self._in_flight > 1 and not self._careful(tp, buffer[0]):
                if not await self._window(tp, buffer, checkpoint):
                    return  # disabled: the rest stays uncommitted
                continue
            record = buffer[0]
            try:
                crashes = await self._arm(tp, record)
                if crashes >= self._max_crashes:
                    await self._park_crashed(record, checkpoint, crashes)
                elif not await self._handle(tp, record, checkpoint):
                    return  # disabled: this record and the rest stay uncommitted
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                await self._count_crash(tp, record, exc)
                raise
            self._disarm(tp, record, checkpoint)
            self._finished(tp, buffer, checkpoint)
        # The lane's last statement is done: later lines of this task are not about it.
        structlog.contextvars.unbind_contextvars(*_STATEMENT_FIELDS)

    def _careful(self, tp: TopicPartition, head: ConsumerRecord) -> bool:
        """Whether the partition must deliver one record at a time, so that a crash count
        names the record in flight: its first record since it was assigned (a crash may
        follow it, ``_arm``), or a crash count kept for the head record or a later one."""
        return tp in self._fresh or self._mark_from(tp, head) is not None

    def _mark_from(self, tp: TopicPartition, record: ConsumerRecord) -> CrashMark | None:
        """The partition's crash mark if it names ``record`` or a later one; a mark of an
        earlier record (finished, since the partition got past it) is dropped."""
        mark = self._marks.get(tp.partition)
        if mark is not None and mark[0] < record.offset:
            del self._marks[tp.partition]
            return None
        return mark

    def _finished(
        self, tp: TopicPartition, buffer: deque[ConsumerRecord], checkpoint: _Checkpoint
    ) -> None:
        """The buffer's first record is done: drop it, let the commit pass it."""
        record = buffer.popleft()
        checkpoint.next_offset = record.offset + 1
        checkpoint.since_commit += 1
        if checkpoint.since_commit >= _COMMIT_EVERY:
            self._commit_soon.set()
        if tp in self._throttled and len(buffer) <= self._max_buffered // 2:
            self._throttled.discard(tp)
            consumer = self._consumer
            if consumer is not None and not self._disabled and tp in consumer.assignment():
                consumer.resume(tp)

    async def _window(
        self, tp: TopicPartition, buffer: deque[ConsumerRecord], checkpoint: _Checkpoint
    ) -> bool:
        """Deliver up to ``in_flight`` records of the partition at once, one per IBAN.

        Why: one partition holds many IBANs, and the order owed is per IBAN (the topic is
        keyed by IBAN). Delivering the partition strictly one record after another made
        a partner's answer time the connector's pace (six partitions, six requests in
        flight: about 1,000 webhooks/s on the benchmark machine, docs/performance.md).

        A record starts once every earlier record of its key (its IBAN) is done, so each
        IBAN is still delivered in order, and a retrying statement holds back its own IBAN
        only. The commit never passes a record that is not done: a record leaves the buffer,
        and the commit passes it, only when it and every record before it are done
        (``_finished``), so a crash redelivers everything from the first unfinished one.
        A record without a key waits for all before it and holds back all after it.

        Returns True when the buffer is empty, False when the connector got disabled (the
        other deliveries in flight are interrupted; their records stay uncommitted). An
        error escaping a record is counted against that record (``_count_crash``) and
        raised, as in the one-at-a-time lane, once the other deliveries are interrupted.
        """
        running: dict[int, tuple[ConsumerRecord, asyncio.Task[bool]]] = {}
        done: set[int] = set()
        try:
            while buffer:
                if self._disabled:
                    return False
                held: set[bytes | None] = set()
                # Only the buffer's head is looked at: behind a long run of one IBAN (a
                # backlog), scanning a thousand records per delivery would cost more than
                # the concurrency it finds.
                for record in itertools.islice(buffer, self._in_flight * _SCAN_PER_SLOT):
                    if record.offset in done:
                        continue
                    key = record.key
                    if record.offset not in running and len(running) < self._in_flight and (
                        key not in held and (key is not None or not held)
                    ):
                        running[record.offset] = record, asyncio.create_task(
                            self._handle(tp, record, checkpoint),
                            name=f"adapter-{self.connector_id}-p{tp.partition}-{record.offset}",
                        )
                    if key is None or len(running) >= self._in_flight:
                        break  # nothing after a keyless record starts before it is done
                    held.add(key)
                await asyncio.wait(
                    [task for _, task in running.values()], return_when=asyncio.FIRST_COMPLETED
                )
                for offset, (record, task) in list(running.items()):
                    if not task.done():
                        continue
                    del running[offset]
                    exc = task.exception()
                    if exc is not None:
                        await self._interrupt(running)
                        await self._count_crash(tp, record, exc)
                        raise exc
                    if not task.result():
                        await self._interrupt(running)
                        return False
                    done.add(offset)
                while buffer and buffer[0].offset in done:
                    done.discard(buffer[0].offset)
                    self._finished(tp, buffer, checkpoint)
            return True
        finally:
            await self._interrupt(running)

    @staticmethod
    async def _interrupt(running: dict[int, tuple[ConsumerRecord, asyncio.Task[bool]]]) -> None:
        """Cancel the deliveries still in flight and wait for them (their records are
        redelivered: interrupted, not crashed on)."""
        if not running:
            return  # without an await: a lane that found its buffer empty ends at once
        tasks = [task for _, task in running.values()]
        running.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _commit_loop(self) -> None:
        """Commit what the lanes finished, every ``_COMMIT_INTERVAL`` or when asked sooner.

        A failed produce ends it with the error (nothing more is committed; ``_reap``
        stops the worker); a failed commit is only logged by ``_commit``.
        """
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_COMMIT_INTERVAL):
                    await self._commit_soon.wait()
            self._commit_soon.clear()
            await self._commit(list(self._checkpoints))

    async def _checkpoint(self, tp: TopicPartition) -> None:
        """Commit what the partition finished so far (before a retry's possibly long wait)."""
        await self._commit([tp])

    async def _commit(self, partitions: Sequence[TopicPartition]) -> None:
        """Await every produce the finished records depend on, then commit their offsets.

        One commit request for all the partitions. Serialised by a lock, so the committer,
        a lane about to wait for a retry, a rebalance and the shutdown never interleave.
        A failed produce raises (nothing is committed, the worker stops); a failed commit
        only logs, because the records are then redelivered, which is allowed.
        """
        async with self._commit_lock:
            # The snapshot: no await until every (offset, ack count) pair is taken.
            snapshot = [
                (tp, checkpoint, checkpoint.next_offset, len(checkpoint.pending))
                for tp in partitions
                if (checkpoint := self._checkpoints.get(tp)) is not None
            ]
            acks = [f for _, cp, _, count in snapshot for f in cp.pending[:count]]
            if acks:
                # Shielded: a cancelled caller (rebalance, shutdown) must not cancel the
                # acks, which the final commit then awaits before committing.
                await asyncio.gather(*(asyncio.shield(f) for f in acks))
            for _, checkpoint, _, count in snapshot:
                del checkpoint.pending[:count]
            offsets = {tp: offset for tp, cp, offset, _ in snapshot if offset > cp.committed}
            if not offsets or self._consumer is None:
                return
            try:
                await self._consumer.commit(offsets)
            except KafkaError as exc:
                self._log.warning(
                    "commit_failed", error=repr(exc),
                    offsets={tp.partition: offset for tp, offset in offsets.items()})
                return
            for tp, checkpoint, offset, _ in snapshot:
                if tp in offsets:
                    checkpoint.committed = offset
                    checkpoint.since_commit = 0

    async def _send(
        self, checkpoint: _Checkpoint, topic: str, value: bytes, key: str
    ) -> None:
        try:
            future = await self._producer.send(topic, value, key=key.encode())
        except KafkaError as exc:
            raise AdapterCrashed(f"producing to {topic} failed: {exc!r}") from exc
        checkpoint.pending.append(future)

    def _outcome(
        self,
        delivery: StatementPartnerDelivery,
        outcome: OutcomeKind,
        *,
        attempt: int | None = None,
        detail: str | None = None,
    ) -> DeliveryOutcome:
        return DeliveryOutcome(
            statement_id=delivery.statement_id,
            outcome=outcome,
            at=_now(),
            iban=delivery.iban,
            cabinet_id=delivery.cabinet_id,
            connector_id=self.connector_id,
            attempt=attempt,
            detail=detail,
            content_sha256=delivery.content_sha256,
        )

    async def _emit(self, checkpoint: _Checkpoint, outcome: DeliveryOutcome) -> None:
        await self._send(checkpoint, self._topics.outcomes, outcome.to_json(),
                         outcome.statement_id)

    async def _attempt(self, delivery: StatementPartnerDelivery) -> DeliveryResult:
        """One delivery attempt, counted and timed for the metrics
        (``routing.observability.metrics``)."""
        started = time.perf_counter()
        result = await self._call_partner(delivery)
        metrics.record_attempt(self.connector_id, result.kind, time.perf_counter() - started,
                               delivery.received_at)
        return result

    async def _call_partner(self, delivery: StatementPartnerDelivery) -> DeliveryResult:
        """Call the deliverer; a deliverer that raises (a bug) counts as a transient error."""
        try:
            return await self._deliverer.deliver(delivery)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._log.exception("deliverer_raised", statement_id=delivery.statement_id,
                                cabinet_id=delivery.cabinet_id)
            return DeliveryResult.retry(f"internal error in the deliverer: {exc!r}")

    async def _handle(
        self, tp: TopicPartition, record: ConsumerRecord, checkpoint: _Checkpoint
    ) -> bool:
        """Deliver one record until it is done; False when the connector got disabled."""
        structlog.contextvars.unbind_contextvars(*_STATEMENT_FIELDS)
        try:
            delivery = decode(record.value, StatementPartnerDelivery, where=record.topic)
        except InvalidEvent as exc:
            await self._invalid(record, checkpoint, exc)
            return True
        # Every line logged while this statement is handled, the deliverers' included,
        # carries its fields: the partition task's context is its own (asyncio copies it).
        structlog.contextvars.bind_contextvars(
            statement_id=delivery.statement_id,
            cabinet_id=delivery.cabinet_id,
            connector_id=self.connector_id,
        )
        slog = self._log.bind(
            statement_id=delivery.statement_id,
            cabinet_id=delivery.cabinet_id,
            iban=mask_iban(delivery.iban),
        )
        attempts: list[DeliveryAttempt] = []
        attempt = 0
        while True:
            if self._disabled:
                return False
            attempt += 1
            result = await self._attempt(delivery)
            if result.kind == "delivered":
                self.stats.delivered += 1
                await self._emit(checkpoint, self._outcome(
                    delivery, "delivered", attempt=attempt, detail=result.detail))
                slog.info("statement_delivered", attempt=attempt, status_code=result.status_code)
                return True
            attempts.append(DeliveryAttempt(
                attempt=attempt, at=_now(), error=result.detail, status_code=result.status_code))
            self.stats.last_error = result.detail
            if result.kind == "disabled":
                await self._disable(delivery, result, attempt, checkpoint)
                return False
            if result.kind == "permanent" or self._schedule.exhausted(attempt):
                reason = (
                    f"permanent failure: {result.detail}" if result.kind == "permanent"
                    else f"gave up after {attempt} attempts; last: {result.detail}"
                )
                await self._dead_letter(delivery, reason, attempts, checkpoint, record=record)
                slog.warning("statement_dead_lettered", attempts=attempt, reason=reason,
                             status_code=result.status_code)
                return True
            delay = self._schedule.delay(attempt, result.retry_after, self._rng)
            self.stats.retries += 1
            await self._emit(checkpoint, self._outcome(
                delivery, "retrying", attempt=attempt,
                detail=f"{result.detail}; next attempt in {delay:.1f} s"))
            slog.info("delivery_retrying", attempt=attempt, status_code=result.status_code,
                      retry_after=result.retry_after, delay=round(delay, 3), error=result.detail)
            # Commit what this partition finished before a possibly long wait.
            await self._checkpoint(tp)
            await asyncio.sleep(delay)

    # ------------------------------------------------------------------- crash counts

    async def _write_mark(self, tp: TopicPartition, offset: int, crashes: int, *,
                          wait: bool, reason: str | None = None) -> None:
        """Record the partition's crash count in the control topic.

        ``wait``: await the ack (before a record a crash may follow); otherwise best effort.
        A failure is logged, never raised: the count is a safety net, not the delivery.
        """
        self._marks[tp.partition] = (offset, crashes)
        record = crash_record(self.connector_id, tp.partition, offset, crashes, reason)
        try:
            if wait:
                async with asyncio.timeout(_MARK_TIMEOUT):
                    await send_control(self._producer, self._topics, record)
            else:
                await self._producer.send(self._topics.adapters_control, record.to_json(),
                                          key=f"crash/{self.connector_id}/{tp.partition}".encode())
        except (KafkaError, TimeoutError) as exc:
            self._log.warning("crash_count_not_written", partition=tp.partition, offset=offset,
                              crashes=crashes, error=repr(exc))

    async def _arm(self, tp: TopicPartition, record: ConsumerRecord) -> int:
        """The record's crash count so far; counts this start when a crash may follow it."""
        mark = self._mark_from(tp, record)
        if mark is not None and mark[0] > record.offset:
            # A redelivery of a record finished before a later one crashed: the count that
            # matters is the later one's, which counting this start would overwrite.
            self._fresh.discard(tp)
            return 0
        crashes = mark[1] if mark is not None and mark[0] == record.offset else 0
        if crashes >= self._max_crashes:
            return crashes
        if tp in self._fresh or crashes:
            self._fresh.discard(tp)
            await self._write_mark(tp, record.offset, crashes + 1, wait=True)
            self._armed[tp] = (record.offset, crashes)
        return crashes

    def _disarm(self, tp: TopicPartition, record: ConsumerRecord, checkpoint: _Checkpoint) -> None:
        """The record is done: a counted start of it was no crash."""
        self._fresh.discard(tp)
        if self._armed.pop(tp, None) is not None:
            mark = crash_record(self.connector_id, tp.partition, record.offset, 0)
            self._marks[tp.partition] = (record.offset, 0)
            checkpoint.pending.append(asyncio.ensure_future(
                send_control(self._producer, self._topics, mark)))

    async def _count_crash(self, tp: TopicPartition, record: ConsumerRecord,
                           exc: BaseException) -> None:
        """An error escaped the record: count it (unless its start was counted already)."""
        self.stats.last_error = repr(exc)
        if self._armed.pop(tp, None) is not None:
            return
        mark = self._marks.get(tp.partition)
        crashes = mark[1] if mark is not None and mark[0] == record.offset else 0
        await self._write_mark(tp, record.offset, crashes + 1, wait=True,
                               reason=repr(exc)[:500])

    async def _park_crashed(
        self, record: ConsumerRecord, checkpoint: _Checkpoint, crashes: int
    ) -> None:
        """The worker crashed ``crashes`` times on this record: park it and move on."""
        try:
            delivery = decode(record.value, StatementPartnerDelivery, where=record.topic)
        except InvalidEvent as exc:
            await self._invalid(record, checkpoint, exc)
            return
        reason = (f"parked: the worker crashed {crashes} times on this record "
                  f"(ADAPTER_MAX_CRASHES={self._max_crashes})")
        await self._dead_letter(delivery, reason, [], checkpoint, record=record, park=True)

    # ------------------------------------------------------------------- dead letters

    async def _send_now(self, topic: str, value: bytes, key: str) -> None:
        await (await self._producer.send(topic, value, key=key.encode()))

    async def _dead_letter(
        self,
        delivery: StatementPartnerDelivery,
        reason: str,
        attempts: list[DeliveryAttempt],
        checkpoint: _Checkpoint,
        *,
        record: ConsumerRecord,
        park: bool = False,
    ) -> None:
        """Dead-letter a copy of the delivery, or a parked reference to its record.

        Awaited (not left to the commit), so that a copy the broker refuses for its size
        is known here and written again as a reference.
        """
        dlq = self._topics.partner_dlq(self.connector_id)
        letter = StatementDeadLetter(
            connector_id=self.connector_id,
            statement_id=delivery.statement_id,
            reason=reason,
            attempts=tuple(attempts),
            dead_lettered_at=_now(),
            delivery=delivery,
        )
        value = letter.to_json()
        why: str | None = "the worker crashed on it" if park else None
        if why is None and len(value) > MAX_RECORD_BYTES:
            why = (f"its dead letter would be {len(value)} bytes, over the "
                   f"{MAX_RECORD_BYTES}-byte record limit")
        if why is None:
            try:
                await self._send_now(dlq, value, delivery.iban)
            except SIZE_ERRORS as exc:
                why = f"the broker refused its {len(value)}-byte dead letter ({type(exc).__name__})"
            except KafkaError as exc:
                raise AdapterCrashed(f"producing to {dlq} failed: {exc!r}") from exc
        if why is not None:
            await self._park(delivery, reason, attempts, record, dlq, why, crashed=park)
        self.stats.dead_lettered += 1
        metrics.DEAD_LETTERS.labels(self.connector_id).inc()
        await self._emit(checkpoint, self._outcome(
            delivery, "dead_lettered", attempt=len(attempts) or None,
            detail=reason if why is None else f"{reason}; {why}"))

    async def _park(
        self,
        delivery: StatementPartnerDelivery,
        reason: str,
        attempts: list[DeliveryAttempt],
        record: ConsumerRecord,
        dlq: str,
        why: str,
        *,
        crashed: bool,
    ) -> None:
        """Write a parked dead letter; if it cannot be, stop (or, after crashes, log it)."""
        payload = len(record.value or b"")
        letter = StatementDeadLetter(
            connector_id=self.connector_id,
            statement_id=delivery.statement_id,
            reason=f"{reason}; not copied: {why}" if not crashed else reason,
            attempts=tuple(attempts),
            dead_lettered_at=_now(),
            parked=ParkedRecord(
                topic=record.topic, partition=record.partition, offset=record.offset,
                payload_bytes=payload, iban=mask_iban(delivery.iban),
                cabinet_id=delivery.cabinet_id,
                key=statement_key(delivery.iban, delivery.statement_id,
                                  delivery.content_sha256)),
        )
        how = "referred"
        try:
            await self._send_now(dlq, letter.to_json(), delivery.iban)
        except KafkaError as exc:
            if not crashed:
                raise AdapterCrashed(
                    f"producing a parked dead letter to {dlq} failed: {exc!r}") from exc
            how = "unwritable"
            why = f"{why}; its parked dead letter could not be written either: {exc!r}"
        self.stats.parked += 1
        metrics.PARKED.labels(PARK_COMPONENT, how).inc()
        self._log.error(
            "statement_parked",
            how=how,
            statement_id=delivery.statement_id,
            cabinet_id=delivery.cabinet_id,
            iban=mask_iban(delivery.iban),
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            payload_bytes=payload,
            reason=reason,
            why=why,
            action=f"the record stays at {record.topic} partition {record.partition} offset "
                   f"{record.offset}; dlq replay re-reads it from there while it is retained",
        )

    async def _disable(
        self,
        delivery: StatementPartnerDelivery,
        result: DeliveryResult,
        attempt: int,
        checkpoint: _Checkpoint,
    ) -> None:
        self._disabled = True
        self.stats.disabled = True
        metrics.CONNECTOR_DISABLED.labels(self.connector_id).set(1)
        self.stats.disabled_reason = result.detail
        if self._consumer is not None and self._consumer.assignment():
            self._consumer.pause(*self._consumer.assignment())
        if self._on_disabled is not None:
            self._on_disabled(result.detail)
        # The ledger learns why the statement waits; it is retried once the worker restarts.
        await self._emit(checkpoint, self._outcome(
            delivery, "retrying", attempt=attempt,
            detail=f"connector disabled, deliveries paused until its endpoint is fixed and "
                   f"the connector enabled (statement-router adapters enable) or the adapters "
                   f"restarted: {result.detail}"))
        self._log.error(
            "connector_disabled",
            statement_id=delivery.statement_id,
            cabinet_id=delivery.cabinet_id,
            iban=mask_iban(delivery.iban),
            status_code=result.status_code,
            detail=result.detail,
        )

    async def _invalid(
        self, record: ConsumerRecord, checkpoint: _Checkpoint, exc: InvalidEvent
    ) -> None:
        """Write its ``statement.invalid`` (referring to a large record, never raising for
        its size: ``routing.services.parking``), awaited, then move on."""
        reason = f"not a valid statement.partner-delivery/v1: {exc.reason}"
        await write_invalid(
            self._producer, self._topics.invalid,
            [Refused(record, reason, exc.statement_id)],
            component=PARK_COMPONENT, detected_by=f"adapter:{self.connector_id}",
        )
        self.stats.invalid += 1
        metrics.INVALID.labels("adapter").inc()
        self._log.error("invalid_delivery_record", partition=record.partition,
                        offset=record.offset, statement_id=exc.statement_id, reason=reason)


# --------------------------------------------------------------------------- the pool


async def run_adapters(
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
) -> dict[str, ConnectorStats]:
    """Run one isolated worker per connector until ``stop_event`` is set.

    ``producer`` is the process's started producer, shared by the workers; the caller
    owns it (``routing.entrypoints.bootstrap.run_adapters_role``). ``connector_ids`` picks
    connectors (default: every one in ``endpoints``); each must have an endpoint.
    ``schedule`` defaults to the settings' (production) schedule; tests and the embedded
    demo pass a short one. ``stats`` (optional) is filled with each
    connector's live ``ConnectorStats``; they are returned at the end too. ``started`` is
    set once every worker's consumer has started. ``session_timeout_ms`` is the consumer
    groups' session timeout; Tansu holds a first join for about half of it, so tests pass
    a short one (a real Kafka refuses less than its ``group.min.session.timeout.ms``, 6 s).

    A worker that fails (the broker, a bug; not a partner: partner failures are outcomes)
    stops that worker only (``adapters.supervisor``); ``AdapterCrashed`` is raised once
    every worker of the process has stopped, so that a supervisor restarts the process,
    which resumes from the committed offsets.
    """
    from adapters.supervisor import supervise  # the supervisor builds on this module

    return await supervise(
        settings, topics, endpoints, stop_event, producer=producer,
        bootstrap_servers=bootstrap_servers, connector_ids=connector_ids, schedule=schedule,
        deliverer_factory=deliverer_factory, stats=stats, started=started,
        session_timeout_ms=session_timeout_ms)
