"""The router and the size rule, on both brokers: statements at the limit routed whole to a
partner, to the global file and out of held; one byte over and 20 MB refused to
``statements.invalid`` with their size, by reference; 0.9 MB malformed records on both
inputs parked and referred while the valid records behind them are routed."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.structs import RecordMetadata
from structlog.testing import capture_logs

from config.catalogue import default_catalogue
from config.settings import Settings
from events.limits import MAX_RECORD_BYTES, MAX_STATEMENT_BYTES
from events.schemas import (
    StatementGlobalFile,
    StatementHeld,
    StatementInvalid,
    StatementPartnerDelivery,
)
from events.topics import Topics
from routing.broker import EmbeddedBroker, ProducerParams, make_producer, read_topic
from routing.router import RouterApp, RouterTuning, create_router_app
from tests.eventually import eventually
from tests.integration.limits.helpers import (
    AT_LIMIT,
    MALFORMED,
    ONE_OVER,
    TWENTY_MB,
    parked,
)
from tests.unit.router.factories import make_iban, state, statement, statement_doc

TUNING = RouterTuning(session_timeout=6.0, heartbeat_interval=0.5, rebalance_timeout=6.0)
BOUND = make_iban(7001)
UNBOUND = make_iban(7002)
PENDING = make_iban(7003)


class Router:
    def __init__(self, bootstrap: str, topics: Topics, app: RouterApp,
                 producer: AIOKafkaProducer) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.app = app
        self.producer = producer

    async def state(self, iban: str, **kwargs: Any) -> None:
        await self.producer.send_and_wait(
            self.topics.iban_state, state(iban, **kwargs), key=iban.encode()
        )
        version = kwargs.get("version", 1)

        def applied() -> bool:
            value = self.app.tables.get_state(iban)
            return value is not None and value["version"] >= version

        await eventually(applied, f"state v{version} of {iban} applied")

    async def raw(self, topic: str, value: bytes, key: bytes) -> RecordMetadata:
        return await self.producer.send_and_wait(topic, value, key=key)

    async def statement(self, sid: str, iban: str, content: bytes | None = None) -> None:
        extra = {} if content is None else {"content": content}
        await self.raw(self.topics.received, statement(sid, iban, **extra), iban.encode())

    async def records(self, topic: str, count: int) -> list[Any]:
        return await eventually(
            lambda: read_topic(self.bootstrap, topic, timeout=30),
            f"{count} records on {topic}",
            done=lambda found: len(found) >= count,
        )

    async def invalid(self, count: int) -> list[StatementInvalid]:
        return [StatementInvalid.model_validate_json(r.value)
                for r in await self.records(self.topics.invalid, count)]


@pytest.fixture
async def router(
    kafka_broker: EmbeddedBroker, topics: Topics, tmp_path: Path
) -> AsyncIterator[Router]:
    app = create_router_app(
        Settings(data_dir=tmp_path), topics, default_catalogue(),
        bootstrap_servers=kafka_broker.bootstrap_servers, tuning=TUNING,
    )
    # A feed producer sized for the rule (docs/ingest.md): aiokafka's default would refuse
    # a statement at the limit before the broker sees it.
    producer = make_producer(ProducerParams(kafka_broker.bootstrap_servers))
    await producer.start()
    try:
        await app.start()
        try:
            yield Router(kafka_broker.bootstrap_servers, topics, app, producer)
        finally:
            await app.stop()
    finally:
        await producer.stop()


async def test_statements_at_the_limit_are_routed_whole_and_one_byte_over_is_refused(
    router: Router,
) -> None:
    t = router.topics
    await router.state(BOUND, connector_id="acd")
    await router.state(UNBOUND, connector_id=None)
    await router.statement("at-limit-partner", BOUND, AT_LIMIT)
    await router.statement("at-limit-global", UNBOUND, AT_LIMIT)
    await router.statement("one-over", BOUND, ONE_OVER)
    await router.statement("after", BOUND)

    partner = await router.records(t.partner("acd"), 2)
    assert [StatementPartnerDelivery.model_validate_json(r.value).statement_id
            for r in partner] == ["at-limit-partner", "after"]
    delivery = StatementPartnerDelivery.model_validate_json(partner[0].value)
    assert base64.b64decode(delivery.content_b64) == AT_LIMIT
    assert len(partner[0].value) <= MAX_RECORD_BYTES
    [global_file] = await router.records(t.global_file, 1)
    entry = StatementGlobalFile.model_validate_json(global_file.value)
    assert entry.statement_id == "at-limit-global"
    assert base64.b64decode(entry.content_b64) == AT_LIMIT

    [refused] = await router.invalid(1)
    assert refused.reason.startswith(
        f"statement of {MAX_STATEMENT_BYTES + 1} bytes of content is over the limit of "
        f"{MAX_STATEMENT_BYTES} bytes (MAX_STATEMENT_BYTES)"
    )
    assert refused.statement_id == "one-over" and refused.payload_omitted
    assert refused.raw_b64 == "" and refused.source_topic == t.received
    [source] = [r for r in await read_topic(router.bootstrap, t.received)
                if r.offset == refused.source_offset and r.partition == refused.source_partition]
    assert len(source.value) == refused.payload_bytes  # the reference finds the input


@pytest.mark.parametrize("reason", ["mandate_pending", "unknown_iban"])
async def test_a_statement_held_at_the_limit_is_released_whole(
    router: Router, reason: str
) -> None:
    """Held while its mandate is pending, or while its IBAN is unknown (no state yet), then
    released when the mandate is approved or the IBAN added: the whole 1 MiB goes out."""
    t = router.topics
    if reason == "mandate_pending":
        await router.state(PENDING, connector_id="cegid", mandate_status="pending")
    await router.statement("held-at-limit", PENDING, AT_LIMIT)
    [held] = await router.records(t.held, 1)
    assert StatementHeld.model_validate_json(held.value).routing.reason == reason
    await router.state(PENDING, version=2, connector_id="cegid", mandate_status="approved")
    [released] = await router.records(t.partner("cegid"), 1)
    delivery = StatementPartnerDelivery.model_validate_json(released.value)
    assert delivery.statement_id == "held-at-limit"
    assert base64.b64decode(delivery.content_b64) == AT_LIMIT
    assert len(released.value) <= MAX_RECORD_BYTES
    assert await read_topic(router.bootstrap, t.invalid) == []


async def test_a_20_mb_statement_is_refused_at_the_edge_never_deep_in_the_pipeline(
    router: Router, broker_kind: str
) -> None:
    t = router.topics
    await router.state(BOUND, connector_id="acd")
    big = statement("twenty", BOUND, content=b"T" * TWENTY_MB)
    if broker_kind == "kafka":
        # Kafka enforces the topics' max.message.bytes: the record never enters the
        # pipeline, the producer's own check refuses it first.
        with pytest.raises(MessageSizeTooLargeError):
            await router.raw(t.received, big, BOUND.encode())
    else:
        # Tansu enforces no size: a producer sized for it (or another client) gets the
        # 27 MB record in, and the router refuses it, copying none of it.
        wide = make_producer(ProducerParams(router.bootstrap, max_request_size=64 * 2**20))
        await wide.start()
        try:
            await wide.send_and_wait(t.received, big, key=BOUND.encode())
        finally:
            await wide.stop()
        [refused] = await router.invalid(1)
        assert refused.reason.startswith(
            f"statement record of {len(big)} bytes is over the limit of {MAX_RECORD_BYTES} "
            "bytes for a statements.received record"
        )
        assert refused.payload_omitted and refused.payload_bytes == len(big)
        assert refused.statement_id == "twenty"
        [record] = await read_topic(router.bootstrap, t.invalid)
        assert len(record.value) < 2_000
    await router.statement("after", BOUND)
    assert [r.key for r in await router.records(t.partner("acd"), 1)] == [BOUND.encode()]


@pytest.mark.parametrize("kind", sorted(MALFORMED))
async def test_a_malformed_record_of_0_9_mb_on_each_input_is_parked_and_referred(
    router: Router, kind: str
) -> None:
    t = router.topics
    before = parked("router", "referred")
    value = MALFORMED[kind]()
    await router.state(BOUND, connector_id="acd")
    with capture_logs() as logs:
        bad = [await router.raw(t.received, value, BOUND.encode()),
               await router.raw(t.iban_state, value, UNBOUND.encode())]
        await router.statement("behind", BOUND)
        await router.state(UNBOUND, connector_id=None)
        await router.statement("behind-too", UNBOUND)

        await router.records(t.partner("acd"), 1)
        await router.records(t.global_file, 1)
        refused = await router.invalid(2)
    assert sorted((r.source_topic, r.source_partition, r.source_offset) for r in refused) == (
        sorted((m.topic, m.partition, m.offset) for m in bad)
    )
    for event in refused:
        assert event.payload_omitted and event.payload_bytes == len(value)
        assert event.raw_b64 == ""
        assert (
            f"(the value, {len(value)} bytes, is not copied here: read it at "
            f"{event.source_topic} partition {event.source_partition} offset "
            f"{event.source_offset})"
        ) in event.reason
    assert all(len(r.value) < 4_000 for r in await read_topic(router.bootstrap, t.invalid))
    assert parked("router", "referred") - before == 2
    lines = [e for e in logs if e["event"] == "record_invalid"]
    assert sorted((e["topic"], e["partition"], e["offset"]) for e in lines) == sorted(
        (m.topic, m.partition, m.offset) for m in bad
    )
    assert all(e["payload_bytes"] == len(value) for e in lines)


async def test_a_record_one_byte_over_the_record_limit_is_refused_by_reference(
    router: Router,
) -> None:
    """On both brokers (Kafka takes it: it is under the topics' 2 MiB): a statement within
    the content limit whose record is padded one byte over 1,463,640 is refused unparsed,
    referred to, and the router goes on."""
    t = router.topics
    await router.state(BOUND, connector_id="acd")
    doc = statement_doc("padded", BOUND, content=AT_LIMIT)
    bare = len(orjson.dumps({**doc, "padding": ""}))
    value = orjson.dumps({**doc, "padding": "p" * (MAX_RECORD_BYTES + 1 - bare)})
    assert len(value) == MAX_RECORD_BYTES + 1
    source = await router.raw(t.received, value, BOUND.encode())
    await router.statement("after", BOUND)

    [refused] = await router.invalid(1)
    assert refused.reason.startswith(
        f"statement record of {MAX_RECORD_BYTES + 1} bytes is over the limit of "
        f"{MAX_RECORD_BYTES} bytes for a statements.received record"
    )
    assert refused.statement_id == "padded" and refused.payload_omitted
    assert refused.payload_bytes == MAX_RECORD_BYTES + 1 and refused.raw_b64 == ""
    assert (refused.source_topic, refused.source_partition, refused.source_offset) == (
        source.topic, source.partition, source.offset
    )
    [delivered] = await router.records(t.partner("acd"), 1)
    assert StatementPartnerDelivery.model_validate_json(delivered.value).statement_id == "after"
