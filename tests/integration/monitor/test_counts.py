"""Held, invalid and dead-lettered counts, from a real router's topics and changelogs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from adapters.dlq import list_dead_letters, replay_dead_letters
from config.catalogue import default_catalogue
from config.settings import Settings
from events.schemas import DeliveryAttempt, StatementDeadLetter
from events.topics import Topics
from routing.broker import EmbeddedBroker, read_topic
from routing.observability import metrics
from routing.observability.monitor.model import MonitorSnapshot
from routing.observability.monitor.sampler import Monitor
from routing.router import RouterApp, RouterTuning, create_router_app
from routing.store.ledger import SqlDeliveryLedger
from tests.eventually import eventually
from tests.unit.delivery.factories import make_delivery
from tests.unit.router.factories import make_iban, state, statement

TUNING = RouterTuning(session_timeout=6.0, heartbeat_interval=0.5, rebalance_timeout=6.0)
UNKNOWN = make_iban(7001)  # no state at all: held as unknown_iban, no connector
PENDING_ACD = make_iban(7002)  # bound to acd, mandate pending: held, for acd
RELEASED = make_iban(7003)  # bound to cegid, pending then approved: held, then released


@pytest.fixture
async def router(
    kafka_broker: EmbeddedBroker, topics: Topics, tmp_path: Path
) -> AsyncIterator[RouterApp]:
    app = create_router_app(Settings(data_dir=tmp_path), topics, default_catalogue(),
                            bootstrap_servers=kafka_broker.bootstrap_servers, tuning=TUNING)
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


async def eventually_records(bootstrap: str, topic: str, count: int) -> None:
    await eventually(lambda: read_topic(bootstrap, topic), f"{count} records on {topic}",
                     interval=0.2, done=lambda records: len(records) >= count)


async def state_applied(router: RouterApp, producer: AIOKafkaProducer, topics: Topics,
                        iban: str, **kwargs: object) -> None:
    await producer.send_and_wait(topics.iban_state, state(iban, **kwargs), key=iban.encode())
    version = kwargs.get("version", 1)
    await eventually(lambda: router.tables.get_state(iban), f"state v{version} applied",
                     done=lambda value: value is not None and value["version"] >= version)


async def sample_when(monitor: Monitor, held_now: int) -> MonitorSnapshot:
    """Sample until the router's held changelog shows ``held_now`` parked statements (its
    records follow the step's routed outputs, so they may land a moment later)."""
    return await eventually(lambda: monitor.sample(counts=True), f"{held_now} held now",
                            interval=0.2,
                            done=lambda snap: snap.held is not None
                            and snap.held.current == held_now)


async def test_held_counts_statements_parked_now_not_ever(
    kafka_broker: EmbeddedBroker, topics: Topics, router: RouterApp, producer: AIOKafkaProducer
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    await state_applied(router, producer, topics, PENDING_ACD, connector_id="acd",
                        mandate_status="pending")
    await state_applied(router, producer, topics, RELEASED, connector_id="cegid",
                        mandate_status="pending")
    sends = [
        (UNKNOWN, "u1"), (UNKNOWN, "u2"), (PENDING_ACD, "a1"), (RELEASED, "r1"), (RELEASED, "r2"),
    ]
    for iban, sid in sends:
        await producer.send_and_wait(topics.received, statement(sid, iban), key=iban.encode())
    await producer.send_and_wait(topics.received, b"not json", key=UNKNOWN.encode())
    await producer.send_and_wait(topics.received, b"{}", key=None)
    await eventually_records(bootstrap, topics.held, 5)
    await eventually_records(bootstrap, topics.invalid, 2)

    monitor = Monitor(bootstrap, topics, default_catalogue())
    before = await sample_when(monitor, 5)
    assert before.held is not None
    assert (before.held.ibans, before.held.audit_events) == (3, 5)

    # Approving RELEASED routes its two parked statements to cegid: no longer held, but
    # statements.held keeps its audit of them.
    await state_applied(router, producer, topics, RELEASED, version=2, connector_id="cegid",
                        mandate_status="approved")
    await eventually_records(bootstrap, topics.partner("cegid"), 2)
    snap = await sample_when(monitor, 3)
    held = snap.held
    assert held is not None and held.available
    assert held.source == f"{topics.prefix}.router-held-changelog"
    assert (held.current, held.ibans, held.audit_events) == (3, 2, 5)
    assert dict(held.by_reason) == {"unknown_iban": 2, "mandate_pending": 1}
    assert dict(held.by_connector) == {None: 2, "acd": 1}
    assert snap.invalid == 2
    assert snap.connectors is not None
    per_connector = {c.connector_id: c.held for c in snap.connectors}
    assert per_connector == {"acd": 1, "cegid": 0, "quadra": 0, "pennylane": 0}
    # The router's own gauge says the same, per reason, without any changelog read.
    assert router.core.held_by_reason() == {"unknown_iban": 2, "mandate_pending": 1}
    assert {reason: metrics.REGISTRY.get_sample_value(
        "statement_router_held_statements", {"reason": reason})
        for reason in ("unknown_iban", "mandate_pending")} == {
        "unknown_iban": 2, "mandate_pending": 1}

    doc = snap.topics_dict()
    assert doc["held"] == {
        "current": 3, "ibans": 2, "by_reason": {"mandate_pending": 1, "unknown_iban": 2},
        "without_connector": 2, "audit_events": 5, "source": held.source, "available": True}
    assert doc["invalid"] == 2
    assert UNKNOWN not in str(doc) and PENDING_ACD not in str(doc)  # no IBAN is exposed


def dead_letter(statement_id: str) -> StatementDeadLetter:
    now = datetime.now(UTC)
    return StatementDeadLetter(
        connector_id="acd",
        statement_id=statement_id,
        reason="HTTP 400 from the partner",
        attempts=(DeliveryAttempt(attempt=1, at=now, error="HTTP 400", status_code=400),),
        dead_lettered_at=now,
        delivery=make_delivery(statement_id),
    )


def open_counts(snap: MonitorSnapshot) -> dict[str, tuple[int | None, int | None]]:
    assert snap.connectors is not None
    return {c.connector_id: (c.dead_letters, c.dead_letters_open) for c in snap.connectors}


async def test_dead_letters_total_and_open_per_connector(
    kafka_broker: EmbeddedBroker, topics: Topics, producer: AIOKafkaProducer,
    ledger: SqlDeliveryLedger,
) -> None:
    """Open = the DLQ's records less the places replayed outcomes name, as the ledger
    recorded them: the same numbers ``dlq list`` reads from the topics."""
    bootstrap = kafka_broker.bootstrap_servers
    for sid in ("d1", "d2", "d3"):
        letter = dead_letter(sid)
        await producer.send_and_wait(topics.partner_dlq("acd"), letter.to_json(),
                                     key=letter.delivery.iban.encode())
    monitor = Monitor(bootstrap, topics, default_catalogue(), ledger=ledger)
    snap = await monitor.sample(counts=True)
    assert open_counts(snap) == {"acd": (3, 3), "cegid": (0, 0), "quadra": (0, 0),
                                 "pennylane": (0, 0)}

    report = await replay_dead_letters(bootstrap, topics, "acd", statement_ids=["d2"])
    assert report.replayed == ["d2"]
    async def sample() -> MonitorSnapshot:
        return await monitor.sample(counts=True)

    def acd_open(expected: int) -> Callable[[MonitorSnapshot], bool]:
        return lambda snap: open_counts(snap)["acd"] == (3, expected)

    after = await eventually(sample, "d2's replay in the ledger", done=acd_open(2))
    listed = await list_dead_letters(bootstrap, topics, "acd")
    assert sum(1 for e in listed if e.open) == 2  # the topic-reading rule agrees
    assert after.held is not None and not after.held.available  # no router ran here

    # Replaying it again (force) closes nothing more; the others close when replayed.
    await replay_dead_letters(bootstrap, topics, "acd", statement_ids=["d2"], force=True)
    await replay_dead_letters(bootstrap, topics, "acd", statement_ids=["d1"])
    await eventually(sample, "d1's replay in the ledger", done=acd_open(1))
    listed = await list_dead_letters(bootstrap, topics, "acd")
    assert sum(1 for e in listed if e.open) == 1


async def test_without_a_ledger_the_open_count_is_unknown(
    kafka_broker: EmbeddedBroker, topics: Topics, producer: AIOKafkaProducer
) -> None:
    letter = dead_letter("d1")
    assert letter.delivery is not None
    await producer.send_and_wait(topics.partner_dlq("acd"), letter.to_json(),
                                 key=letter.delivery.iban.encode())
    snap = await Monitor(kafka_broker.bootstrap_servers, topics, default_catalogue()).sample()
    assert open_counts(snap)["acd"] == (1, None)
    assert open_counts(snap)["cegid"] == (0, 0)
