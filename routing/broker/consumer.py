"""The committing group consumer, and the one loop every batch-writing role runs on it.

The ledger and the global-file builder are the same shape: read a topic in a consumer
group, write each batch to the SQL store (and report on ``deliveries.outcomes``), commit
the batch's offsets only once that returned. :func:`run_committing` is that shape; a role
brings only its ``BatchHandler`` (``routing.services.ledger.LedgerConsumer``,
``adapters.global_file.GlobalFileBuilder``), and the composition root
(``routing.entrypoints.bootstrap``) builds the consumer, the producer and the store it runs on.

At least once, duplicates absorbed (DESIGN §5): nothing is committed past a batch the
handler has not finished, so a stop or a crash re-reads it and the idempotent handler
adds nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

import structlog
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.structs import ConsumerRecord, TopicPartition

from events.limits import BROKER_MESSAGE_BYTES
from routing.broker.admin import require_topics

log = structlog.get_logger(__name__)


class BatchHandler(Protocol):
    """A role's work on one batch; idempotent, since a batch may be handled again."""

    stats: dict[str, int]

    async def handle(self, records: list[ConsumerRecord]) -> None: ...


@dataclass(frozen=True, slots=True)
class ConsumerRole:
    """Which topic a committing role reads, in which group, under which names.

    ``name`` prefixes its log events (``<name>_started``, ``<name>_retrying``,
    ``<name>_stopped``…); ``client_id`` names its Kafka clients. ``pattern``, when set, is
    a regular expression matching every topic the role reads (``topic`` among them), for a
    role whose topics are not all known in advance: the ledger reads the partner topic of
    every connector, including one added to the catalogue while it runs.
    """

    name: str
    topic: str
    group: str
    client_id: str
    pattern: str | None = None


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


async def consume_committing(
    consumer: AIOKafkaConsumer,
    handle: Callable[[list[ConsumerRecord]], Awaitable[None]],
    stop: asyncio.Event,
    *,
    name: str,
    retry_delay: Callable[[int], float],
    max_records: int = 500,
    poll_ms: int = 200,
) -> None:
    """Poll batches, ``handle`` each, and commit its offsets only once it returned.

    If ``handle`` fails (database or broker outage), the same batch is retried after
    ``retry_delay(failures)`` seconds (the composition root passes the services' one retry
    schedule) until it succeeds or ``stop`` is set; nothing is
    committed past it, so a stop or a crash re-reads it later (``handle`` must be
    idempotent). A commit refused because of a rebalance is only logged: the partition's
    new owner re-reads the batch, which idempotency absorbs.
    """
    while not stop.is_set():
        batches = await consumer.getmany(timeout_ms=poll_ms, max_records=max_records)
        records = [r for part in batches.values() for r in part]
        if not records:
            continue
        failures = 0
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
                failures += 1
                wait = retry_delay(failures)
                log.warning(f"{name}_retrying", error=str(exc), retry_in=round(wait, 2))
                await _wait(stop, wait)
                if stop.is_set():
                    return
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
async def committing_consumer(
    bootstrap_servers: str,
    topic: str,
    group_id: str,
    client_id: str,
    *,
    fetch_max_wait_ms: int = 500,
    pattern: str | None = None,
) -> AsyncIterator[AIOKafkaConsumer]:
    """A started group consumer of ``topic`` with manual commits; stopped on exit.

    The topic must exist: subscribing to a missing one would make the broker auto-create
    it with its default partition count. ``fetch_max_wait_ms``: pass the settings'
    ``kafka_fetch_max_wait_ms``; on Tansu an idle fetch is answered only when it runs out,
    so it bounds the latency this consumer adds (aiokafka's default, 500, is the default
    here only for callers without settings). ``pattern``: subscribe to every existing
    topic whose whole name matches it instead (``ConsumerRole.pattern``); a topic created
    later is picked up at the next metadata refresh (every 30 s), read from its start.
    """
    await require_topics(bootstrap_servers, [topic])
    consumer = AIOKafkaConsumer(
        *(() if pattern is not None else (topic,)),
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
        metadata_max_age_ms=30_000 if pattern is not None else 300_000,
    )
    try:
        await consumer.start()
        if pattern is not None:
            consumer.subscribe(pattern=pattern)
        yield consumer
    finally:
        await consumer.stop()


async def run_committing(
    role: ConsumerRole,
    consumer: AIOKafkaConsumer,
    handler: BatchHandler,
    stop: asyncio.Event,
    *,
    retry_delay: Callable[[int], float],
    started: asyncio.Event | None = None,
) -> dict[str, int]:
    """Run ``handler`` on ``consumer``'s batches until ``stop`` is set; its counters.

    ``consumer`` is a started ``committing_consumer`` of ``role.topic``. ``started`` is
    set once the loop runs. ``retry_delay``: as ``consume_committing``.
    """
    if started is not None:
        started.set()
    log.info(f"{role.name}_started", topic=role.pattern or role.topic, group=role.group)
    await consume_committing(
        consumer, handler.handle, stop, name=role.name, retry_delay=retry_delay
    )
    log.info(f"{role.name}_stopped", **handler.stats)
    return handler.stats
