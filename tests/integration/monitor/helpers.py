"""Producing known records and committing known offsets, for the monitor's tests."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition

from routing.broker import ProducerParams, make_producer


async def produce_to_partitions(
    bootstrap: str, topic: str, per_partition: Mapping[int, int], *, tag: str = "m"
) -> None:
    """``per_partition[p]`` records on partition ``p``, sent as one batch (not one by one:
    the batch is what makes Tansu's ListOffsets answer wrong, and the monitor must not be)."""
    producer = make_producer(ProducerParams(bootstrap))
    await producer.start()
    try:
        futures = [
            await producer.send(topic, f"{tag}-{p}-{i}".encode(), key=f"k{p}".encode(),
                                partition=p)
            for p, count in per_partition.items()
            for i in range(count)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def commit(bootstrap: str, group_id: str, offsets: Mapping[tuple[str, int], int]) -> None:
    """Commit ``offsets`` for ``group_id`` with a real consumer of that group."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group_id,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        tps = {TopicPartition(topic, p): offset for (topic, p), offset in offsets.items()}
        consumer.assign(list(tps))
        await consumer.commit(tps)
    finally:
        await consumer.stop()
