"""The delivery ledger's consumer, and the committing consumer loop it shares with the
global-file builder.

The ledger reads ``deliveries.outcomes`` (every ``delivery.outcome/v1``: routed and held
from the router, delivered/retrying/dead_lettered/replayed from the adapters,
stored_global_file from the global-file builder) in consumer group ``<prefix>.ledger`` and
records each one in the state store (``DeliveryLedger``), from which ``GET
/statements/{id}``, ``statement-router trace`` and the diagnosis answer.

At least once, duplicates absorbed (DESIGN §5): offsets are committed only after the batch
is in the database, and the ledger ignores a record it already holds, so a crash between
the two re-reads the batch and adds nothing. A record that is not a valid
``delivery.outcome/v1`` never stops the consumer and is never skipped silently: it goes to
``statements.invalid`` with the reason, like any other invalid input, referred to rather
than copied when it is large, and logged and counted if even that cannot be written
(``routing.parking``): the valid records of its batch are recorded all the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.structs import ConsumerRecord, TopicPartition
from sqlalchemy.ext.asyncio import AsyncEngine

from config.settings import Settings
from events.limits import BROKER_MESSAGE_BYTES
from events.schemas import DeliveryOutcome
from events.topics import Topics
from events.wire import InvalidEvent, SourceRef, cut_reason, decode, encode_invalid, key_text
from routing import metrics
from routing.broker.admin import require_topics
from routing.broker.errors import BrokerError
from routing.broker.producer import make_producer
from routing.parking import Refused, write_invalid
from routing.ports import OutcomeRecord
from routing.store.engine import create_store_engine
from routing.store.ledger import SqlDeliveryLedger

log = structlog.get_logger(__name__)

_MAX_BACKOFF = 10.0

_SQLITE_WRITERS: weakref.WeakKeyDictionary[AsyncEngine, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def sqlite_writer_lock(
    engine: AsyncEngine | None,
) -> contextlib.AbstractAsyncContextManager[Any]:
    """Serialises this process's batch writers (ledger, global-file builder) on SQLite.

    SQLite has one writer at a time, and a writer that finds the database locked sleeps in
    SQLite's busy handler, in growing steps of up to 100 ms, instead of being woken when
    the lock is free. With the ledger and the global-file builder sharing one SQLite file
    (the embedded mode) that sleeping made a five-row insert take 44 ms at the median and
    up to 660 ms (docs/performance.md). Queuing them on one asyncio lock per engine hands
    the database over without sleeping. PostgreSQL has row locks: no lock there.
    """
    if engine is None or engine.dialect.name != "sqlite":
        return contextlib.nullcontext()
    lock = _SQLITE_WRITERS.get(engine)
    if lock is None:
        lock = _SQLITE_WRITERS[engine] = asyncio.Lock()
    return lock


InvalidRecord = InvalidEvent
"""A record that is not the event its topic carries (the wire decoder's refusal)."""


def outcome_record(value: bytes | None) -> OutcomeRecord:
    """One ``deliveries.outcomes`` value as an ``OutcomeRecord``; ``InvalidRecord`` if bad.

    Decoded by the pipeline's one strict decoder (``events.wire``), with the router's
    ``routing`` trace when the producer added it.
    """
    event = decode(value, DeliveryOutcome, where="deliveries.outcomes")
    routing = event.routing.model_dump(mode="json") if event.routing is not None else None
    return OutcomeRecord(
        statement_id=event.statement_id,
        outcome=event.outcome,
        at=event.at,
        iban=event.iban,
        cabinet_id=event.cabinet_id,
        connector_id=event.connector_id,
        attempt=event.attempt,
        detail=event.detail,
        routing=routing,
        content_sha256=event.content_sha256,
    )


def invalid_value(record: ConsumerRecord, exc: InvalidEvent, detected_by: str) -> bytes:
    """The ``statement.invalid/v1`` for a record this consumer could not read (its
    consumers write it with ``routing.parking.write_invalid``, which refers to a value too
    large to copy and never lets a refusal of the broker stall the batch)."""
    return encode_invalid(
        value=record.value,
        key=record.key,
        reason=exc.reason,
        source=SourceRef(record.topic, record.partition, record.offset),
        detected_at=datetime.now(UTC).isoformat(),
        statement_id=exc.statement_id,
        detected_by=detected_by,
    )


async def send_all(
    producer: AIOKafkaProducer, messages: Sequence[tuple[str, bytes | None, bytes | None]]
) -> None:
    """Send (topic, key, value) messages and wait until the broker acknowledged them all."""
    futures = [await producer.send(topic, value=value, key=key) for topic, key, value in messages]
    if futures:
        await asyncio.gather(*futures)


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


async def consume_committing(
    consumer: AIOKafkaConsumer,
    handle: Callable[[list[ConsumerRecord]], Awaitable[None]],
    stop: asyncio.Event,
    *,
    name: str,
    max_records: int = 500,
    poll_ms: int = 200,
) -> None:
    """Poll batches, ``handle`` each, and commit its offsets only once it returned.

    If ``handle`` fails (database or broker outage), the same batch is retried with
    exponential backoff and jitter until it succeeds or ``stop`` is set; nothing is
    committed past it, so a stop or a crash re-reads it later (``handle`` must be
    idempotent). A commit refused because of a rebalance is only logged: the partition's
    new owner re-reads the batch, which idempotency absorbs.
    """
    while not stop.is_set():
        batches = await consumer.getmany(timeout_ms=poll_ms, max_records=max_records)
        records = [r for part in batches.values() for r in part]
        if not records:
            continue
        backoff = 0.2
        while True:
            try:
                await handle(records)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if stop.is_set():
                    log.warning(f"{name}_stopped_mid_batch", error=str(exc))
                    return
                log.warning(f"{name}_retrying", error=str(exc), retry_in=round(backoff, 2))
                await _wait(stop, backoff * (1 + random.random() / 2))  # noqa: S311
                if stop.is_set():
                    return
                backoff = min(backoff * 2, _MAX_BACKOFF)
        offsets = {
            TopicPartition(tp.topic, tp.partition): part[-1].offset + 1
            for tp, part in batches.items()
            if part
        }
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            log.warning(f"{name}_commit_refused", error=str(exc))


@asynccontextmanager
async def engine_for(store_url_or_engine: str | AsyncEngine) -> AsyncIterator[AsyncEngine]:
    """The given engine, or one built from the URL and disposed of on exit."""
    if isinstance(store_url_or_engine, AsyncEngine):
        yield store_url_or_engine
        return
    engine = create_store_engine(store_url_or_engine)
    try:
        yield engine
    finally:
        await engine.dispose()


@asynccontextmanager
async def committing_consumer(
    bootstrap_servers: str,
    topic: str,
    group_id: str,
    client_id: str,
    *,
    fetch_max_wait_ms: int = 500,
) -> AsyncIterator[AIOKafkaConsumer]:
    """A started group consumer of ``topic`` with manual commits; stopped on exit.

    The topic must exist: subscribing to a missing one would make the broker auto-create
    it with its default partition count. ``fetch_max_wait_ms``: pass the settings'
    ``kafka_fetch_max_wait_ms``; on Tansu an idle fetch is answered only when it runs out,
    so it bounds the latency this consumer adds (aiokafka's default, 500, is the default
    here only for callers without settings).
    """
    await require_topics(bootstrap_servers, [topic])
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap_servers,
        group_id=group_id,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=fetch_max_wait_ms,
        # The largest record the size rule allows, whatever the broker's fetch behaviour.
        max_partition_fetch_bytes=BROKER_MESSAGE_BYTES,
        # The routed topics are written in transactions with KAFKA_EXACTLY_ONCE: an
        # aborted record is never read (on a broker without transactions, a no-op).
        isolation_level="read_committed",
    )
    try:
        await consumer.start()
        yield consumer
    finally:
        await consumer.stop()


def resolve_bootstrap(settings: Settings, bootstrap_servers: str | None) -> str:
    servers = bootstrap_servers or settings.kafka_bootstrap_servers
    if not servers:
        raise BrokerError(
            "no Kafka bootstrap servers: set KAFKA_BOOTSTRAP_SERVERS or pass bootstrap_servers"
        )
    return servers


class LedgerConsumer:
    """Records each batch of outcome records in the ledger, invalid ones on the side."""

    def __init__(
        self,
        ledger: SqlDeliveryLedger,
        producer: AIOKafkaProducer,
        topics: Topics,
        engine: AsyncEngine | None = None,
    ) -> None:
        self._ledger = ledger
        self._engine = engine
        self._producer = producer
        self._topics = topics
        self.stats = {"records": 0, "recorded": 0, "duplicates": 0, "invalid": 0}

    async def handle(self, records: list[ConsumerRecord]) -> None:
        outcomes: list[OutcomeRecord] = []
        invalid: list[Refused] = []
        for record in records:
            try:
                outcomes.append(outcome_record(record.value))
            except InvalidRecord as exc:
                log.warning(
                    "invalid_outcome",
                    statement_id=exc.statement_id,
                    reason=cut_reason(exc.reason),
                    key=key_text(record.key) if record.key and len(record.key) <= 200 else None,
                    partition=record.partition,
                    offset=record.offset,
                    payload_bytes=len(record.value) if record.value is not None else None,
                )
                invalid.append(Refused(record, exc.reason, exc.statement_id))
        async with sqlite_writer_lock(self._engine):
            created = await self._ledger.record(outcomes)
        # Never fails the batch (park and refer): the valid outcomes above are recorded.
        await write_invalid(
            self._producer, self._topics.invalid, invalid, component="ledger", detected_by="ledger"
        )
        self.stats["records"] += len(records)
        self.stats["recorded"] += created
        self.stats["duplicates"] += len(outcomes) - created
        self.stats["invalid"] += len(invalid)
        metrics.LEDGER_OUTCOMES.labels("recorded").inc(created)
        metrics.LEDGER_OUTCOMES.labels("duplicate").inc(len(outcomes) - created)
        metrics.INVALID.labels("ledger").inc(len(invalid))


async def run_ledger(
    settings: Settings,
    topics: Topics,
    store_url_or_engine: str | AsyncEngine,
    stop_event: asyncio.Event,
    *,
    bootstrap_servers: str | None = None,
    started: asyncio.Event | None = None,
) -> dict[str, int]:
    """Run the ledger consumer (group ``<prefix>.ledger``) until ``stop_event`` is set.

    ``store_url_or_engine``: an engine to share (left open), or a URL (an engine is made
    and disposed of). The schema must exist. ``started`` is set once the consumer runs.
    Returns the counters: records read, recorded, duplicates ignored, invalid.
    """
    servers = resolve_bootstrap(settings, bootstrap_servers)
    async with engine_for(store_url_or_engine) as engine:
        ledger = SqlDeliveryLedger(engine)
        producer = make_producer(settings, bootstrap_servers=servers, client_id="ledger")
        await producer.start()
        try:
            worker = LedgerConsumer(ledger, producer, topics, engine)
            group = f"{topics.prefix}.ledger"
            async with committing_consumer(
                servers, topics.outcomes, group, "ledger",
                fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
            ) as consumer:
                if started is not None:
                    started.set()
                log.info("ledger_started", topic=topics.outcomes, group=group)
                await consume_committing(consumer, worker.handle, stop_event, name="ledger")
        finally:
            await producer.stop()
    log.info("ledger_stopped", **worker.stats)
    return worker.stats
