"""Producing known records and committing known offsets, for the monitor's tests."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, TopicPartition

from events.dead_letters import replay_detail
from events.schemas import DeliveryAttempt, StatementDeadLetter
from events.topics import Topics
from routing.broker import ProducerParams, make_producer
from routing.ports import OutcomeRecord
from routing.store.ledger import SqlDeliveryLedger
from tests.unit.delivery.factories import make_delivery


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


async def dead_letters_on(
    bootstrap: str, topics: Topics, connector_id: str, count: int
) -> list[tuple[int, int]]:
    """``count`` dead letters on the connector's DLQ; their places (partition, offset)."""
    producer = make_producer(ProducerParams(bootstrap))
    await producer.start()
    places = []
    try:
        for i in range(count):
            now = datetime.now(UTC)
            letter = StatementDeadLetter(
                connector_id=connector_id, statement_id=f"dl-{i}", reason="HTTP 400",
                attempts=(DeliveryAttempt(attempt=1, at=now, error="HTTP 400", status_code=400),),
                dead_lettered_at=now, delivery=make_delivery(f"dl-{i}"),
            )
            meta = await producer.send_and_wait(topics.partner_dlq(connector_id),
                                                letter.to_json(), key=b"k")
            places.append((meta.partition, meta.offset))
    finally:
        await producer.stop()
    return places


async def record_replay(
    database_url: str, topics: Topics, connector_id: str, place: tuple[int, int]
) -> None:
    """The ``replayed`` outcome of one dead letter, as the ledger consumer records it."""
    ledger = SqlDeliveryLedger.from_url(database_url)
    try:
        await ledger.record([OutcomeRecord(
            statement_id="dl-0", outcome="replayed", at=datetime.now(UTC),
            connector_id=connector_id,
            detail=replay_detail(topics.partner_dlq(connector_id), [place]))])
    finally:
        await ledger.close()
