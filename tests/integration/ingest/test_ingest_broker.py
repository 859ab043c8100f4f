"""Ingestion on the real embedded broker: what reaches statements.received, and what never does.

Every check reads the topic back with ``read_topic``: keys, schema, ids and partitions are
what the router will see. Broker failures are real too: a broker frozen with SIGSTOP, and
a producer whose connection "drops" after a few sends (the real producer, on the real
broker, failing between two sends) for a publish that is cut mid-file.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import shutil
import signal
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError
from aiokafka.partitioner import murmur2

from adapters.ingest.dropfolder import DONE, QUARANTINE, DropResult, settle, watch
from adapters.ingest.producer import (
    PARSER_FAILED,
    IngestReport,
    PublishFailed,
    build_events,
    publish_file,
    require_received_topic,
)
from events.schemas import StatementReceived
from events.topics import Topics
from routing.broker import (
    EmbeddedBroker,
    ProducerParams,
    TopicMismatch,
    UnknownTopic,
    ensure_topics,
    make_producer,
    read_topic,
)
from tests.eventually import eventually
from tests.fixtures.broker import TopicsFactory

SAMPLES = Path(__file__).resolve().parents[3] / "examples" / "bank-files"
GOOD = {
    "cfonb120-multi.txt": 6,
    "cfonb120-multi-nobreaks.txt": 6,
    "camt053-multi.xml": 3,
    "mt940-multi.sta": 2,
}
BROKEN = {
    "cfonb120-bad-rib.txt": ("invalid_account", 1),
    "cfonb120-balance-mismatch.txt": ("balance_mismatch", 6),
    "cfonb120-truncated.txt": ("malformed_record", 4),
    "camt053-doctype.xml": ("unsafe_xml", 2),
}
NOW = datetime(2025, 3, 5, 6, 30, tzinfo=UTC)
POLL = 0.1


def drop(name: str, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(SAMPLES / name, folder / name))


def expected_ids(name: str) -> list[str]:
    events = build_events((SAMPLES / name).read_bytes(), filename=name, now=NOW)
    return [e.statement_id for e in events]



async def received(broker: EmbeddedBroker, topics: Topics) -> list[Any]:
    return await read_topic(broker.bootstrap_servers, topics.received)


def decoded(records: list[Any]) -> list[StatementReceived]:
    return [StatementReceived.model_validate_json(r.value) for r in records]


# --- publishing files --------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(GOOD))
async def test_a_good_file_publishes_exactly_its_statements_keyed_by_iban(
    name: str,
    kafka_broker: EmbeddedBroker,
    topics: Topics,
    producer: AIOKafkaProducer,
    tmp_path: Path,
) -> None:
    path = drop(name, tmp_path)
    report = await publish_file(producer, topics, path, now=NOW)

    assert report.ok
    assert list(report.statement_ids) == expected_ids(name)
    records = await received(kafka_broker, topics)
    events = decoded(records)
    assert len(records) == GOOD[name]
    assert sorted(e.statement_id for e in events) == sorted(expected_ids(name))
    for record, event in zip(records, events, strict=True):
        assert record.key == event.iban.encode()
        assert json.loads(record.value)["schema"] == "statement.received/v1"
        assert event.source == f"file:{name}"
        assert event.received_at == NOW
        # aiokafka's default partitioner, like Kafka's Java client: murmur2 of the key.
        assert record.partition == (murmur2(record.key) & 0x7FFFFFFF) % topics.partitions
    assert path.exists()  # publish_file never moves; settle() does


async def test_every_statement_of_an_iban_goes_to_one_partition_in_file_order(
    kafka_broker: EmbeddedBroker, topics: Topics, producer: AIOKafkaProducer, tmp_path: Path
) -> None:
    await publish_file(producer, topics, drop("cfonb120-multi.txt", tmp_path), now=NOW)
    records = await received(kafka_broker, topics)
    by_iban: dict[str, list[Any]] = {}
    for record, event in zip(records, decoded(records), strict=True):
        by_iban.setdefault(event.iban, []).append((record.partition, record.offset, event))
    for seen in by_iban.values():
        assert len({partition for partition, _, _ in seen}) == 1
        periods = [event.period_start for _, _, event in sorted(seen, key=lambda s: s[1])]
        assert periods == sorted(periods)


@pytest.mark.parametrize("name", sorted(BROKEN))
async def test_a_broken_file_publishes_nothing_and_is_quarantined_with_its_reason(
    name: str,
    kafka_broker: EmbeddedBroker,
    topics: Topics,
    producer: AIOKafkaProducer,
    tmp_path: Path,
) -> None:
    code, line = BROKEN[name]
    await publish_file(producer, topics, drop("mt940-multi.sta", tmp_path), now=NOW)
    before = await received(kafka_broker, topics)
    path = drop(name, tmp_path)

    report = await publish_file(producer, topics, path, now=NOW)
    moved = settle(path, report, done=None, quarantined=tmp_path / QUARANTINE)

    assert report.refusal is not None
    assert report.refusal.message.startswith(f"line {line}: ")
    assert (report.refusal.code, report.refusal.line) == (code, line)
    assert moved == tmp_path / QUARANTINE / name
    assert not path.exists()
    assert moved.read_bytes() == (SAMPLES / name).read_bytes()
    error = json.loads((tmp_path / QUARANTINE / f"{name}.error.json").read_text())
    assert error["line"] == line
    assert error["code"] == code
    assert error["format"] == ("camt053" if name.endswith(".xml") else "cfonb120")
    assert error["reason"] == report.refusal.reason
    assert error["file"] == name
    assert datetime.fromisoformat(error["detected_at"]).tzinfo is not None
    after = await received(kafka_broker, topics)
    assert [(r.partition, r.offset) for r in after] == [(r.partition, r.offset) for r in before]
    assert len(after) == GOOD["mt940-multi.sta"]


async def test_a_parser_crash_quarantines_the_file_instead_of_stopping_ingestion(
    kafka_broker: EmbeddedBroker,
    topics: Topics,
    producer: AIOKafkaProducer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def crash(data: bytes, fmt: str, filename: str | None) -> None:
        raise RuntimeError("unexpected :61: 'secret content'")

    monkeypatch.setattr("adapters.ingest.producer.parse_file", crash)
    path = drop("mt940-multi.sta", tmp_path)

    report = await publish_file(producer, topics, path)

    assert report.refusal is not None
    assert (report.refusal.code, report.refusal.format) == (PARSER_FAILED, "mt940")
    assert "RuntimeError" in report.refusal.reason
    assert "secret content" not in report.refusal.reason
    assert await received(kafka_broker, topics) == []


async def test_reingesting_a_file_republishes_the_same_ids(
    kafka_broker: EmbeddedBroker, topics: Topics, producer: AIOKafkaProducer, tmp_path: Path
) -> None:
    path = drop("camt053-multi.xml", tmp_path)
    first = await publish_file(producer, topics, path)
    second = await publish_file(producer, topics, path)

    assert first.statement_ids == second.statement_ids
    events = decoded(await received(kafka_broker, topics))
    assert Counter(e.statement_id for e in events) == Counter(
        {statement_id: 2 for statement_id in first.statement_ids}
    )
    by_id: dict[str, list[StatementReceived]] = {}
    for event in events:
        by_id.setdefault(event.statement_id, []).append(event)
    for copies in by_id.values():  # the copies differ by their ingestion time only
        assert len({c.model_copy(update={"received_at": NOW}) for c in copies}) == 1


class DroppingProducer:
    """The real producer, whose connection drops after ``succeed`` sends (a broker crash).

    Failing *between* sends is the one partial outcome of a file: the first records
    are on the topic, the rest never will be.
    """

    def __init__(self, producer: AIOKafkaProducer, succeed: int) -> None:
        self._producer = producer
        self._left = succeed

    async def send(self, topic: str, value: bytes, key: bytes) -> Any:
        if self._left == 0:
            raise KafkaConnectionError("connection to the broker lost")
        self._left -= 1
        return await self._producer.send(topic, value=value, key=key)


async def test_a_publish_cut_mid_file_is_completed_by_a_retry_with_the_same_ids(
    kafka_broker: EmbeddedBroker, topics: Topics, producer: AIOKafkaProducer, tmp_path: Path
) -> None:
    path = drop("cfonb120-multi.txt", tmp_path)
    with pytest.raises(PublishFailed) as failed:
        await publish_file(DroppingProducer(producer, succeed=2), topics, path)
    assert (failed.value.acknowledged, failed.value.total) == (2, 6)
    assert "republishes the same statement ids" in failed.value.message
    partial = decoded(await received(kafka_broker, topics))
    assert sorted(e.statement_id for e in partial) == sorted(expected_ids(path.name)[:2])

    retry = await publish_file(producer, topics, path)

    events = decoded(await received(kafka_broker, topics))
    assert set(retry.statement_ids) == {e.statement_id for e in events}
    assert Counter(e.statement_id for e in events) == Counter(
        {sid: 2 if sid in expected_ids(path.name)[:2] else 1 for sid in retry.statement_ids}
    )


async def test_publishing_refuses_a_missing_or_mispartitioned_topic(
    kafka_broker: EmbeddedBroker, make_topics: TopicsFactory
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    with pytest.raises(UnknownTopic):
        await require_received_topic(bootstrap, Topics(prefix="never-created", partitions=3))
    two = await make_topics(partitions=2, connector_ids=[])
    with pytest.raises(TopicMismatch, match="has 2 partitions but topic_partitions is 3"):
        await require_received_topic(bootstrap, Topics(prefix=two.prefix, partitions=3))
    assert await require_received_topic(bootstrap, two) == 2


# --- the drop folder ------------------------------------------------------------------


class Watcher:
    """``watch`` running in a task, with what it reported, stopped cleanly at the end."""

    def __init__(self, folder: Path, publish: Callable[[Path], Awaitable[IngestReport]]) -> None:
        self.folder = folder
        self.results: list[DropResult] = []
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(
            watch(folder, publish, self.stop, POLL, on_result=self.results.append)
        )

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 30)

    def settled(self, name: str) -> list[DropResult]:
        return [r for r in self.results if r.report.path.name == name]


@pytest.fixture
async def watcher(
    tmp_path: Path, topics: Topics, producer: AIOKafkaProducer
) -> AsyncIterator[Watcher]:
    folder = tmp_path / "drop"
    folder.mkdir()
    running = Watcher(folder, functools.partial(publish_file, producer, topics))
    try:
        yield running
    finally:
        await running.close()


async def polls(n: int) -> None:
    await asyncio.sleep(POLL * n)


async def test_the_watcher_waits_for_a_part_file_to_be_renamed(
    watcher: Watcher, kafka_broker: EmbeddedBroker, topics: Topics
) -> None:
    data = (SAMPLES / "cfonb120-multi.txt").read_bytes()
    part = watcher.folder / "releve.txt.part"
    part.write_bytes(data[: len(data) // 2])
    await polls(5)
    part.write_bytes(data)
    await polls(5)
    assert part.exists()
    assert watcher.results == []
    assert await received(kafka_broker, topics) == []

    part.rename(watcher.folder / "releve.txt")

    await eventually(lambda: watcher.settled("releve.txt"), "releve.txt settled")
    assert (watcher.folder / DONE / "releve.txt").read_bytes() == data
    assert not (watcher.folder / "releve.txt").exists()
    events = decoded(await received(kafka_broker, topics))
    assert sorted(e.statement_id for e in events) == sorted(expected_ids("cfonb120-multi.txt"))


async def test_the_watcher_waits_until_a_growing_file_is_complete(
    watcher: Watcher, kafka_broker: EmbeddedBroker, topics: Topics
) -> None:
    lines = (SAMPLES / "cfonb120-multi.txt").read_bytes().splitlines(keepends=True)
    path = watcher.folder / "growing.txt"
    with path.open("wb") as out:
        for line in lines:  # ~27 writes, 4 per poll: never the same size twice in a row
            out.write(line)
            out.flush()
            await asyncio.sleep(POLL / 4)
        assert watcher.results == []

    await eventually(lambda: watcher.settled("growing.txt"), "growing.txt settled")
    await polls(5)
    [result] = watcher.results
    assert result.report.ok
    assert result.moved_to == watcher.folder / DONE / "growing.txt"
    assert list(result.report.statement_ids) == expected_ids("cfonb120-multi.txt")
    assert len(await received(kafka_broker, topics)) == 6  # once, and whole


async def test_the_watcher_quarantines_a_broken_file_and_ignores_partial_names(
    watcher: Watcher, kafka_broker: EmbeddedBroker, topics: Topics
) -> None:
    for ignored in (".hidden.txt", "upload.tmp", "releve.PART"):
        (watcher.folder / ignored).write_bytes((SAMPLES / "mt940-multi.sta").read_bytes())
    drop("cfonb120-truncated.txt", watcher.folder)
    drop("mt940-multi.sta", watcher.folder)

    await eventually(lambda: len(watcher.results) == 2, "two results")
    await polls(5)

    quarantined = watcher.folder / QUARANTINE / "cfonb120-truncated.txt"
    assert quarantined.exists()
    error = json.loads(quarantined.with_name("cfonb120-truncated.txt.error.json").read_text())
    assert (error["line"], error["code"]) == (4, "malformed_record")
    assert (watcher.folder / DONE / "mt940-multi.sta").exists()
    assert sorted(p.name for p in watcher.folder.iterdir() if p.is_file()) == [
        ".hidden.txt",
        "releve.PART",
        "upload.tmp",
    ]
    events = decoded(await received(kafka_broker, topics))
    assert sorted(e.statement_id for e in events) == sorted(expected_ids("mt940-multi.sta"))


async def test_a_file_dropped_twice_under_one_name_is_kept_twice(
    watcher: Watcher, kafka_broker: EmbeddedBroker, topics: Topics
) -> None:
    drop("mt940-multi.sta", watcher.folder)
    await eventually(lambda: len(watcher.results) == 1, "one result")
    drop("mt940-multi.sta", watcher.folder)
    await eventually(lambda: len(watcher.results) == 2, "two results")

    assert sorted(p.name for p in (watcher.folder / DONE).iterdir()) == [
        "mt940-multi.1.sta",
        "mt940-multi.sta",
    ]
    ids = [e.statement_id for e in decoded(await received(kafka_broker, topics))]
    assert Counter(ids) == Counter({sid: 2 for sid in expected_ids("mt940-multi.sta")})


async def test_the_watcher_keeps_a_file_through_a_broker_outage_then_publishes_it(
    tmp_path: Path, own_broker: EmbeddedBroker
) -> None:
    """The broker freezes (SIGSTOP): the file stays in the drop folder, never in done/,
    and once the broker is back the retry publishes the file's ids."""
    broker = own_broker
    topics = Topics(prefix="outage", partitions=3)
    folder = tmp_path / "drop"
    folder.mkdir()
    producer: AIOKafkaProducer | None = None
    running: Watcher | None = None
    frozen = False
    try:
        await ensure_topics(broker.bootstrap_servers, topics.specs([]))
        producer = make_producer(
            ProducerParams(broker.bootstrap_servers, client_id="outage", request_timeout_ms=1_000)
        )
        await producer.start()
        running = Watcher(folder, functools.partial(publish_file, producer, topics))
        assert broker.pid is not None
        os.kill(broker.pid, signal.SIGSTOP)
        frozen = True
        path = drop("cfonb120-multi.txt", folder)

        await asyncio.sleep(3.0)  # two polls, then at least one timed-out attempt
        assert path.exists()
        assert running.results == []
        assert not any((folder / DONE).iterdir())

        os.kill(broker.pid, signal.SIGCONT)
        frozen = False
        await eventually(lambda: running.results, "a result")
        assert (folder / DONE / path.name).exists()
        events = decoded(await read_topic(broker.bootstrap_servers, topics.received))
        # A timed-out request may still have been written: duplicates, never other ids.
        assert {e.statement_id for e in events} == set(expected_ids(path.name))
    finally:
        if frozen and broker.pid is not None:
            os.kill(broker.pid, signal.SIGCONT)
        if running is not None:
            await running.close()
        if producer is not None:
            await producer.stop()
