"""The router against the embedded broker: records in, routed records out.

Statements go to ``statements.received`` and states to ``iban.state``; the tests read the
output topics back. A test that needs "state applied, then statement" waits until the
router's Table holds the version before producing the statement.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from config.catalogue import default_catalogue
from config.settings import Settings
from events.schemas import StatementInvalid, StatementPartnerDelivery
from events.topics import Topics
from routing.broker import EmbeddedBroker, ProducerParams, make_producer, read_topic
from routing.entrypoints.bootstrap import run_router
from routing.router import RouterApp, RouterTuning, create_router_app
from tests.eventually import eventually
from tests.unit.router.factories import BAD_IBAN, make_iban, state, statement, statement_doc

TUNING = RouterTuning(session_timeout=6.0, heartbeat_interval=0.5, rebalance_timeout=6.0)
IBAN = make_iban(1001)


class Pipeline:
    def __init__(self, broker: EmbeddedBroker, topics: Topics, router: RouterApp,
                 producer: AIOKafkaProducer) -> None:
        self.bootstrap = broker.bootstrap_servers
        self.topics = topics
        self.router = router
        self.producer = producer

    async def state(self, iban: str, **kwargs: Any) -> None:
        await self.producer.send_and_wait(self.topics.iban_state, state(iban, **kwargs),
                                          key=iban.encode())

    async def state_applied(self, iban: str, **kwargs: Any) -> None:
        """Publish a state and wait until the router's Table holds its version."""
        await self.state(iban, **kwargs)
        version = kwargs.get("version", 1)

        def applied() -> bool:
            value = self.router.tables.get_state(iban)
            return value is not None and value["version"] >= version

        await eventually(applied, f"state v{version} applied")

    async def statement(self, sid: str, iban: str = IBAN) -> None:
        await self.raw(statement(sid, iban), iban.encode())

    async def raw(self, value: bytes | None, key: bytes | None) -> None:
        await self.producer.send_and_wait(self.topics.received, value, key=key)

    async def records(self, topic: str, count: int, within: float = 60.0) -> list[Any]:
        """The records of ``topic`` once there are at least ``count`` of them."""
        return await read_until(self.bootstrap, topic, count, within)

    async def ids(self, topic: str, count: int) -> list[str]:
        return [json.loads(r.value)["statement_id"] for r in await self.records(topic, count)]


def router_for(broker: EmbeddedBroker, topics: Topics, data_dir: Path,
               catalogue: Any = None) -> RouterApp:
    return create_router_app(
        Settings(data_dir=data_dir),
        topics,
        default_catalogue() if catalogue is None else catalogue,
        bootstrap_servers=broker.bootstrap_servers,
        tuning=TUNING,
    )


@pytest.fixture
async def pipeline(
    kafka_broker: EmbeddedBroker, topics: Topics, tmp_path: Path
) -> AsyncIterator[Pipeline]:
    router = router_for(kafka_broker, topics, tmp_path)
    producer = make_producer(ProducerParams(kafka_broker.bootstrap_servers))
    await producer.start()
    try:
        await router.start()
        try:
            yield Pipeline(kafka_broker, topics, router, producer)
        finally:
            await router.stop()
    finally:
        await producer.stop()


async def test_binding_then_unbinding_moves_the_next_statements(pipeline: Pipeline) -> None:
    t = pipeline.topics
    await pipeline.state_applied(IBAN, version=1, connector_id=None)
    await pipeline.statement("s1")
    assert await pipeline.ids(t.global_file, 1) == ["s1"]
    await pipeline.state_applied(IBAN, version=2, connector_id="acd")
    await pipeline.statement("s2")
    await pipeline.statement("s3")
    assert await pipeline.ids(t.partner("acd"), 2) == ["s2", "s3"]
    await pipeline.state_applied(IBAN, version=3, connector_id=None)
    await pipeline.statement("s4")
    assert await pipeline.ids(t.global_file, 2) == ["s1", "s4"]
    assert await pipeline.ids(t.partner("acd"), 2) == ["s2", "s3"]
    # The router writes no outcome record: the ledger derives "routed" from these topics.
    assert await read_topic(pipeline.bootstrap, t.outcomes) == []


async def test_a_pending_mandate_parks_statements_until_approval(pipeline: Pipeline) -> None:
    t = pipeline.topics
    await pipeline.state_applied(IBAN, version=1, connector_id="cegid", mandate_status="pending")
    for sid in ("p1", "p2", "p3"):
        await pipeline.statement(sid)
    assert await pipeline.ids(t.held, 3) == ["p1", "p2", "p3"]
    assert await read_topic(pipeline.bootstrap, t.partner("cegid")) == []
    await pipeline.state(IBAN, version=2, connector_id="cegid", mandate_status="approved")
    assert await pipeline.ids(t.partner("cegid"), 3) == ["p1", "p2", "p3"]
    await pipeline.statement("p4")
    assert await pipeline.ids(t.partner("cegid"), 4) == ["p1", "p2", "p3", "p4"]
    event = StatementPartnerDelivery.model_validate_json(
        (await read_topic(pipeline.bootstrap, t.partner("cegid")))[0].value
    )
    assert event.routing.state_version == 2


async def test_invalid_input_goes_to_invalid_and_the_stream_goes_on(pipeline: Pipeline) -> None:
    t = pipeline.topics
    await pipeline.state_applied(IBAN, version=1, connector_id="acd")
    bad_schema = json.dumps({**statement_doc("x2", IBAN), "schema": "nope/v1"}).encode()
    await pipeline.statement("v1")
    await pipeline.raw(b"\x00\x01 not json", IBAN.encode())
    await pipeline.raw(bad_schema, IBAN.encode())
    await pipeline.raw(statement("x3", BAD_IBAN), BAD_IBAN.encode())
    await pipeline.statement("v2")
    invalid = await pipeline.records(t.invalid, 3)
    reasons = [StatementInvalid.model_validate_json(r.value).reason for r in invalid]
    assert len(reasons) == 3
    assert any("not JSON" in r for r in reasons)
    assert any("unknown schema 'nope/v1'" in r for r in reasons)
    assert any("field `iban`" in r for r in reasons)
    assert await pipeline.ids(t.partner("acd"), 2) == ["v1", "v2"]


async def test_run_router_runs_until_stopped(
    kafka_broker: EmbeddedBroker, topics: Topics, tmp_path: Path
) -> None:
    stop = asyncio.Event()
    started = asyncio.Event()
    task = asyncio.create_task(
        run_router(Settings(data_dir=tmp_path), topics, default_catalogue(), stop, started=started,
                   bootstrap_servers=kafka_broker.bootstrap_servers, tuning=TUNING)
    )
    producer = make_producer(ProducerParams(kafka_broker.bootstrap_servers))
    await producer.start()
    try:
        await asyncio.wait_for(started.wait(), 60)
        await producer.send_and_wait(topics.iban_state, state(IBAN, connector_id=None),
                                     key=IBAN.encode())
        await producer.send_and_wait(topics.received, statement("r1", IBAN), key=IBAN.encode())
        await read_until(kafka_broker.bootstrap_servers, topics.global_file, 1)
    finally:
        stop.set()
        stats = await asyncio.wait_for(task, 60)
        await producer.stop()
    assert stats["statements"] == 1 and stats["global-file"] == 1


async def read_until(bootstrap: str, topic: str, count: int, within: float = 60.0) -> list[Any]:
    """The records of ``topic`` once there are at least ``count`` of them."""
    return await eventually(
        lambda: read_topic(bootstrap, topic),
        f"{count} records on {topic}",
        within=within,
        interval=0.2,
        done=lambda found: len(found) >= count,
    )


async def test_the_sink_sends_its_batches_without_lingering(
    kafka_broker: EmbeddedBroker, topics: Topics
) -> None:
    # The sink hands over complete batches and a routing step waits for their acks, so a
    # lingering batch would hold every step back by linger_ms. With a producer lingering
    # 90 s, the records must be acknowledged well before (the wait_for makes the failure
    # an error rather than a wait of 90 s; it is not a measurement).
    from routing.router.emit import Out
    from routing.router.sink import KafkaSink

    params = ProducerParams(kafka_broker.bootstrap_servers, linger_ms=90_000)
    sink = KafkaSink(make_producer(params))
    await sink.start()
    try:
        outs = [Out(topics.held, IBAN.encode(), f"v{n}".encode()) for n in range(3)]
        acks = await sink.send_many(outs)
        done = await asyncio.wait_for(asyncio.gather(*acks), timeout=30)
    finally:
        await sink.stop()
    assert [ack.topic for ack in done] == [topics.held]
    records = await read_topic(kafka_broker.bootstrap_servers, topics.held)
    assert [r.value for r in records] == [b"v0", b"v1", b"v2"]
