"""The committing group consumer, and the one loop every batch-writing role runs on it.

The ledger and the global-file builder are the same shape: read a topic in a consumer
group, write each batch to the SQL store (and report on ``deliveries.outcomes``), commit
the batch's offsets only once that is done, acks included (awaited beside the next
batch, see :func:`consume_committing`). :func:`run_committing` is that shape; a role
brings only its ``BatchHandler`` (``routing.services.ledger.LedgerConsumer``,
``adapters.global_file.GlobalFileBuilder``), and the composition root
(``routing.entrypoints.bootstrap``) builds the consumer, the producer and the store it runs on.

At least once, duplicates absorbed (DESIGN §5): nothing is committed past a batch the
handler has not finished (nor whose acks are not in), so a stop or a crash re-reads it
and the idempotent handler adds nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.structs import ConsumerRecord, TopicPartition

from events.limits import BROKER_MESSAGE_BYTES
from routing.broker.admin import require_topics

log = structlog.get_logger(__name__)


class BatchHandler(Protocol):
    """A role's work on one batch; idempotent, since a batch may be handled again.

    ``handle`` may return what is still in flight once its own work is done (typically
    the broker's acks for the records it sent, see :func:`consume_committing`): the loop
    awaits it before committing the batch, while the next batch is already handled.
    """

    stats: dict[str, int]

    async def handle(self, records: list[ConsumerRecord]) -> Awaitable[Any] | None: ...


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
    handle: Callable[[list[ConsumerRecord]], Awaitable[Awaitable[Any] | None]],
    stop: asyncio.Event,
    *,
    name: str,
    retry_delay: Callable[[int], float],
    max_records: int = 500,
    poll_ms: int = 200,
) -> None:
    """Poll batches, ``handle`` each, and commit its offsets only once it is settled.

    If ``handle`` fails (database or broker outage), the same batch is retried after
    ``retry_delay(failures)`` seconds (the composition root passes the services' one retry
    schedule) until it succeeds or ``stop`` is set; nothing is committed past it, so a
    stop or a crash re-reads it later (``handle`` must be idempotent). A commit refused
    because of a rebalance is only logged: the partition's new owner re-reads the batch,
    which idempotency absorbs.

    Why settling runs beside the next batch: ``handle`` may return what is still in flight
    (the acks of the records it sent). Waiting for those acks and then for the commit's
    round trip before fetching again added both to every statement's latency (on Kafka,
    about 40 ms at the median per global-file batch, and the whole tail of the broker's ack
    times; docs/performance.md). So batch N's acks and commit are awaited in a task while
    batch N+1 is handled. The guarantees stay: batch N is committed only once its acks are
    in (if they fail, batch N is handled again, then committed); commits stay in batch
    order, since batch N+1's settling starts only once batch N's is done; and at most one
    batch is in flight, so a broker outage holds the loop instead of piling batches up.
    """
    settling: asyncio.Task[bool] | None = None
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=poll_ms, max_records=max_records)
            records = [r for part in batches.values() for r in part]
            if not records:
                continue
            handled = await _handle_until_done(handle, records, stop, name, retry_delay, 0)
            if handled is None:
                return
            offsets = {
                TopicPartition(tp.topic, tp.partition): part[-1].offset + 1
                for tp, part in batches.items()
                if part
            }
            if settling is not None and not await settling:
                return  # stopped while the previous batch was settling: not committed
            settling = asyncio.ensure_future(
                _settle_and_commit(consumer, handle, records, handled[0], offsets, stop,
                                   name, retry_delay)
            )
    except asyncio.CancelledError:
        if settling is not None:
            settling.cancel()  # never committed: the batch is re-read
        raise
    finally:
        # On a stop (or an error) the last batch's acks and commit are still awaited, as
        # before a stop the loop used to commit each batch before fetching the next.
        if settling is not None and not settling.done():
            await asyncio.wait([settling])
        if settling is not None and not settling.cancelled():
            settling.result()


async def _back_off(
    exc: Exception,
    stop: asyncio.Event,
    name: str,
    retry_delay: Callable[[int], float],
    failures: int,
) -> bool:
    """Log a failed attempt and wait ``retry_delay(failures)`` before the next one; False
    (nothing more to try) once ``stop`` is set, before or during the wait."""
    if stop.is_set():
        log.warning(f"{name}_stopped_mid_batch", error=str(exc))
        return False
    wait = retry_delay(failures)
    log.warning(f"{name}_retrying", error=str(exc), retry_in=round(wait, 2))
    await _wait(stop, wait)
    return not stop.is_set()


async def _handle_until_done(
    handle: Callable[[list[ConsumerRecord]], Awaitable[Awaitable[Any] | None]],
    records: list[ConsumerRecord],
    stop: asyncio.Event,
    name: str,
    retry_delay: Callable[[int], float],
    failures: int,
) -> tuple[Awaitable[Any] | None] | None:
    """``handle(records)``, retried until it returns (its in-flight part, in a 1-tuple),
    or ``None`` once ``stop`` is set while it fails."""
    while True:
        try:
            return (await handle(records),)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failures += 1
            if not await _back_off(exc, stop, name, retry_delay, failures):
                return None


async def _settle_and_commit(
    consumer: AIOKafkaConsumer,
    handle: Callable[[list[ConsumerRecord]], Awaitable[Awaitable[Any] | None]],
    records: list[ConsumerRecord],
    in_flight: Awaitable[Any] | None,
    offsets: dict[TopicPartition, int],
    stop: asyncio.Event,
    name: str,
    retry_delay: Callable[[int], float],
) -> bool:
    """Await the batch's in-flight part (handling the batch again while it fails), then
    commit its offsets; False if ``stop`` came first (nothing committed)."""
    failures = 0
    while in_flight is not None:
        try:
            await in_flight
            break
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failures += 1
            if not await _back_off(exc, stop, name, retry_delay, failures):
                return False
            handled = await _handle_until_done(handle, records, stop, name, retry_delay,
                                               failures)
            if handled is None:
                return False
            in_flight = handled[0]
    try:
        await consumer.commit(offsets)
    except (CommitFailedError, IllegalStateError) as exc:
        log.warning(f"{name}_commit_refused", error=str(exc))
    return True


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
