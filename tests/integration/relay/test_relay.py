"""The outbox relay against the real broker and both real stores."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections import defaultdict

import pytest
from aiokafka import AIOKafkaProducer

from events.schemas import IbanStateEvent
from events.topics import Topics
from routing.broker import (
    EmbeddedBroker,
    ProducerParams,
    ensure_topics,
    make_producer,
    read_topic,
)
from routing.domain.model import MandateStatus, Profile
from routing.services.relay import OutboxRelay
from routing.store.migrate import upgrade
from routing.store.sql import SqlStateStore
from tests.eventually import eventually
from tests.fixtures.databases import maintenance_connection
from tests.fixtures.postgres_server import PostgresServer

IBANS = (
    "FR7630006000011234567890189",
    "FR7630004008250001234567886",
    "FR6010278060760001234F50152",
)


async def make_changes(store: SqlStateStore) -> int:
    """A few changes of each kind; returns how many outbox rows they wrote."""
    await store.create_cabinet("cab-a", "A")
    created = await store.create_user("cab-a", Profile.ADMINISTRATEUR)
    admin = await store.authenticate(created.token)
    for iban in IBANS:
        await store.add_iban(iban, "cab-a", None)  # 3 rows
    await store.add_cabinet_connector(admin, "cab-a", "acd")  # 3 unbound IBANs republished
    for iban in IBANS:
        await store.set_mandate(iban, MandateStatus.APPROVED)  # 3 rows
    await store.bind_iban(admin, IBANS[0], "acd")  # 1 row
    return len(await store.pending_outbox(1000))


def by_key(records: list) -> dict[str, list[IbanStateEvent]]:  # type: ignore[type-arg]
    seen: dict[str, list[IbanStateEvent]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        seen[record.key.decode()].append(IbanStateEvent.model_validate_json(record.value))
    return seen


async def producer_for(broker: EmbeddedBroker) -> AIOKafkaProducer:
    producer = make_producer(ProducerParams(broker.bootstrap_servers, client_id="relay-test"))
    await producer.start()
    return producer


async def test_relay_publishes_every_row_once_in_version_order(
    store: SqlStateStore, topics: Topics, kafka_broker: EmbeddedBroker
) -> None:
    rows = await make_changes(store)
    assert rows == 10
    producer = await producer_for(kafka_broker)
    try:
        relay = OutboxRelay(store, producer, topics, batch_size=4)
        while await relay.publish_pending():
            pass
    finally:
        await producer.stop()
    assert await store.outbox_backlog() == 0
    records = await read_topic(kafka_broker.bootstrap_servers, topics.iban_state)
    assert len(records) == rows
    states = by_key(records)
    assert set(states) == set(IBANS)
    for iban, versions in states.items():
        assert [s.version for s in versions] == list(range(1, len(versions) + 1)), iban
        assert versions[-1].mandate_status is MandateStatus.APPROVED
        assert versions[-1].connector_on_cabinet is True
    assert states[IBANS[0]][-1].connector_id == "acd"
    first = json.loads(records[0].value)
    assert first["schema"] == "iban.state/v1"


async def test_two_relays_never_publish_a_row_twice(
    store: SqlStateStore, topics: Topics, kafka_broker: EmbeddedBroker, database_url: str
) -> None:
    rows = await make_changes(store)
    second_store = SqlStateStore.from_url(database_url)
    producers = [await producer_for(kafka_broker), await producer_for(kafka_broker)]
    stop = asyncio.Event()
    relays = [
        OutboxRelay(store, producers[0], topics, batch_size=2, idle_interval=0.02),
        OutboxRelay(second_store, producers[1], topics, batch_size=2, idle_interval=0.02),
    ]
    tasks = [asyncio.create_task(relay.run(stop)) for relay in relays]
    try:
        assert await wait_for_backlog(store, 0)
        # More changes while both run: only the leader publishes them.
        admin = await store.authenticate(
            (await store.create_user("cab-a", Profile.SUPERVISEUR)).token
        )
        await store.bind_iban(admin, IBANS[1], "acd")
        rows += 1
        assert await wait_for_backlog(store, 0)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        for producer in producers:
            await producer.stop()
        await second_store.close()
    assert await store.outbox_backlog() == 0
    assert sorted(r.published for r in relays) in ([0, rows],)
    records = await read_topic(kafka_broker.bootstrap_servers, topics.iban_state)
    assert len(records) == rows
    for iban, versions in by_key(records).items():
        assert [s.version for s in versions] == list(range(1, len(versions) + 1)), iban


async def test_relay_survives_a_broker_outage(
    store: SqlStateStore, own_broker: EmbeddedBroker
) -> None:
    """The broker freezes (SIGSTOP) mid-run: rows stay pending, then flow once it is back.

    A frozen broker keeps its data, unlike restarting the memory-only embedded broker, so
    the test shows the relay's behaviour rather than the broker's amnesia.
    """
    broker = own_broker
    topics = Topics(prefix="outage", partitions=3)
    stop = asyncio.Event()
    task: asyncio.Task[None] | None = None
    producer: AIOKafkaProducer | None = None
    frozen = False
    try:
        await ensure_topics(broker.bootstrap_servers, topics.specs([]))
        producer = await producer_for(broker)
        relay = OutboxRelay(store, producer, topics, idle_interval=0.02, max_backoff=0.5)
        task = asyncio.create_task(relay.run(stop))
        await store.create_cabinet("cab-a", "A")
        await store.add_iban(IBANS[0], "cab-a", None)
        assert await wait_for_backlog(store, 0)

        assert broker.pid is not None
        os.kill(broker.pid, signal.SIGSTOP)
        frozen = True
        await store.set_mandate(IBANS[0], MandateStatus.APPROVED)
        await asyncio.sleep(1.0)
        assert await store.outbox_backlog() == 1  # not marked while the broker is away

        os.kill(broker.pid, signal.SIGCONT)
        frozen = False
        assert await wait_for_backlog(store, 0)
        records = await read_topic(broker.bootstrap_servers, topics.iban_state)
        assert [IbanStateEvent.model_validate_json(r.value).version for r in records] == [1, 2]
    finally:
        if frozen and broker.pid is not None:
            os.kill(broker.pid, signal.SIGCONT)
        stop.set()
        if task is not None:
            await task
        if producer is not None:
            await producer.stop()


async def wait_for_backlog(store: SqlStateStore, expected: int) -> bool:
    """Whether the outbox backlog reaches ``expected`` (``eventually`` fails if it does not)."""
    await eventually(store.outbox_backlog, f"an outbox backlog of {expected}",
                     done=lambda n: n == expected)
    return True


@pytest.mark.postgres
async def test_relay_survives_a_database_restart_and_keeps_leadership_honest(
    postgres_url: str, postgres_server: PostgresServer, topics: Topics, kafka_broker: EmbeddedBroker
) -> None:
    """Every session is cut (as a PostgreSQL restart would): the relay notices it lost its
    advisory lock, takes it again, and publishes what was committed meanwhile."""
    await upgrade(postgres_url)
    store = SqlStateStore.from_url(postgres_url)
    producer = await producer_for(kafka_broker)
    stop = asyncio.Event()
    relay = OutboxRelay(store, producer, topics, idle_interval=0.02, max_backoff=0.3)
    task = asyncio.create_task(relay.run(stop))
    try:
        await store.create_cabinet("cab-a", "A")
        await store.add_iban(IBANS[0], "cab-a", None)
        assert await wait_for_backlog(store, 0)
        database = postgres_url.rsplit("/", 1)[1]
        killer = await maintenance_connection(postgres_server)
        try:
            killed = await killer.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1",
                database,
            )
        finally:
            await killer.close()
        assert killed >= 1
        await store.set_mandate(IBANS[0], MandateStatus.APPROVED)
        assert await wait_for_backlog(store, 0)
    finally:
        stop.set()
        await task
        await producer.stop()
        await store.close()
    records = await read_topic(kafka_broker.bootstrap_servers, topics.iban_state)
    assert [IbanStateEvent.model_validate_json(r.value).version for r in records] == [1, 2]
