"""The global-file builder and the ledger never stall on a record they cannot copy.

A malformed record of 0.9 MB on ``statements.global-file`` or ``deliveries.outcomes``:
its ``statements.invalid`` record refers to it (topic, partition, offset, size) instead of
copying it, it is counted, and the valid records of the same batch, in every partition,
are stored. If even that record cannot be written (Kafka, a hand-made ``statements.invalid``
with a tiny ``max.message.bytes``), the input is logged and counted as unwritable and the
consumer moves on instead of retrying the batch for ever.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import RecordMetadata
from sqlalchemy import select
from structlog.testing import capture_logs

from config.catalogue import default_catalogue
from config.settings import Settings
from events.schemas import DeliveryOutcome, StatementInvalid
from events.topics import Topics
from routing.broker import EmbeddedBroker, ProducerParams, make_producer, read_topic
from routing.broker.admin import ensure_topics
from routing.domain.model import Actor, Profile
from routing.entrypoints.bootstrap import run_global_file_builder, run_ledger
from routing.store.engine import create_store_engine
from routing.store.global_file import SqlGlobalFileStore
from routing.store.migrate import upgrade
from routing.store.tables import delivery_ledger
from tests.eventually import eventually
from tests.fixtures.broker import TEST_PARTITIONS, unique_prefix
from tests.integration.global_file.factories import iban
from tests.integration.global_file.helpers import global_file_event
from tests.integration.limits.helpers import AT_LIMIT, MALFORMED, parked

CAB_A = Actor("usr-a", "cab-a", Profile.COLLABORATEUR)
JANUARY = (date(2026, 1, 1), date(2026, 1, 31))

Runner = Callable[[Settings, Topics, str, asyncio.Event], Awaitable[dict[str, int]]]


@dataclass
class Consumer:
    """One consumer role (builder or ledger) running against this test's topics."""

    bootstrap: str
    topics: Topics
    url: str
    producer: AIOKafkaProducer
    settings: Settings

    def start(self, run: Runner) -> tuple[asyncio.Event, asyncio.Task[dict[str, int]]]:
        stop = asyncio.Event()
        return stop, asyncio.create_task(run(self.settings, self.topics, self.url, stop))

    async def invalid(self, count: int) -> list[StatementInvalid]:
        records = await eventually(
            lambda: read_topic(self.bootstrap, self.topics.invalid, timeout=30),
            f"{count} invalid records",
            done=lambda found: len(found) >= count,
        )
        return [StatementInvalid.model_validate_json(r.value) for r in records]


@pytest.fixture
async def consumer(
    kafka_broker: EmbeddedBroker, topics: Topics, sqlite_url: str, tmp_path: Path
) -> AsyncIterator[Consumer]:
    await upgrade(sqlite_url)
    producer = make_producer(ProducerParams(kafka_broker.bootstrap_servers))
    await producer.start()
    try:
        yield Consumer(kafka_broker.bootstrap_servers, topics, sqlite_url, producer,
                       Settings(data_dir=tmp_path))
    finally:
        await producer.stop()


def builder(bootstrap: str) -> Runner:
    def run(settings: Settings, topics: Topics, url: str, stop: asyncio.Event) -> Awaitable[
        dict[str, int]
    ]:
        return run_global_file_builder(settings, topics, url, stop, bootstrap_servers=bootstrap)

    return run


def ledger(bootstrap: str) -> Runner:
    def run(settings: Settings, topics: Topics, url: str, stop: asyncio.Event) -> Awaitable[
        dict[str, int]
    ]:
        return run_ledger(settings, topics, url, stop, bootstrap_servers=bootstrap)

    return run


async def stored_statements(url: str) -> list[str]:
    files = SqlGlobalFileStore.from_url(url)
    try:
        return sorted(e.statement_id for e in await files.statements(CAB_A, "cab-a", *JANUARY))
    finally:
        await files.close()


async def ledger_ids(url: str) -> list[str]:
    engine = create_store_engine(url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(select(delivery_ledger.c.statement_id))
            return sorted(row[0] for row in rows)
    finally:
        await engine.dispose()


def outcome(statement_id: str) -> bytes:
    return DeliveryOutcome(
        statement_id=statement_id, outcome="delivered", at=datetime(2026, 1, 6, tzinfo=UTC),
        iban=iban(1), cabinet_id="cab-a", connector_id="acd", attempt=1,
    ).to_json()


def assert_referred(
    refused: list[StatementInvalid], sources: list[RecordMetadata], size: int, by: str
) -> None:
    """Each refer-record names its input's topic, partition, offset and size, copies none of
    it, and the reference finds the input."""
    assert sorted((e.source_topic, e.source_partition, e.source_offset) for e in refused) == (
        sorted((m.topic, m.partition, m.offset) for m in sources)
    )
    for event in refused:
        assert event.detected_by == by
        assert event.payload_omitted and event.raw_b64 == "" and event.payload_bytes == size
        assert (
            f"(the value, {size} bytes, is not copied here: read it at {event.source_topic} "
            f"partition {event.source_partition} offset {event.source_offset})"
        ) in event.reason


def assert_logged_once(
    logs: list[dict[str, Any]], event: str, sources: list[RecordMetadata], size: int
) -> None:
    lines = [e for e in logs if e["event"] == event]
    assert sorted((e["partition"], e["offset"]) for e in lines) == sorted(
        (m.partition, m.offset) for m in sources
    )
    assert all(e["payload_bytes"] == size for e in lines)


@pytest.mark.parametrize("kind", sorted(MALFORMED))
async def test_the_global_file_builder_parks_a_large_malformed_record_and_stores_the_rest(
    consumer: Consumer, kind: str
) -> None:
    t = consumer.topics
    before = parked("global-file", "referred")
    value = MALFORMED[kind]()
    send = consumer.producer.send_and_wait
    # Keys of two partitions (cab-a: 2, cab-b and cab-d: 0 of 3): in each, a valid record
    # waits behind a malformed one.
    valid = [await send(t.global_file, global_file_event("g1", iban(1)).to_json(), key=b"cab-a")]
    bad = [await send(t.global_file, value, key=b"cab-a")]
    valid.append(
        await send(t.global_file, global_file_event("g2", iban(2)).to_json(), key=b"cab-a")
    )
    bad.append(await send(t.global_file, value, key=b"cab-b"))
    valid.append(await send(
        t.global_file, global_file_event("at-limit", iban(3), content=AT_LIMIT).to_json(),
        key=b"cab-d",
    ))
    assert len({m.partition for m in valid}) > 1
    with capture_logs() as logs:
        stop, task = consumer.start(builder(consumer.bootstrap))
        try:
            await eventually(lambda: stored_statements(consumer.url),
                             "the valid statements stored",
                             done=lambda ids: ids == ["at-limit", "g1", "g2"])
            refused = await consumer.invalid(2)
        finally:
            stop.set()
            stats = await asyncio.wait_for(task, 60)
    assert stats["stored"] == 3 and stats["invalid"] == 2
    assert_referred(refused, bad, len(value), "global-file-builder")
    assert_logged_once(logs, "invalid_global_file_event", bad, len(value))
    assert parked("global-file", "referred") - before == 2
    files = SqlGlobalFileStore.from_url(consumer.url)
    try:
        [entry] = [e for e in await files.statements(CAB_A, "cab-a", *JANUARY)
                   if e.statement_id == "at-limit"]
    finally:
        await files.close()
    assert entry.content == AT_LIMIT


@pytest.mark.parametrize("kind", sorted(MALFORMED))
async def test_the_ledger_parks_a_large_malformed_record_and_records_the_rest(
    consumer: Consumer, kind: str
) -> None:
    t = consumer.topics
    before = parked("ledger", "referred")
    value = MALFORMED[kind]()
    send = consumer.producer.send_and_wait
    valid = [await send(t.outcomes, outcome("o1"), key=b"o1")]
    bad = [await send(t.outcomes, value, key=b"o1")]
    valid.append(await send(t.outcomes, outcome("o2"), key=b"o2"))
    bad.append(await send(t.outcomes, value, key=b"o3"))
    valid.append(await send(t.outcomes, outcome("o3"), key=b"o3"))
    assert len({m.partition for m in valid}) > 1
    with capture_logs() as logs:
        stop, task = consumer.start(ledger(consumer.bootstrap))
        try:
            await eventually(lambda: ledger_ids(consumer.url), "the valid outcomes recorded",
                             done=lambda ids: ids == ["o1", "o2", "o3"])
            refused = await consumer.invalid(2)
        finally:
            stop.set()
            stats = await asyncio.wait_for(task, 60)
    assert stats["recorded"] == 3 and stats["invalid"] == 2
    assert_referred(refused, bad, len(value), "ledger")
    assert all(len(event.reason) < 2_500 for event in refused)
    assert_logged_once(logs, "invalid_outcome", bad, len(value))
    assert parked("ledger", "referred") - before == 2


async def test_a_small_malformed_record_is_still_copied_whole(consumer: Consumer) -> None:
    t = consumer.topics
    await consumer.producer.send_and_wait(t.outcomes, b"{not json", key=b"k")
    await consumer.producer.send_and_wait(t.outcomes, outcome("o1"), key=b"o1")
    stop, task = consumer.start(ledger(consumer.bootstrap))
    try:
        [event] = await consumer.invalid(1)
        await eventually(lambda: ledger_ids(consumer.url), "o1 recorded",
                         done=lambda ids: ids == ["o1"])
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
    assert not event.payload_omitted and base64.b64decode(event.raw_b64) == b"{not json"
    assert event.payload_bytes == 9 and event.raw_key == "k"


async def topics_with_a_small_invalid_topic(bootstrap: str, size: int) -> Topics:
    """Fresh topics whose ``statements.invalid`` was made by hand with ``max.message.bytes``
    of ``size``, at creation: a later ``alter_configs`` reaches the partition's log a moment
    after the admin call returns, so a record sent just after could still be accepted."""
    topics = Topics(prefix=unique_prefix(), partitions=TEST_PARTITIONS)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([
            NewTopic(topics.invalid, TEST_PARTITIONS, 1, topic_configs={
                "cleanup.policy": "delete", "max.message.bytes": str(size)})
        ])
    finally:
        await admin.close()
    specs = [s for s in topics.specs(default_catalogue()) if s.name != topics.invalid]
    await ensure_topics(bootstrap, specs)
    return topics


@pytest.mark.parametrize("role", ["global-file", "ledger"])
async def test_an_invalid_record_the_broker_refuses_is_logged_and_counted_not_retried_for_ever(
    consumer: Consumer, broker_kind: str, role: str
) -> None:
    """Kafka only: Tansu enforces no size, so it never refuses the record. Here
    ``statements.invalid`` takes 200 bytes at most: the copy is refused, then the reference;
    the input is parked unwritten (logged once, counted), and the valid records behind it
    are stored all the same."""
    if broker_kind != "kafka":
        pytest.skip("Tansu enforces no record size: nothing to refuse")
    t = await topics_with_a_small_invalid_topic(consumer.bootstrap, 200)
    consumer = replace(consumer, topics=t)
    component = "global-file" if role == "global-file" else "ledger"
    before = parked(component, "unwritable")
    send = consumer.producer.send_and_wait
    if role == "global-file":
        source = await send(t.global_file, b"{not json", key=b"cab-a")
        await send(t.global_file, global_file_event("g1", iban(1)).to_json(), key=b"cab-a")
        run, probe, want = builder(consumer.bootstrap), stored_statements, ["g1"]
    else:
        source = await send(t.outcomes, b"{not json", key=b"o1")
        await send(t.outcomes, outcome("o1"), key=b"o1")
        run, probe, want = ledger(consumer.bootstrap), ledger_ids, ["o1"]
    with capture_logs() as logs:
        stop, task = consumer.start(run)
        try:
            await eventually(lambda: probe(consumer.url), "the valid record stored",
                             done=lambda ids: ids == want)
            await eventually(lambda: parked(component, "unwritable") - before,
                             "the unwritable invalid record counted", done=lambda n: n == 1)
        finally:
            stop.set()
            stats = await asyncio.wait_for(task, 60)
    assert stats["invalid"] == 1
    assert await read_topic(consumer.bootstrap, t.invalid) == []
    [line] = [e for e in logs if e["event"] == "invalid_record_unwritable"]
    assert line["log_level"] == "error" and line["component"] == component
    assert (line["topic"], line["partition"], line["offset"], line["payload_bytes"]) == (
        source.topic, source.partition, source.offset, 9
    )
    assert "MessageSizeTooLarge" in line["error"] or "RecordListTooLarge" in line["error"]
