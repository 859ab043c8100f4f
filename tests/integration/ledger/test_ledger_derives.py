"""The ledger derives "routed" and "held" from the router's own events (issue 18, target 1).

The router writes no ``delivery.outcome/v1`` any more; the ledger reads the partner topics
(by pattern), ``statements.global-file`` and ``statements.held`` beside
``deliveries.outcomes``. These tests check, on a real broker and a real SQLite store, that
``GET /statements/{id}`` (and so ``statement-router trace``, the same
``StatementTraceOut``) tells the story the router's outcome records used to tell: same
kinds, connectors and details (``partner:acd``, ``global-file``, ``held:<reason>``, the
`` (released from held)`` note), in time order even when a delivery is read first; that an
invalid record on a routed topic is parked with its reason; and that a batch read again
adds nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import func, select

from config.catalogue import default_catalogue
from config.settings import Settings
from events.schemas import DeliveryOutcome, IbanStateEvent, StatementInvalid
from events.topics import Topics
from routing.broker import read_topic
from routing.broker.process import BrokerProcess
from routing.domain.decide import decide
from routing.domain.model import Profile
from routing.entrypoints.api.app import create_app
from routing.entrypoints.bootstrap import run_ledger, run_router
from routing.ports import UnknownStatement
from routing.router import RouterTuning
from routing.router.codec import parse_statement, statement_fields
from routing.router.emit import build_routed
from routing.services.ledger import LedgerConsumer
from routing.store.global_file import SqlGlobalFileStore
from routing.store.ledger import SqlDeliveryLedger
from routing.store.migrate import upgrade
from routing.store.sql import SqlStateStore
from routing.store.tables import delivery_ledger
from tests.eventually import eventually
from tests.unit.router.factories import make_iban, state, statement

TUNING = RouterTuning(session_timeout=6.0, heartbeat_interval=0.5, rebalance_timeout=6.0)
PENDING, UNBOUND, NOT_ON_CABINET, UNKNOWN = (make_iban(n) for n in (6101, 6102, 6103, 6104))



def steps(body: dict[str, Any]) -> list[tuple[str, str | None, str | None]]:
    return [(o["outcome"], o["connector_id"], o["detail"]) for o in body["outcomes"]]


async def test_the_trace_tells_the_routers_story_from_its_routed_and_held_events(
    kafka_broker: BrokerProcess,
    topics: Topics,
    sqlite_url: str,
    tmp_path: Path,
    unique_group: Callable[..., str],
    producer: AIOKafkaProducer,
) -> None:
    """The real router and the real ledger: held, released to a partner, global file,
    held for a connector reason, held for an unknown IBAN, each traced as before."""
    bootstrap = kafka_broker.bootstrap_servers
    await upgrade(sqlite_url)
    store = SqlStateStore.from_url(sqlite_url)
    await store.create_cabinet("cab-a", "Cabinet A")
    user = await store.create_user("cab-a", Profile.COLLABORATEUR)
    admin = await store.authenticate((await store.create_user(
        "cab-a", Profile.ADMINISTRATEUR)).token)
    settings = Settings(data_dir=tmp_path)
    stop = asyncio.Event()
    roles = [
        asyncio.create_task(
            run_router(settings, topics, default_catalogue(), stop, bootstrap_servers=bootstrap,
                       app_id=unique_group("router"), tuning=TUNING)
        ),
        asyncio.create_task(
            run_ledger(settings, topics, store.engine, stop, bootstrap_servers=bootstrap)
        ),
    ]
    ledger = SqlDeliveryLedger(store.engine)
    app = create_app(store, default_catalogue(), global_file=SqlGlobalFileStore(store.engine),
                     ledger=ledger)
    headers = {"Authorization": f"Bearer {user.token}"}
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")

    async def trace(sid: str) -> httpx.Response:
        return await client.get(f"/statements/{sid}", headers=headers)

    try:
        for iban, kwargs in (
            (PENDING, {"connector_id": "acd", "mandate_status": "pending"}),
            (UNBOUND, {"connector_id": None}),
            (NOT_ON_CABINET, {"connector_id": "acd", "connector_on_cabinet": False}),
        ):
            await producer.send_and_wait(
                topics.iban_state, state(iban, cabinet_id="cab-a", **kwargs), key=iban.encode()
            )
        for sid, iban in (("h1", PENDING), ("g1", UNBOUND), ("n1", NOT_ON_CABINET),
                          ("k1", UNKNOWN)):
            await producer.send_and_wait(topics.received, statement(sid, iban),
                                         key=iban.encode())
        await eventually(lambda: trace("h1"), "h1 held, in the ledger",
                         done=lambda r: r.status_code == 200 and r.json()["status"] == "held")
        # The mandate is approved: h1 is released to its partner.
        await producer.send_and_wait(
            topics.iban_state,
            state(PENDING, cabinet_id="cab-a", connector_id="acd", version=2),
            key=PENDING.encode(),
        )
        released = await eventually(
            lambda: trace("h1"), "h1 released, in the ledger",
            done=lambda r: r.status_code == 200 and r.json()["status"] == "routed",
        )
        unbound = await eventually(lambda: trace("g1"), "g1 routed, in the ledger",
                                   done=lambda r: r.status_code == 200)
        not_on_cabinet = await eventually(lambda: trace("n1"), "n1 held, in the ledger",
                                          done=lambda r: r.status_code == 200)
        unknown = await eventually(lambda: ledger.operator_trace("k1"), "k1 held, in the ledger")
        unknown_to_user = await trace("k1")
        outcomes_topic = await read_topic(bootstrap, topics.outcomes)
    finally:
        stop.set()
        results = await asyncio.wait_for(asyncio.gather(*roles, return_exceptions=True), 90)
        await client.aclose()
        await store.close()
    for result in results:
        assert not isinstance(result, BaseException), result

    # The router wrote no outcome record: every step below was derived by the ledger.
    assert outcomes_topic == []

    body = released.json()
    assert steps(body) == [
        ("held", None, "held:mandate_pending"),
        ("routed", "acd", "partner:acd (released from held)"),
    ]
    assert body["summary"] == "routed: connector acd, partner:acd (released from held)"
    assert body["outcomes"][0]["at"] < body["outcomes"][1]["at"]
    routing = body["routing"]
    assert (routing["destination"], routing["reason"], routing["connector_id"]) == (
        "partner", "bound", "acd")
    assert (routing["source"], routing["state_version"]) == ("outcome", 2)
    assert [c["name"] for c in routing["checks"]] == [
        "connector_on_cabinet", "iban_bound", "mandate_approved", "connector_configured"]

    body = unbound.json()
    assert steps(body) == [("routed", None, "global-file")]
    assert body["status"] == "routed" and body["routing"]["destination"] == "global-file"
    assert body["cabinet_id"] == "cab-a"

    body = not_on_cabinet.json()
    assert steps(body) == [("held", "acd", "held:connector_not_on_cabinet")]
    assert body["summary"] == "held: connector acd, held:connector_not_on_cabinet"
    assert body["routing"]["reason"] == "connector_not_on_cabinet"

    # Held for an unknown IBAN: nobody's statement, an operator's trace only.
    assert unknown is not None and unknown.cabinet_id == ""
    assert [(e.outcome, e.detail) for e in unknown.entries] == [("held", "held:unknown_iban")]
    assert unknown_to_user.status_code == 404
    with pytest.raises(UnknownStatement):
        await ledger.trace(admin, "k1")


def _routed_events(topics: Topics, decided: datetime) -> dict[str, tuple[str, bytes, bytes]]:
    """The router's own records for one statement held, then released to acd: built by
    ``routing.router.emit``, the code the router sends them with."""
    received = statement_fields(parse_statement(statement("s1", PENDING)))
    pending = IbanStateEvent.model_validate_json(
        state(PENDING, connector_id="acd", mandate_status="pending")).to_domain()
    approved = IbanStateEvent.model_validate_json(
        state(PENDING, connector_id="acd", version=2)).to_domain()
    catalogue = default_catalogue()
    [held] = build_routed(received, decide(pending, pending, catalogue), pending, topics,
                          decided.isoformat())
    [routed] = build_routed(received, decide(approved, approved, catalogue), approved, topics,
                            (decided + timedelta(minutes=1)).isoformat(), released=True)
    assert held.value is not None and routed.value is not None
    return {"held": (held.topic, held.key, held.value),
            "routed": (routed.topic, routed.key, routed.value)}


async def test_derived_entries_read_in_time_order_invalid_ones_parked_a_reread_adds_nothing(
    kafka_broker: BrokerProcess,
    topics: Topics,
    sqlite_url: str,
    tmp_path: Path,
    producer: AIOKafkaProducer,
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    await upgrade(sqlite_url)
    store = SqlStateStore.from_url(sqlite_url)
    ledger = SqlDeliveryLedger(store.engine)
    decided = datetime(2026, 1, 6, 7, 0, tzinfo=UTC)
    events = _routed_events(topics, decided)
    delivered = DeliveryOutcome(
        statement_id="s1", outcome="delivered", at=decided + timedelta(minutes=2),
        iban=PENDING, cabinet_id="cab-1", connector_id="acd", attempt=1,
        content_sha256=parse_statement(statement("s1", PENDING)).content_sha256,
    )
    partner = events["routed"][0]
    assert partner == topics.partner("acd")

    async def count() -> int:
        async with store.engine.connect() as conn:
            return int((await conn.execute(
                select(func.count()).select_from(delivery_ledger))).scalar_one())

    async def run(stop: asyncio.Event) -> dict[str, int]:
        return await run_ledger(Settings(data_dir=tmp_path), topics, store.engine, stop,
                                bootstrap_servers=bootstrap)

    stop = asyncio.Event()
    task = asyncio.create_task(run(stop))
    try:
        # The delivery is read first, the routing after it (two topics, no order between
        # them): the trace still reads held, routed, delivered.
        await producer.send_and_wait(topics.outcomes, delivered.to_json(), key=b"s1")
        await eventually(count, "the delivery recorded", done=lambda n: n == 1)
        await producer.send_and_wait(partner, events["routed"][2], key=events["routed"][1])
        await producer.send_and_wait(topics.held, events["held"][2], key=events["held"][1])
        # An invalid record on a partner topic and one on the held topic: parked, and the
        # consumer goes on (the valid record after them is recorded).
        await producer.send_and_wait(
            partner, b'{"schema": "statement.partner-delivery/v1", "statement_id": "bad-1"}',
            key=PENDING.encode())
        await producer.send_and_wait(topics.held, b"not json", key=PENDING.encode())
        await producer.send_and_wait(topics.global_file, events["held"][2], key=b"cab-1")
        invalid = await eventually(
            lambda: read_topic(bootstrap, topics.invalid), "three records parked",
            done=lambda records: len(records) == 3,
        )
        await eventually(count, "held and routed recorded", done=lambda n: n == 3)
    finally:
        stop.set()
        first = await asyncio.wait_for(task, 60)
    assert first == {"records": 6, "recorded": 3, "duplicates": 0, "invalid": 3}

    trace = await ledger.operator_trace("s1")
    assert trace is not None and trace.status == "delivered"
    assert [(e.outcome, e.connector_id, e.detail) for e in trace.entries] == [
        ("held", None, "held:mandate_pending"),
        ("routed", "acd", "partner:acd (released from held)"),
        ("delivered", "acd", None),
    ]
    assert trace.routing is not None and trace.routing["source"] == "outcome"
    assert trace.routing["state_version"] == 2

    parked = [StatementInvalid.model_validate_json(r.value) for r in invalid]
    by_topic = {p.source_topic: p for p in parked}
    assert {p.detected_by for p in parked} == {"ledger"}
    assert by_topic[partner].statement_id == "bad-1"
    assert by_topic[partner].reason.startswith("field `iban`: Field required")
    assert by_topic[topics.held].reason.startswith("value is not JSON")
    assert by_topic[topics.global_file].reason == (
        "schema 'statement.held/v1' is not accepted on statements.global-file "
        "(expected 'statement.global-file/v1')")
    # A held event on the global-file topic is not a global-file event.
    assert "statement.global-file/v1" in by_topic[topics.global_file].reason

    # The ledger stopped before committing (a crash): its next run reads the same records
    # again, all of them here, and records nothing new.
    batch = [r for t in (topics.outcomes, topics.held, topics.global_file, partner)
             for r in await read_topic(bootstrap, t)]
    again = LedgerConsumer(ledger, producer, topics, store.engine)
    try:
        await again.handle(batch)
        total = await count()
    finally:
        await store.close()
    assert again.stats == {"records": 6, "recorded": 0, "duplicates": 3, "invalid": 3}
    assert total == 3
