"""The ledger consumer against the embedded broker and a SQLite store: each outcome
recorded once, however often it is read; invalid records reported, never skipped."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

from aiokafka import AIOKafkaProducer
from sqlalchemy import func, select

from config.settings import Settings
from events.schemas import DeliveryOutcome, StatementInvalid
from events.topics import Topics
from routing.broker import EmbeddedBroker, read_topic
from routing.entrypoints.bootstrap import run_ledger
from routing.store.engine import create_store_engine
from routing.store.migrate import upgrade
from routing.store.tables import delivery_ledger
from tests.eventually import eventually
from tests.integration.global_file.factories import iban

ROUTING = {
    "destination": "partner",
    "reason": "bound",
    "checks": [
        {"name": "connector_on_cabinet", "ok": True},
        {"name": "iban_bound", "ok": True},
        {"name": "mandate_approved", "ok": True},
    ],
    "state_version": 4,
    "decided_at": "2026-01-06T07:00:00+00:00",
}



def outcome(statement_id: str, kind: str, attempt: int | None = None) -> DeliveryOutcome:
    return DeliveryOutcome(
        statement_id=statement_id,
        outcome=kind,
        at=datetime(2026, 1, 6, 7, attempt or 0, tzinfo=UTC),
        iban=iban(1),
        cabinet_id="cab-a",
        connector_id="acd",
        attempt=attempt,
        detail="partner:acd" if kind == "routed" else None,
    )


async def test_each_outcome_is_recorded_once(
    kafka_broker: EmbeddedBroker,
    topics: Topics,
    sqlite_url: str,
    tmp_path: Path,
    producer: AIOKafkaProducer,
) -> None:
    await upgrade(sqlite_url)
    engine = create_store_engine(sqlite_url)
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_ledger(Settings(data_dir=tmp_path), topics, engine, stop,
                   bootstrap_servers=kafka_broker.bootstrap_servers)
    )

    async def ledger_rows() -> list[tuple[str, str, int | None, object]]:
        async with engine.connect() as conn:
            rows = await conn.execute(
                select(delivery_ledger.c.statement_id, delivery_ledger.c.outcome,
                       delivery_ledger.c.attempt, delivery_ledger.c.routing)
                .order_by(delivery_ledger.c.id)
            )
            return [tuple(row) for row in rows]

    try:
        routed = json.loads(outcome("s1", "routed").to_json())
        routed["routing"] = ROUTING  # a producer that adds the trace (compatible field)
        routed_bytes = json.dumps(routed).encode()
        send = producer.send_and_wait
        await send(topics.outcomes, routed_bytes, key=b"s1")
        await send(topics.outcomes, outcome("s1", "retrying", 1).to_json(), key=b"s1")
        await send(topics.outcomes, b'{"schema": "delivery.outcome/v9"}', key=b"s1")
        await eventually(ledger_rows, "two entries", done=lambda rows: len(rows) == 2)
        # The same records again, read later (a producer retry, or a replayed partition).
        await send(topics.outcomes, routed_bytes, key=b"s1")
        await send(topics.outcomes, outcome("s1", "retrying", 1).to_json(), key=b"s1")
        await send(topics.outcomes, outcome("s1", "delivered", 2).to_json(), key=b"s1")
        rows = await eventually(ledger_rows, "three entries", done=lambda rows: len(rows) == 3)
    finally:
        stop.set()
        stats = await asyncio.wait_for(task, 60)
        async with engine.connect() as conn:
            total = (
                await conn.execute(select(func.count()).select_from(delivery_ledger))
            ).scalar_one()
        await engine.dispose()
    assert total == 3
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("s1", "routed", None), ("s1", "retrying", 1), ("s1", "delivered", 2),
    ]
    assert rows[0][3] == {**ROUTING, "decided_at": "2026-01-06T07:00:00Z"}
    assert stats == {"records": 6, "recorded": 3, "duplicates": 2, "invalid": 1}
    invalid = await read_topic(kafka_broker.bootstrap_servers, topics.invalid)
    assert len(invalid) == 1
    event = StatementInvalid.model_validate_json(invalid[0].value)
    assert event.detected_by == "ledger"
    assert event.reason == "unknown schema 'delivery.outcome/v9' (expected 'delivery.outcome/v1')"
