"""Issue 13 item 1 (adapters) and issue 14 item 11: no record crash-loops a connector, one
connector never stops the others, and a stopped or disabled connector is enabled again
without restarting the process.

Real session broker (Tansu and Kafka), real webhook partners (``receiver``), the real
``run_adapters``. The one injected fault is ``Poison``: an error that escapes the
deliverer for one statement id (a bug, memory exhausted), which the worker cannot handle
and must not loop on; it goes through the public ``deliverer_factory`` hook.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass

import pytest

from adapters.delivery import Deliverer, DeliveryResult, PartnerEndpoint
from adapters.delivery.webhook import webhook_id
from adapters.dlq import RecordGone, list_dead_letters, replay_dead_letters
from adapters.worker import AdapterCrashed, ConnectorStats, default_deliverer, run_adapters
from config.settings import Settings
from events.limits import MAX_RECORD_BYTES, MAX_STATEMENT_BYTES
from events.schemas import ParkedRecord, StatementDeadLetter, StatementPartnerDelivery
from events.topics import Topics
from routing.broker import EmbeddedBroker, ProducerParams, make_producer, read_topic
from routing.broker.adapters_control import read_control, worker_states
from routing.entrypoints.bootstrap import run_adapters_role
from routing.observability.metrics import REGISTRY
from routing.observability.monitor.service import monitor_service
from tests.eventually import eventually
from tests.fixtures.broker import TopicsFactory
from tests.integration.ops_api import Ops
from tests.unit.delivery.factories import make_delivery

from .conftest import (
    SHORT,
    committed_total,
    dead_letters,
    outcomes,
    produce,
    produce_raw,
    webhook,
)
from .receiver import Reply, WebhookReceiver
from .test_cli import acli


class Poison(BaseException):
    """A fault no worker can handle (a bug, memory exhausted): it escapes the record."""


class PoisonedDeliverer:
    """The real deliverer, except that the ``poison`` statements raise ``Poison``."""

    def __init__(self, inner: Deliverer, poison: Iterable[str]) -> None:
        self.inner = inner
        self.poison = set(poison)
        self.calls: Counter[str] = Counter()

    async def deliver(self, delivery: StatementPartnerDelivery) -> DeliveryResult:
        if delivery.statement_id in self.poison:
            self.calls[delivery.statement_id] += 1
            raise Poison(f"poisoned by {delivery.statement_id}")
        return await self.inner.deliver(delivery)

    async def close(self) -> None:
        await self.inner.close()


@dataclass
class Pool:
    stats: dict[str, ConnectorStats]
    task: asyncio.Task[dict[str, ConnectorStats]]


def start_pool(
    kafka_broker: EmbeddedBroker,
    topics: Topics,
    endpoints: Mapping[str, PartnerEndpoint],
    *,
    settings: Settings,
    poisoned: Mapping[str, PoisonedDeliverer] | None = None,
) -> tuple[Pool, asyncio.Event, asyncio.Event]:
    """``run_adapters`` in a task; ``poisoned`` replaces some connectors' deliverers."""
    stop, started = asyncio.Event(), asyncio.Event()
    stats: dict[str, ConnectorStats] = {}

    def factory(connector_id: str, endpoint: PartnerEndpoint) -> Deliverer:
        if poisoned and connector_id in poisoned:
            return poisoned[connector_id]
        return default_deliverer(connector_id, endpoint)

    bootstrap = kafka_broker.bootstrap_servers
    task = asyncio.create_task(run_adapters_role(settings, bootstrap, lambda producer: run_adapters(
        settings, topics, endpoints, stop, producer=producer, bootstrap_servers=bootstrap,
        schedule=SHORT, deliverer_factory=factory, stats=stats, started=started,
        session_timeout_ms=2_000)))
    return Pool(stats, task), stop, started


@contextlib.asynccontextmanager
async def pool_running(
    kafka_broker: EmbeddedBroker,
    topics: Topics,
    endpoints: Mapping[str, PartnerEndpoint],
    *,
    settings: Settings | None = None,
    poisoned: Mapping[str, PoisonedDeliverer] | None = None,
) -> AsyncIterator[Pool]:
    pool, stop, started = start_pool(kafka_broker, topics, endpoints,
                                     settings=settings or Settings(), poisoned=poisoned)
    try:
        await eventually(lambda: started.is_set() or pool.task.done(), "the adapters to start")
        if pool.task.done():
            await pool.task
        yield pool
    finally:
        stop.set()
        await asyncio.wait_for(pool.task, 60)


def cli_env(bootstrap: str, topics: Topics) -> dict[str, str]:
    return {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "TOPIC_PREFIX": topics.prefix,
            "TOPIC_PARTITIONS": str(topics.partitions)}


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def parked_total(how: str) -> float:
    return sample("statement_router_parked_total", component="adapters", how=how)


def content_of(size: int, seed: str) -> bytes:
    """``size`` bytes that do not compress to nothing (a bank file is not all zeros)."""
    block = hashlib.sha256(seed.encode()).hexdigest().encode()
    return (block * (size // len(block) + 1))[:size]


async def worker_state(kafka_broker: EmbeddedBroker, topics: Topics, connector_id: str) -> str:
    states = worker_states(await read_control(kafka_broker.bootstrap_servers, topics))
    state = states.get(connector_id)
    return state.state or "" if state is not None else ""


# ------------------------------------------------------------------ size and parking


async def test_a_413_on_a_statement_whose_dead_letter_exceeds_the_limit_parks_it(
    kafka_broker: EmbeddedBroker, topics: Topics, receiver: WebhookReceiver
) -> None:
    """A record over the size rule (produced by another system) that the partner refuses:
    its copy would be a dead letter over MAX_RECORD_BYTES, so a parked one refers to it;
    the statements behind it, in its partition, go on; replay re-reads and delivers it."""
    bootstrap = kafka_broker.bootstrap_servers
    acd = receiver.partner("acd")  # answers 413 to bodies over 1 MiB, as aiohttp does
    big = make_delivery("st-big", content=content_of(MAX_STATEMENT_BYTES + 64 * 1024, "big"))
    assert len(big.to_json()) > MAX_RECORD_BYTES - 16 * 1024
    behind = [make_delivery(f"st-next-{i}") for i in range(5)]  # same IBAN: same partition
    referred_before = parked_total("referred")
    await produce(bootstrap, topics, "acd", [big, *behind])

    async with pool_running(kafka_broker, topics, {"acd": webhook(acd)}) as pool:
        await eventually(lambda: len(receiver.delivered("acd")) == 5, "the 5 behind it")
        await eventually(lambda: committed_total(bootstrap, topics, "acd", 6), "the commit")
        assert pool.stats["acd"].parked == 1 and pool.stats["acd"].dead_lettered == 1

    assert [h.status for h in receiver.of("acd")][:1] == [413]
    [letter] = await dead_letters(bootstrap, topics, "acd")
    assert letter["delivery"] is None
    parked = letter["parked"]
    assert parked["topic"] == topics.partner("acd") and parked["offset"] == 0
    assert parked["payload_bytes"] == len(big.to_json())
    assert "*" in parked["iban"] and big.iban not in json.dumps(letter)
    assert "413" in letter["reason"] and "record limit" in letter["reason"]
    assert parked_total("referred") == referred_before + 1
    found = await outcomes(bootstrap, topics)
    assert [o["outcome"] for o in found if o["statement_id"] == "st-big"] == ["dead_lettered"]

    [entry] = await list_dead_letters(bootstrap, topics, "acd")
    assert entry.summary()["parked"]["offset"] == 0 and entry.open
    listed = await acli("dlq", "list", "--connector", "acd", env=cli_env(bootstrap, topics))
    assert listed.returncode == 0, listed.stderr
    assert (f"parked: not copied; the record is {topics.partner('acd')} partition "
            f"{parked['partition']} offset 0 ({parked['payload_bytes']} bytes)") in listed.stdout
    acd.max_body = None  # the partner raised its limit: the replay goes through
    report = await replay_dead_letters(bootstrap, topics, "acd", statement_ids=["st-big"])
    assert report.replayed == ["st-big"]
    async with pool_running(kafka_broker, topics, {"acd": webhook(acd)}):
        await eventually(lambda: [h for h in receiver.delivered("acd")
                                  if h.statement_id == "st-big"], "the replayed big one")
    [hit] = [h for h in receiver.delivered("acd") if h.statement_id == "st-big"]
    assert hit.webhook_id == webhook_id(big) and hit.verified


async def test_a_statement_at_the_limit_is_dead_lettered_whole_and_replayed(
    kafka_broker: EmbeddedBroker, topics: Topics, receiver: WebhookReceiver
) -> None:
    """At the limit the dead letter still fits the rule: it is a copy, and replays as one."""
    bootstrap = kafka_broker.bootstrap_servers
    acd = receiver.partner("acd")
    content = content_of(MAX_STATEMENT_BYTES, "limit")
    at_limit = make_delivery("st-limit", content=content)
    await produce(bootstrap, topics, "acd", [at_limit, make_delivery("st-after")])

    async with pool_running(kafka_broker, topics, {"acd": webhook(acd)}) as pool:
        await eventually(lambda: receiver.delivered("acd"), "the one behind it")
        await eventually(lambda: pool.stats["acd"].dead_lettered == 1, "the dead letter")
        assert pool.stats["acd"].parked == 0

    [letter] = await dead_letters(bootstrap, topics, "acd")
    assert letter["parked"] is None
    assert base64.b64decode(letter["delivery"]["content_b64"]) == content
    [raw] = [r for r in await _dlq_records(kafka_broker, topics)]
    assert len(raw) <= MAX_RECORD_BYTES

    acd.max_body = None
    await replay_dead_letters(bootstrap, topics, "acd", statement_ids=["st-limit"])
    async with pool_running(kafka_broker, topics, {"acd": webhook(acd)}):
        await eventually(lambda: [h for h in receiver.delivered("acd")
                                  if h.statement_id == "st-limit"], "the replay")


async def _dlq_records(kafka_broker: EmbeddedBroker, topics: Topics) -> list[bytes]:
    records = await read_topic(kafka_broker.bootstrap_servers, topics.partner_dlq("acd"))
    return [r.value for r in records if r.value is not None]


async def test_replaying_a_parked_dead_letter_whose_record_is_gone_says_so(
    kafka_broker: EmbeddedBroker, topics: Topics
) -> None:
    """Retention deleted the record (here: it never was at that offset): the replay fails
    plainly for that statement, and --all skips it, reporting it, leaving it open."""
    bootstrap = kafka_broker.bootstrap_servers
    from datetime import UTC, datetime

    letter = StatementDeadLetter(
        connector_id="acd", statement_id="st-gone", reason="parked: test",
        attempts=(), dead_lettered_at=datetime.now(UTC),
        parked=ParkedRecord(topic=topics.partner("acd"), partition=0, offset=41,
                            payload_bytes=10, iban="FR76 **** 189", cabinet_id="cab-1",
                            key="0123456789abcdef"))
    producer = make_producer(ProducerParams(bootstrap))
    await producer.start()
    try:
        await (await producer.send(topics.partner_dlq("acd"), letter.to_json(), key=b"k"))
    finally:
        await producer.stop()

    with pytest.raises(RecordGone, match="gone from the topic"):
        await replay_dead_letters(bootstrap, topics, "acd", statement_ids=["st-gone"])
    refused = await acli("dlq", "replay", "--connector", "acd", "--statement", "st-gone",
                         env=cli_env(bootstrap, topics))
    assert refused.returncode == 5, refused.stderr
    assert "gone from the topic (deleted by retention)" in refused.stderr
    assert "Traceback" not in refused.stderr
    report = await replay_dead_letters(bootstrap, topics, "acd")
    assert report.replayed == [] and report.gone == ["st-gone"]
    [entry] = await list_dead_letters(bootstrap, topics, "acd")
    assert entry.open and entry.summary()["iban"] == "FR76 **** 189"


async def test_a_0_9_mb_malformed_record_is_referred_and_the_ones_behind_it_delivered(
    kafka_broker: EmbeddedBroker, topics: Topics, receiver: WebhookReceiver
) -> None:
    """Its statements.invalid record refers to it (no 0.9 MB copy, no base64 over the
    producer's limit), and the valid statements of its partition go on."""
    bootstrap = kafka_broker.bootstrap_servers
    acd = receiver.partner("acd")
    delivery = make_delivery("st-after-junk")
    junk = b'{"statement_id": "st-junk", "content_b64": "' + b"A" * 900_000 + b'"'
    referred_before = parked_total("referred")
    await produce_raw(bootstrap, topics.partner("acd"), junk, delivery.iban.encode())
    await produce(bootstrap, topics, "acd", [delivery])

    async with pool_running(kafka_broker, topics, {"acd": webhook(acd)}) as pool:
        await eventually(lambda: receiver.delivered("acd"), "the statement behind it")
        assert pool.stats["acd"].invalid == 1

    [record] = await read_topic(bootstrap, topics.invalid)
    invalid = json.loads(record.value)
    assert invalid["payload_omitted"] is True and invalid["payload_bytes"] == len(junk)
    assert (invalid["source_topic"], invalid["source_offset"]) == (topics.partner("acd"), 0)
    assert invalid["detected_by"] == "adapter:acd"
    assert len(record.value) < 10_000
    assert parked_total("referred") == referred_before + 1


async def _topics_with_a_small_dlq(
    kafka_broker: EmbeddedBroker, make_topics: TopicsFactory, max_message_bytes: int
) -> Topics:
    """Topics for acd whose DLQ was created by hand with a smaller ``max.message.bytes``."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from routing.broker.admin import ensure_topics

    topics = await make_topics(connector_ids=[])
    [partner] = [t for t in topics.specs(["acd"]) if t.name == topics.partner("acd")]
    await ensure_topics(kafka_broker.bootstrap_servers, [partner])
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(
            topics.partner_dlq("acd"), topics.partitions, 1,
            topic_configs={"max.message.bytes": str(max_message_bytes)})])
    finally:
        await admin.close()
    return topics


async def test_a_dead_letter_the_broker_refuses_for_its_size_is_parked(
    kafka_broker: EmbeddedBroker, broker_kind: str, make_topics: TopicsFactory,
    receiver: WebhookReceiver,
) -> None:
    """A DLQ topic created by hand with a 100 KB max.message.bytes: the 270 KB copy is
    refused by the broker, the parked dead letter (a few hundred bytes) is written instead."""
    if broker_kind == "tansu":
        pytest.skip("Tansu does not enforce max.message.bytes")
    topics = await _topics_with_a_small_dlq(kafka_broker, make_topics, 100_000)
    bootstrap = kafka_broker.bootstrap_servers
    acd = receiver.partner("acd")
    acd.script(Reply(400))
    big = make_delivery("st-200k", content=content_of(200_000, "200k"))
    await produce(bootstrap, topics, "acd", [big, make_delivery("st-behind")])

    async with pool_running(kafka_broker, topics, {"acd": webhook(acd)}) as pool:
        await eventually(lambda: receiver.delivered("acd"), "the one behind it")
        assert pool.stats["acd"].parked == 1

    [letter] = await dead_letters(bootstrap, topics, "acd")
    assert letter["delivery"] is None and letter["parked"]["offset"] == 0
    assert "the broker refused its" in letter["reason"]


async def test_a_dead_letter_that_cannot_be_written_at_all_stops_then_parks_unwritten(
    kafka_broker: EmbeddedBroker, broker_kind: str, make_topics: TopicsFactory,
    receiver: WebhookReceiver,
) -> None:
    """A DLQ that refuses even the parked form (max.message.bytes=200): the worker stops
    (a fatal error), and the next start, ADAPTER_MAX_CRASHES=1 later, parks the record
    unwritten (logged, counted how="unwritable") and delivers the rest."""
    if broker_kind == "tansu":
        pytest.skip("Tansu does not enforce max.message.bytes")
    topics = await _topics_with_a_small_dlq(kafka_broker, make_topics, 200)
    bootstrap = kafka_broker.bootstrap_servers
    acd = receiver.partner("acd")
    acd.script(Reply(400))
    settings = Settings(adapter_max_crashes=1)
    await produce(bootstrap, topics, "acd",
                  [make_delivery("st-refused"), make_delivery("st-then")])
    unwritable_before = parked_total("unwritable")

    pool, _, _ = start_pool(kafka_broker, topics, {"acd": webhook(acd)}, settings=settings)
    with pytest.raises(AdapterCrashed, match="parked dead letter"):
        await asyncio.wait_for(pool.task, 60)
    async with pool_running(kafka_broker, topics, {"acd": webhook(acd)},
                            settings=settings) as pool:
        await eventually(lambda: receiver.delivered("acd"), "the statement behind it")
        assert pool.stats["acd"].parked == 1

    assert parked_total("unwritable") == unwritable_before + 1
    assert await dead_letters(bootstrap, topics, "acd") == []
    assert [h.statement_id for h in receiver.of("acd")] == ["st-refused", "st-then"]
    found = [o for o in await outcomes(bootstrap, topics) if o["statement_id"] == "st-refused"]
    assert [o["outcome"] for o in found] == ["dead_lettered"]


# ------------------------------------------------------------------ crashes


async def test_after_n_crashes_on_one_record_the_next_start_parks_it(
    kafka_broker: EmbeddedBroker, topics: Topics, receiver: WebhookReceiver
) -> None:
    """A record on which the worker crashes every time: with ADAPTER_MAX_CRASHES=2, two
    starts crash (the process stops: its only worker stopped), the third parks it without
    touching it and delivers the rest. The count lives in the control topic, so it survives
    each of these process restarts."""
    bootstrap = kafka_broker.bootstrap_servers
    acd = receiver.partner("acd")
    settings = Settings(adapter_max_crashes=2)
    await produce(bootstrap, topics, "acd",
                  [make_delivery("st-ok-0"), make_delivery("st-poison"),
                   *(make_delivery(f"st-ok-{i}") for i in range(1, 4))])
    unwritable_before = parked_total("unwritable")

    poisoned = PoisonedDeliverer(default_deliverer("acd", webhook(acd)), ["st-poison"])
    for run in (1, 2):
        pool, _, _ = start_pool(kafka_broker, topics, {"acd": webhook(acd)},
                                settings=settings, poisoned={"acd": poisoned})
        with pytest.raises(AdapterCrashed, match="every adapter worker of this process stopped"):
            await asyncio.wait_for(pool.task, 60)
        assert poisoned.calls["st-poison"] == run
        assert pool.stats["acd"].state == "stopped"

    async with pool_running(kafka_broker, topics, {"acd": webhook(acd)}, settings=settings,
                            poisoned={"acd": poisoned}) as pool:
        await eventually(lambda: {h.statement_id for h in receiver.delivered("acd")}
                         >= {f"st-ok-{i}" for i in range(4)}, "every other statement")
        await eventually(lambda: committed_total(bootstrap, topics, "acd", 5), "the commit")
        assert pool.stats["acd"].parked == 1

    assert poisoned.calls["st-poison"] == 2  # the third start did not try it again
    [letter] = await dead_letters(bootstrap, topics, "acd")
    assert letter["delivery"] is None and letter["parked"]["offset"] == 1
    assert "crashed 2 times" in letter["reason"]
    assert parked_total("unwritable") == unwritable_before
    marks = [r for r in await read_control(bootstrap, topics)
             if r.kind == "crash_count" and r.offset == 1]
    assert max(m.crashes or 0 for m in marks) == 2
    # st-ok-0 was delivered once per start before the poison... or once: at-least-once.
    assert {h.statement_id for h in receiver.delivered("acd")} == {
        f"st-ok-{i}" for i in range(4)}


# ------------------------------------------------------------------ isolation, enable


async def test_one_poisoned_connector_stops_alone_and_enable_resumes_it(
    kafka_broker: EmbeddedBroker, topics: Topics, receiver: WebhookReceiver
) -> None:
    """Two connectors in one process; acd's worker meets a poison record and stops: it is
    reported stopped (control topic, monitor, metric) while pennylane delivers everything.
    ``statement-router adapters enable acd`` (the real CLI) restarts acd's worker, which
    parks the poison (ADAPTER_MAX_CRASHES=1) and delivers the rest."""
    bootstrap = kafka_broker.bootstrap_servers
    acd, penny = receiver.partner("acd"), receiver.partner("pennylane")
    settings = Settings(adapter_max_crashes=1)
    await produce(bootstrap, topics, "acd",
                  [make_delivery("st-poison", connector_id="acd"),
                   *(make_delivery(f"st-acd-{i}", connector_id="acd") for i in range(5))])
    penny_ids = {f"st-pl-{i}" for i in range(30)}
    poisoned = PoisonedDeliverer(default_deliverer("acd", webhook(acd)), ["st-poison"])
    endpoints = {"acd": webhook(acd), "pennylane": webhook(penny)}

    async with pool_running(kafka_broker, topics, endpoints, settings=settings,
                            poisoned={"acd": poisoned}) as pool:
        await eventually(lambda: pool.stats["acd"].state == "stopped", "acd stopped")
        await produce(bootstrap, topics, "pennylane",
                      [make_delivery(sid, connector_id="pennylane") for sid in sorted(penny_ids)])
        await eventually(lambda: {h.statement_id for h in receiver.delivered("pennylane")}
                         == penny_ids, "pennylane's 30 statements")
        assert not pool.task.done()
        assert receiver.delivered("acd") == []
        assert sample("statement_router_connector_worker_up", connector="acd") == 0
        assert sample("statement_router_connector_worker_up", connector="pennylane") == 1
        assert await worker_state(kafka_broker, topics, "acd") == "stopped"
        snap = await monitor_service(bootstrap, topics, ["acd", "pennylane"]).snapshot(
            counts=True)
        by_id = {c.connector_id: c for c in snap.connectors or ()}
        assert by_id["acd"].worker == "stopped" and "poisoned" in (by_id["acd"].worker_reason
                                                                   or "")
        assert by_id["pennylane"].worker == "running"

        result = await acli("adapters", "enable", "acd", "--wait", "60",
                            env=cli_env(bootstrap, topics))
        assert result.returncode == 0, result.stderr
        assert "acd: worker running again" in result.stdout
        await eventually(lambda: len(receiver.delivered("acd")) == 5, "acd's other 5")
        assert pool.stats["acd"].state == "running" and pool.stats["acd"].parked == 1
        assert sample("statement_router_connector_worker_up", connector="acd") == 1

    assert poisoned.calls["st-poison"] == 1
    [letter] = await dead_letters(bootstrap, topics, "acd")
    assert letter["statement_id"] == "st-poison" and letter["parked"] is not None


async def test_a_410_disables_the_connector_until_it_is_enabled_over_the_operator_api(
    kafka_broker: EmbeddedBroker, topics: Topics, receiver: WebhookReceiver, ops: Ops
) -> None:
    """Issue 14 item 11: after a 410 the connector waits; POST /ops/connectors/acd/enable
    resumes it without a restart, from the statement that met the 410."""
    bootstrap = kafka_broker.bootstrap_servers
    acd = receiver.partner("acd")
    acd.script(Reply(410))
    await produce(bootstrap, topics, "acd", [make_delivery(f"st-410-{i}") for i in range(3)])

    async with pool_running(kafka_broker, topics, {"acd": webhook(acd)}) as pool:
        await eventually(lambda: pool.stats["acd"].disabled, "the 410")
        await eventually(lambda: worker_state(kafka_broker, topics, "acd"),
                         "the disabled state published", done=lambda s: s == "disabled")
        listed = await ops.client.get("/ops/topics", headers=ops.operator)
        [row] = [c for c in listed.json()["connectors"] if c["connector_id"] == "acd"]
        assert row["worker"] == "disabled" and "410" in row["worker_reason"]

        refused = await ops.client.post("/ops/connectors/acd/enable", headers=ops.admin)
        assert refused.status_code == 401
        unknown = await ops.client.post("/ops/connectors/nope/enable", headers=ops.operator)
        assert unknown.status_code == 404

        response = await ops.client.post("/ops/connectors/acd/enable", headers=ops.operator)
        assert response.status_code == 202, response.text
        assert response.json()["worker"] == "disabled"
        await eventually(lambda: len(receiver.delivered("acd")) == 3, "all three after enable")
        assert not pool.stats["acd"].disabled and pool.stats["acd"].state == "running"
        assert sample("statement_router_connector_disabled", connector="acd") == 0

    hits = receiver.of("acd")
    assert [h.status for h in hits][:1] == [410]
    assert hits[1].statement_id == hits[0].statement_id  # resumed at the 410's statement
