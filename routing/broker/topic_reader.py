"""Reading whole topics: a group-less consumer, the true end offsets, and the read to them.

The shared core of ``end_offsets``, ``read_topic``, the broker snapshot and the monitor.
No consumer group on purpose: inspecting a topic must not join a group, trigger a rebalance
in a running pipeline, or commit offsets anywhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord, TopicPartition

from routing.broker.errors import ReadTimeout, kafka_errors

# An empty fetch waits this long on the broker; short, because a reader polls in a loop.
_FETCH_MAX_WAIT_MS = 100


@asynccontextmanager
async def assigned_consumer(
    bootstrap_servers: str,
    partition_counts: Mapping[str, int],
    *,
    action: str,
    client_id: str = "statement-router-reader",
    isolation_level: str = "read_uncommitted",
) -> AsyncIterator[tuple[AIOKafkaConsumer, list[TopicPartition]]]:
    """A started consumer assigned to every partition of the given topics; stopped on exit.

    ``isolation_level="read_committed"`` hides the records of aborted (and still open)
    transactions, as the pipeline's own readers of routed topics do (exactly-once on Kafka).

    ``partition_counts`` must come from ``admin.require_topics``: the consumer's own
    metadata request for an unknown topic would make the broker auto-create it with its
    default partition count (4 on Tansu), which breaks co-partitioning for good.
    """
    partitions = [
        TopicPartition(topic, p) for topic, count in partition_counts.items() for p in range(count)
    ]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        client_id=client_id,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=_FETCH_MAX_WAIT_MS,
        isolation_level=isolation_level,
    )
    try:
        async with kafka_errors(action, bootstrap_servers):
            await consumer.start()
            consumer.assign(partitions)
        yield consumer, partitions
    finally:
        # Also after a failed start: an unstopped consumer holds sockets and warns.
        await consumer.stop()


async def true_end_offsets(
    consumer: AIOKafkaConsumer,
    partitions: Sequence[TopicPartition],
    *,
    deadline: float,
    what: str,
) -> dict[TopicPartition, int]:
    """The offset after the last record of each partition, even on Tansu.

    Tansu 0.6 answers ListOffsets(latest) with the base offset of the partition's *last
    record batch* plus one, not the offset after its last record: after one batched send
    of 22 records it reports 1 (measured). The high watermark in a Fetch response is
    right. So: ask ListOffsets, fetch from the last listed offset, and keep the larger of
    the two. On Kafka both agree and this costs one small fetch per non-empty partition.

    Leaves the consumer's positions anywhere; seek before reading. ``deadline`` is on the
    event loop's clock; ``what`` names the read in a ReadTimeout.
    """
    loop = asyncio.get_running_loop()
    listed: dict[TopicPartition, int] = await consumer.end_offsets(list(partitions))
    starts: dict[TopicPartition, int] = await consumer.beginning_offsets(list(partitions))
    ends = {tp: int(listed[tp]) for tp in partitions}
    pending = {tp for tp in partitions if listed[tp] > starts[tp]}
    for tp in pending:
        consumer.seek(tp, listed[tp] - 1)
    while pending:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise ReadTimeout(f"finding the end offsets of {what} did not finish in time")
        await consumer.getmany(*pending, timeout_ms=max(1, int(min(remaining, 0.5) * 1000)))
        for tp in list(pending):
            highwater = consumer.highwater(tp)
            if highwater is not None:
                ends[tp] = max(ends[tp], int(highwater))
                pending.discard(tp)
    return ends


async def read_to_end(
    consumer: AIOKafkaConsumer,
    partitions: Sequence[TopicPartition],
    *,
    deadline: float,
    what: str,
    timed_out: Callable[[set[TopicPartition]], Exception],
    poll_seconds: float = 1.0,
) -> AsyncIterator[list[ConsumerRecord]]:
    """Every record of ``partitions``, from their beginning to their true end on entry.

    Yields the records of each fetch, per partition in offset order; records written after
    the end offsets were taken are left out, so the read ends while producers still write.
    ``timed_out(still_reading)`` is the error raised once ``deadline`` (event loop clock)
    passes; ``what`` names the read in the end-offset lookup's ``ReadTimeout``.
    """
    loop = asyncio.get_running_loop()
    ends = await true_end_offsets(consumer, partitions, deadline=deadline, what=what)
    starts: dict[TopicPartition, int] = await consumer.beginning_offsets(list(partitions))
    pending = {tp for tp in partitions if ends[tp] > starts[tp]}
    for tp in pending:
        consumer.seek(tp, starts[tp])
    while pending:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise timed_out(pending)
        batch = await consumer.getmany(
            *pending, timeout_ms=max(1, int(min(remaining, poll_seconds) * 1000))
        )
        for tp, records in batch.items():
            below = [r for r in records if r.offset < ends[tp]]
            if below:
                yield below
        for tp in list(pending):
            if await consumer.position(tp) >= ends[tp]:
                pending.discard(tp)
