"""The global-file builder against the embedded broker and a SQLite store: stored once
per statement, one outcome per stored statement, offsets committed after the write."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from structlog.testing import capture_logs

from config.settings import Settings
from events.schemas import DeliveryOutcome, StatementInvalid
from events.topics import Topics
from routing.broker import EmbeddedBroker, ProducerParams, make_producer, read_topic
from routing.domain.model import Actor, Profile
from routing.entrypoints.bootstrap import run_global_file_builder
from routing.observability import metrics
from routing.store.global_file import SqlGlobalFileStore
from routing.store.migrate import upgrade
from tests.eventually import eventually
from tests.integration.global_file.factories import iban
from tests.integration.global_file.helpers import global_file_event

CAB_A = Actor("usr-a", "cab-a", Profile.COLLABORATEUR)
JANUARY = (date(2026, 1, 1), date(2026, 1, 31))


@dataclass
class Running:
    stop: asyncio.Event
    task: asyncio.Task[dict[str, int]]

    async def finish(self) -> dict[str, int]:
        self.stop.set()
        return await asyncio.wait_for(self.task, 60)


@dataclass
class Harness:
    bootstrap: str
    topics: Topics
    url: str
    files: SqlGlobalFileStore
    producer: AIOKafkaProducer
    settings: Settings

    def start(self) -> Running:
        stop = asyncio.Event()
        task = asyncio.create_task(
            run_global_file_builder(
                self.settings, self.topics, self.url, stop, bootstrap_servers=self.bootstrap
            )
        )
        return Running(stop, task)

    async def publish(self, value: bytes, key: bytes = b"cab-a") -> None:
        await self.producer.send_and_wait(self.topics.global_file, value, key=key)

    async def stored(self) -> list[str]:
        return [e.statement_id for e in await self.files.statements(CAB_A, "cab-a", *JANUARY)]

    async def outcomes(self, count: int) -> list[DeliveryOutcome]:
        records = await eventually(
            lambda: read_topic(self.bootstrap, self.topics.outcomes),
            f"{count} outcomes",
            done=lambda found: len(found) >= count,
        )
        return [DeliveryOutcome.model_validate_json(r.value) for r in records]


@pytest.fixture
async def harness(
    kafka_broker: EmbeddedBroker, topics: Topics, sqlite_url: str, tmp_path: Path
) -> AsyncIterator[Harness]:
    await upgrade(sqlite_url)
    files = SqlGlobalFileStore.from_url(sqlite_url)
    producer = make_producer(ProducerParams(kafka_broker.bootstrap_servers))
    await producer.start()
    try:
        yield Harness(kafka_broker.bootstrap_servers, topics, sqlite_url, files, producer,
                      Settings(data_dir=tmp_path))
    finally:
        await producer.stop()
        await files.close()


async def test_statements_are_stored_once_and_reported(harness: Harness) -> None:
    running = harness.start()
    try:
        first = global_file_event("s1", iban(1)).to_json()
        await harness.publish(first)
        await harness.publish(global_file_event("s2", iban(1), period="2026-01-07").to_json())
        await harness.publish(b"{not json")
        await harness.publish(first)  # a duplicate, in the first copy's batch or a later one
        await harness.outcomes(2)
        await harness.publish(first)  # a redelivery later (the router re-sent after a crash)
        await harness.outcomes(3)
        assert await harness.stored() == ["s1", "s2"]
    finally:
        stats = await running.finish()
    assert stats["records"] == 5 and stats["stored"] == 2 and stats["invalid"] == 1
    # The builder has read all five records: every outcome it will write is written.
    outcomes = [DeliveryOutcome.model_validate_json(r.value)
                for r in await read_topic(harness.bootstrap, harness.topics.outcomes)]
    by_id: dict[str, list[DeliveryOutcome]] = {}
    for outcome in outcomes:
        by_id.setdefault(outcome.statement_id, []).append(outcome)
    assert sorted(by_id) == ["s1", "s2"]
    s1 = by_id["s1"]
    # A copy inside the first copy's fetch batch is absorbed there; one in a later batch
    # (the fetch timing decides) re-reports, like the redelivery: 2 or 3 outcomes.
    assert len(s1) in (2, 3) and len(by_id["s2"]) == 1
    # Each re-report is the first write's record again, which the ledger dedupes.
    assert all(o == s1[0] for o in s1)
    assert s1[0].outcome == "stored_global_file" and s1[0].cabinet_id == "cab-a"
    assert s1[0].iban == iban(1)
    invalid = await read_topic(harness.bootstrap, harness.topics.invalid)
    assert len(invalid) == 1
    event = StatementInvalid.model_validate_json(invalid[0].value)
    assert event.detected_by == "global-file-builder"
    assert event.reason.startswith("value is not JSON")
    assert event.source_topic == harness.topics.global_file


async def test_a_restarted_builder_resumes_after_its_committed_offsets(
    harness: Harness,
) -> None:
    running = harness.start()
    try:
        await harness.publish(global_file_event("a1", iban(1)).to_json())
        await harness.outcomes(1)
    finally:
        await running.finish()
    running = harness.start()
    try:
        await harness.publish(global_file_event("a2", iban(1)).to_json())
        await eventually(harness.stored, "a2 stored", done=lambda ids: ids == ["a1", "a2"])
        await harness.outcomes(2)
    finally:
        stats = await running.finish()
    # The second run read only the new record: the first run's offsets were committed.
    assert stats["records"] == 1
    records = await read_topic(harness.bootstrap, harness.topics.outcomes)
    assert sorted(json.loads(r.value)["statement_id"] for r in records) == ["a1", "a2"]


async def test_a_missing_topic_is_an_error_not_an_auto_created_topic(
    kafka_broker: EmbeddedBroker, sqlite_url: str, tmp_path: Path, unique_group: Callable[..., str]
) -> None:
    from routing.broker.errors import UnknownTopic

    await upgrade(sqlite_url)
    topics = Topics(prefix=unique_group("missing"))
    with pytest.raises(UnknownTopic):
        await run_global_file_builder(
            Settings(data_dir=tmp_path), topics, sqlite_url, asyncio.Event(),
            bootstrap_servers=kafka_broker.bootstrap_servers,
        )


async def test_a_shared_or_reused_statement_id_loses_no_statement(harness: Harness) -> None:
    """Issue 13 item 2: two feeds send ``stmt-1`` for accounts of two cabinets, and one of
    them sends ``stmt-1`` again with other content. Cabinet B's file gets its statement,
    cabinet A's file keeps both of its own, and the builder says so (warning + outcome);
    an identical redelivery is still a duplicate."""
    cab_b = Actor("usr-b", "cab-b", Profile.COLLABORATEUR)
    a_first = global_file_event("stmt-1", iban(1), content=b"01 A first".ljust(120))
    b_own = global_file_event("stmt-1", iban(2), cabinet_id="cab-b",
                              content=b"01 B".ljust(120))
    a_reused = global_file_event("stmt-1", iban(1), content=b"01 A corrected".ljust(120))

    def counted(result: str) -> float:
        value = metrics.REGISTRY.get_sample_value(
            "statement_router_global_file_statements_total", {"result": result}
        )
        return value or 0.0

    before = {r: counted(r) for r in ("stored", "id_reused", "duplicate")}
    running = harness.start()
    try:
        with capture_logs() as logs:
            await harness.publish(a_first.to_json())
            await harness.outcomes(1)
            await harness.publish(b_own.to_json(), key=b"cab-b")
            await harness.publish(a_reused.to_json())
            await harness.outcomes(3)
            await harness.publish(a_first.to_json())  # a redelivery: absorbed
            await harness.outcomes(4)
    finally:
        stats = await running.finish()
    assert stats["stored"] == 3 and stats["duplicates"] == 1
    # Counted in the builder's process (this one): the reused id apart from the others.
    assert {r: counted(r) - before[r] for r in before} == {
        "stored": 2, "id_reused": 1, "duplicate": 1,
    }
    theirs = await harness.files.statements(cab_b, "cab-b", *JANUARY)
    assert [(e.statement_id, e.iban, e.content_sha256) for e in theirs] == [
        ("stmt-1", iban(2), b_own.content_sha256)
    ]
    mine = await harness.files.statements(CAB_A, "cab-a", *JANUARY)
    assert sorted(e.content_sha256 for e in mine) == sorted(
        [a_first.content_sha256, a_reused.content_sha256]
    )
    outcomes = [DeliveryOutcome.model_validate_json(r.value)
                for r in await read_topic(harness.bootstrap, harness.topics.outcomes)]
    by_content = {o.content_sha256: o for o in outcomes}
    assert by_content[b_own.content_sha256].cabinet_id == "cab-b"
    assert by_content[b_own.content_sha256].detail == "in the global file of cabinet cab-b"
    reused = by_content[a_reused.content_sha256]
    assert reused.cabinet_id == "cab-a" and "the id was reused, all are kept" in (
        reused.detail or ""
    )
    assert a_first.content_sha256[:12] in (reused.detail or "")
    events = [(e["event"], e.get("content_sha256")) for e in logs]
    assert ("global_file_statement_id_reused", a_reused.content_sha256) in events
    assert ("statement_stored_global_file", b_own.content_sha256) in events
    assert ("global_file_duplicate_ignored", a_first.content_sha256) in events
    assert ("global_file_duplicate_ignored", b_own.content_sha256) not in events
