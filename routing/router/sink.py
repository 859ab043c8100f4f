"""Where the router's output records go: a Kafka producer, or a list in unit tests.

``send_many`` *issues* records (it returns once they are queued in the producer, in call
order) and hands back futures that resolve when the broker acknowledged them. The router
issues all records of a step under its lock, so their order per partition is the
routing order, and awaits the futures before it lets the input offset be committed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata, TopicPartition

from events.topics import Topics
from routing.broker.partitioner import default_partition
from routing.observability import metrics
from routing.router.emit import Out

# RouterCore builds the invalid records; every one of them leaves through the sink, which
# counts them (statement_router_invalid_total{component="router"}) whatever the prefix.
_INVALID_SUFFIX = Topics(prefix="_").invalid.removeprefix("_")


class Sink(Protocol):
    async def send_many(self, outs: Sequence[Out]) -> list[asyncio.Future[Any]]: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class KafkaSink:
    """Produces with an aiokafka producer, one record batch per partition and call.

    Records are appended to ``BatchBuilder``s grouped by (topic, partition) and handed to
    the producer with ``send_batch``: one future per batch instead of per record, and no
    per-record ``send`` coroutine. The partition is the one aiokafka's default partitioner
    would pick (murmur2 of the key, as the Java client and faust), unless the record names
    its own (the Tables' changelog records). Order per partition is the order of
    ``outs``.
    """

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer
        self._partitions: dict[str, int] = {}

    async def start(self) -> None:
        await self.producer.start()

    async def stop(self) -> None:
        await self.producer.stop()

    async def _count(self, topic: str) -> int:
        count = self._partitions.get(topic)
        if count is None:
            partitions = await self.producer.partitions_for(topic)
            count = self._partitions[topic] = len(partitions)
        return count

    async def send_many(self, outs: Sequence[Out]) -> list[asyncio.Future[Any]]:
        producer = self.producer
        futures: list[asyncio.Future[Any]] = []
        batches: dict[tuple[str, int], Any] = {}
        for out in outs:
            partition = out.partition
            if partition is None:
                count = self._partitions.get(out.topic) or await self._count(out.topic)
                partition = default_partition(out.key, count)
            where = (out.topic, partition)
            batch = batches.get(where)
            if batch is None:
                batch = batches[where] = producer.create_batch()
            if batch.append(key=out.key, value=out.value, timestamp=None) is None:
                futures.append(await _send(producer, batch, out.topic, partition))
                batch = batches[where] = producer.create_batch()
                if batch.append(key=out.key, value=out.value, timestamp=None) is None:
                    raise ValueError(
                        f"a record for {out.topic} is larger than the producer's batch size"
                    )
        for (topic, partition), batch in batches.items():
            if batch.record_count():
                futures.append(await _send(producer, batch, topic, partition))
        invalid = sum(1 for out in outs if out.topic.endswith(_INVALID_SUFFIX))
        if invalid:
            metrics.INVALID.labels("router").inc(invalid)
        return futures


async def _send(
    producer: AIOKafkaProducer, batch: Any, topic: str, partition: int
) -> asyncio.Future[Any]:
    """Hand a complete batch to the producer, to be sent without lingering.

    aiokafka lingers an open batch (``linger_ms``) waiting for more records, as for
    ``send``; ours are complete, and a step waits for their acknowledgement before the
    next one, so each step would wait out the linger. A closed batch is sent at once.
    """
    batch.close()
    future: asyncio.Future[Any] = await producer.send_batch(batch, topic, partition=partition)
    return future


class MemorySink:
    """Records what would be produced; every send is acknowledged at once.

    Each call's future resolves to a ``RecordMetadata`` per (topic, partition) batch, as
    the Kafka sink's do, with offsets counted per partition from 0.
    """

    def __init__(self) -> None:
        self.records: list[Out] = []
        self._next_offset: dict[tuple[str, int], int] = {}

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def send_many(self, outs: Sequence[Out]) -> list[asyncio.Future[Any]]:
        self.records.extend(outs)
        loop = asyncio.get_running_loop()
        firsts: dict[tuple[str, int], int] = {}
        for out in outs:
            where = (out.topic, out.partition or 0)
            offset = self._next_offset.get(where, 0)
            firsts.setdefault(where, offset)
            self._next_offset[where] = offset + 1
        futures: list[asyncio.Future[Any]] = []
        for (topic, partition), offset in firsts.items():
            fut: asyncio.Future[Any] = loop.create_future()
            fut.set_result(
                RecordMetadata(
                    topic, partition, TopicPartition(topic, partition), offset, -1, 0, 0
                )
            )
            futures.append(fut)
        return futures

    def on(self, topic: str) -> list[Out]:
        return [r for r in self.records if r.topic == topic]

    def clear(self) -> None:
        self.records.clear()
