"""A group-less consumer assigned to whole topics: the shared core of end_offsets and read_topic.

No consumer group on purpose: inspecting a topic must not join a group, trigger a rebalance
in a running pipeline, or commit offsets anywhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

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
