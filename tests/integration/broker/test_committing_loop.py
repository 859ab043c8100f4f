"""The committing loop settles a batch beside the next one, and commits only settled
batches, in order (``routing.broker.consumer.consume_committing``).

The handler here is the test's own: it stands for the global-file builder, whose
``handle`` returns the acks of the outcomes it sent. Broker and consumer group are real.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord, TopicPartition

from events.topics import Topics
from routing.broker.consumer import committing_consumer, consume_committing
from routing.broker.process import BrokerProcess
from tests.eventually import eventually


class Handler:
    """Records every batch it is given and hands back a future the test settles."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.in_flight: list[asyncio.Future[None]] = []

    async def handle(self, records: list[ConsumerRecord]) -> asyncio.Future[None]:
        self.batches.append([r.value.decode() for r in records if r.value is not None])
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.in_flight.append(future)
        return future

    def handled(self) -> list[str]:
        return [value for batch in self.batches for value in batch]


class Loop:
    def __init__(self, bootstrap: str, topic: str, group: str) -> None:
        self.bootstrap, self.topic, self.group = bootstrap, topic, group
        self.handler = Handler()
        self.stop = asyncio.Event()

    async def committed(self) -> int | None:
        """The group's committed offset on partition 0, or None."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(
                self.group, partitions=[TopicPartition(self.topic, 0)]
            )
        finally:
            await admin.close()
        meta = offsets.get(TopicPartition(self.topic, 0))
        return meta.offset if meta is not None and meta.offset >= 0 else None



@contextlib.asynccontextmanager
async def started(loop: Loop) -> AsyncIterator[asyncio.Task[None]]:
    """The loop on a real consumer; the test ends it (a task still running is cancelled)."""
    async with committing_consumer(
        loop.bootstrap, loop.topic, loop.group, "committing-loop-test", fetch_max_wait_ms=20
    ) as consumer:
        task = asyncio.create_task(
            consume_committing(
                consumer, loop.handler.handle, loop.stop, name="test_loop",
                retry_delay=lambda failures: 0.05,
            )
        )
        try:
            yield task
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


@contextlib.asynccontextmanager
async def running(loop: Loop) -> AsyncIterator[asyncio.Task[None]]:
    """:func:`started`, then stopped with every in-flight part settled."""
    async with started(loop) as task:
        try:
            yield task
        finally:
            loop.stop.set()
            for future in loop.handler.in_flight:
                if not future.done():
                    future.set_result(None)
            await asyncio.wait_for(task, 60)


def at(offset: int) -> Callable[[int | None], bool]:
    return lambda committed: committed == offset


async def publish(producer: AIOKafkaProducer, topic: str, value: str) -> None:
    await producer.send_and_wait(topic, value.encode(), partition=0)


async def test_a_batch_is_committed_only_once_settled_while_the_next_is_handled(
    kafka_broker: BrokerProcess,
    make_topics: Callable[..., Any],
    unique_group: Callable[..., str],
    producer: AIOKafkaProducer,
) -> None:
    topics: Topics = await make_topics(partitions=1)
    loop = Loop(kafka_broker.bootstrap_servers, topics.global_file, unique_group("settle"))
    async with running(loop):
        await publish(producer, loop.topic, "a")
        await eventually(loop.handler.handled, "a handled", done=lambda v: v == ["a"])
        # Batch 1 is not settled: the loop goes on with batch 2 all the same ...
        await publish(producer, loop.topic, "b")
        await eventually(loop.handler.handled, "b handled", done=lambda v: v == ["a", "b"])
        # ... and commits neither (batch 2 waits for batch 1, which waits for its acks).
        assert await loop.committed() is None
        loop.handler.in_flight[0].set_result(None)
        await eventually(loop.committed, "batch 1 committed", done=at(1))
        loop.handler.in_flight[1].set_result(None)
        await eventually(loop.committed, "batch 2 committed", done=at(2))
    assert loop.handler.handled() == ["a", "b"]


async def test_a_batch_whose_acks_fail_is_handled_again_before_it_is_committed(
    kafka_broker: BrokerProcess,
    make_topics: Callable[..., Any],
    unique_group: Callable[..., str],
    producer: AIOKafkaProducer,
) -> None:
    topics: Topics = await make_topics(partitions=1)
    loop = Loop(kafka_broker.bootstrap_servers, topics.global_file, unique_group("retry"))
    async with running(loop):
        await publish(producer, loop.topic, "a")
        await eventually(loop.handler.handled, "a handled", done=lambda v: v == ["a"])
        loop.handler.in_flight[0].set_exception(RuntimeError("broker refused the outcomes"))
        # The same batch is handled again (idempotent handler), not committed past.
        await eventually(loop.handler.handled, "a handled again", done=lambda v: v == ["a", "a"])
        assert await loop.committed() is None
        loop.handler.in_flight[1].set_result(None)
        await eventually(loop.committed, "batch committed", done=at(1))


async def test_a_stop_commits_the_settled_last_batch_and_not_an_unsettled_one(
    kafka_broker: BrokerProcess,
    make_topics: Callable[..., Any],
    unique_group: Callable[..., str],
    producer: AIOKafkaProducer,
) -> None:
    topics: Topics = await make_topics(partitions=1)
    loop = Loop(kafka_broker.bootstrap_servers, topics.global_file, unique_group("stop"))
    async with started(loop) as task:
        await publish(producer, loop.topic, "a")
        await eventually(loop.handler.handled, "a handled", done=lambda v: v == ["a"])
        loop.stop.set()
        # The stopping loop still waits for the last batch's acks, then commits it.
        loop.handler.in_flight[0].set_result(None)
        await asyncio.wait_for(task, 60)
    assert await loop.committed() == 1
    # A failing in-flight part at the stop: nothing committed past it, the batch is re-read.
    loop = Loop(kafka_broker.bootstrap_servers, topics.global_file, unique_group("stop2"))
    async with started(loop) as task:
        await eventually(loop.handler.handled, "a handled", done=lambda v: v == ["a"])
        loop.stop.set()
        loop.handler.in_flight[0].set_exception(RuntimeError("broker gone"))
        await asyncio.wait_for(task, 60)
    assert await loop.committed() is None
