"""A monitor refresh costs offset queries and one SQL query, however many records the
topics hold (issue 18, operator reads in constant time).

Every record the monitor's consumers fetch from the real broker is counted (a pass-through
around aiokafka's ``getmany``, filtered on the monitor's client id, so the ledger's own
consumer is not counted). Each topic ends with one-record batches, so the end-offset probe
(``true_end_offsets``: on Tansu it re-reads the last batch) fetches at most one record per
partition: anything above that would be a scan.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from config.catalogue import default_catalogue
from events.dead_letters import replay_detail
from events.schemas import DeliveryAttempt, DeliveryOutcome, StatementDeadLetter
from events.topics import Topics, TopicSpec
from routing.broker import EmbeddedBroker, ensure_topics
from routing.observability.monitor.model import MonitorSnapshot
from routing.observability.monitor.sampler import Monitor
from routing.store.ledger import SqlDeliveryLedger
from tests.eventually import eventually
from tests.unit.delivery.factories import make_delivery
from tests.unit.router.factories import make_iban

MONITOR_CLIENT = "statement-router-monitor"
HELD_A, HELD_B, BOUND = make_iban(8101), make_iban(8102), make_iban(8103)


class Fetched:
    """Records the monitor's consumers fetched, per topic, since the last ``reset``."""

    def __init__(self) -> None:
        self.records: Counter[str] = Counter()

    def reset(self) -> None:
        self.records.clear()


@pytest.fixture
def fetched(monkeypatch: pytest.MonkeyPatch) -> Iterator[Fetched]:
    seen = Fetched()
    real = AIOKafkaConsumer.getmany

    async def counting(self: AIOKafkaConsumer, *partitions: Any, **kwargs: Any) -> Any:
        batch = await real(self, *partitions, **kwargs)
        if self._client._client_id == MONITOR_CLIENT:
            for tp, records in batch.items():
                seen.records[tp.topic] += len(records)
        return batch

    monkeypatch.setattr(AIOKafkaConsumer, "getmany", counting)
    yield seen


def outcome(n: int) -> bytes:
    return DeliveryOutcome(
        statement_id=f"o-{n}", outcome="delivered", at=datetime.now(UTC), iban=BOUND,
        cabinet_id="cab-1", connector_id="acd", attempt=1, detail="HTTP 200",
    ).to_json()


async def fill(producer: AIOKafkaProducer, topic: str, partitions: int,
               values: list[tuple[bytes, bytes | None]]) -> None:
    """``values`` sent in batches (as a busy producer does), then one record alone on each
    partition, so that every partition's last batch holds one record."""
    futures = [await producer.send(topic, value, key=key) for key, value in values]
    await asyncio.gather(*futures)
    for p in range(partitions):
        await producer.send_and_wait(topic, outcome(-1 - p), key=b"tail", partition=p)


async def more_outcomes(producer: AIOKafkaProducer, topics: Topics, first: int,
                        count: int) -> None:
    await fill(producer, topics.outcomes, topics.partitions,
               [(f"o-{n}".encode(), outcome(n)) for n in range(first, first + count)])


def held_record(iban: str, offset: int, reason: str) -> tuple[bytes, bytes]:
    """A record of the router's held Table changelog (key ``iban|partition|offset``)."""
    key = json.dumps(f"{iban}|0|{offset}").encode()
    return key, json.dumps({"raw": "{}", "partition": 0, "offset": offset, "reason": reason,
                            "held_at": "2026-12-04T08:00:00+00:00"}).encode()


def state_record(iban: str, connector_id: str | None) -> tuple[bytes, bytes]:
    return json.dumps(iban).encode(), json.dumps(
        {"iban": iban, "connector_id": connector_id, "version": 1}).encode()


def dead_letter(statement_id: str) -> StatementDeadLetter:
    now = datetime.now(UTC)
    return StatementDeadLetter(
        connector_id="acd", statement_id=statement_id, reason="HTTP 400 from the partner",
        attempts=(DeliveryAttempt(attempt=1, at=now, error="HTTP 400", status_code=400),),
        dead_lettered_at=now, delivery=make_delivery(statement_id),
    )


def connector(snap: MonitorSnapshot, connector_id: str) -> tuple[Any, ...]:
    found = next(c for c in snap.connectors or () if c.connector_id == connector_id)
    return found.held, found.dead_letters, found.dead_letters_open


def at_most_one_per_partition(fetched: Fetched, topics: Topics) -> None:
    over = {t: n for t, n in fetched.records.items() if n > topics.partitions}
    assert over == {}, f"a refresh read more than the end-offset probe: {over}"


async def test_a_refresh_reads_no_topic_whatever_it_holds(
    kafka_broker: EmbeddedBroker, topics: Topics, producer: AIOKafkaProducer,
    ledger: SqlDeliveryLedger, fetched: Fetched,
) -> None:
    bootstrap, n = kafka_broker.bootstrap_servers, topics.partitions
    monitor = Monitor(bootstrap, topics, default_catalogue(), ledger=ledger)
    await ensure_topics(bootstrap, [
        TopicSpec(name, n, "compact", "", "", "")
        for name in (monitor.held_changelog, monitor.state_changelog)])
    await more_outcomes(producer, topics, 0, 500)
    places = []
    for sid in ("d1", "d2", "d3"):
        letter = dead_letter(sid)
        meta = await producer.send_and_wait(topics.partner_dlq("acd"), letter.to_json(),
                                            key=b"k")
        places.append((meta.partition, meta.offset))
    await fill(producer, monitor.state_changelog, n, [
        state_record(make_iban(9000 + i), "cegid") for i in range(300)
    ] + [state_record(HELD_B, "acd"), state_record(BOUND, "acd")])
    for i, (iban, reason) in enumerate([(HELD_A, "unknown_iban"), (HELD_A, "unknown_iban"),
                                        (HELD_B, "mandate_pending")]):
        key, value = held_record(iban, i, reason)
        await producer.send_and_wait(monitor.held_changelog, value, key=key, partition=0)
    # One dead letter replayed: the outcome the replay writes, recorded by the ledger.
    replayed = DeliveryOutcome(
        statement_id="d2", outcome="replayed", at=datetime.now(UTC), connector_id="acd",
        detail=replay_detail(topics.partner_dlq("acd"), [places[1]]))
    await producer.send_and_wait(topics.outcomes, replayed.to_json(), key=b"d2")

    async def sample() -> MonitorSnapshot:
        return await monitor.sample(counts=True)

    def replay_recorded(snap: MonitorSnapshot) -> bool:
        return connector(snap, "acd")[2] == 2

    # The first sample folds the two changelogs once (the only full read).
    first = await eventually(sample, "the replay in the ledger", done=replay_recorded)
    assert first.held is not None
    assert (first.held.current, dict(first.held.by_reason)) == (
        3, {"unknown_iban": 2, "mandate_pending": 1})
    assert connector(first, "acd") == (1, 3, 2)

    fetched.reset()
    again = await sample()
    at_most_one_per_partition(fetched, topics)
    assert fetched.records[monitor.held_changelog] <= n  # not folded again
    probe = fetched.records[topics.outcomes]
    assert (again.held, connector(again, "acd")) == (first.held, (1, 3, 2))

    # Ten times the outcomes: the same reads, the same answer.
    await more_outcomes(producer, topics, 500, 5000)
    fetched.reset()
    bigger = await sample()
    at_most_one_per_partition(fetched, topics)
    assert fetched.records[topics.outcomes] == probe
    assert connector(bigger, "acd") == (1, 3, 2)
    assert bigger.held == first.held

    # The held changelog moves: only its new records are read (one more statement of a
    # held IBAN, one released), not the changelog again.
    for key, value in (held_record(HELD_A, 7, "unknown_iban"),
                       (held_record(HELD_B, 2, "mandate_pending")[0], None)):
        await producer.send_and_wait(monitor.held_changelog, value, key=key, partition=0)
    fetched.reset()
    moved = await sample()
    assert moved.held is not None
    assert (moved.held.current, dict(moved.held.by_reason)) == (3, {"unknown_iban": 3})
    assert connector(moved, "acd") == (0, 3, 2)
    assert fetched.records[monitor.held_changelog] <= n + 2
    over = {t: c for t, c in fetched.records.items()
            if c > n and t != monitor.held_changelog}
    assert over == {}, over
