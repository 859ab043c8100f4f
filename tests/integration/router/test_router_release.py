"""A large release of held statements, in chunks, on a real broker (issue 18, target 6).

An approved mandate releases its IBAN's held statements ``release_chunk`` per routing
step. On Tansu and on Apache Kafka: the release keeps the arrival order and loses
nothing; another IBAN of the same partition is routed while it runs (its routed record
lands between released ones on the partner topic's partition); and a router stopped in
the middle of a release is replaced by one that recovers the held Table and finishes it,
with nothing lost and nothing released twice; on Kafka also with ``KAFKA_EXACTLY_ONCE``,
where each chunk is one transaction.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiokafka.structs import ConsumerRecord

from config.catalogue import default_catalogue
from config.settings import Settings
from events.topics import Topics
from routing.broker import ProducerParams, ensure_topics, make_producer, read_topic
from routing.broker.partitioner import default_partition
from routing.broker.process import BrokerProcess
from routing.router import RouterApp, create_router_app
from tests.eventually import eventually
from tests.fixtures.broker import TEST_PARTITIONS, unique_prefix
from tests.integration.router.test_router_broker import TUNING, read_until
from tests.unit.router.factories import make_iban, state, statement


def router_for(broker: BrokerProcess, topics: Topics, data_dir: Path, chunk: int,
               exactly_once: bool = False) -> RouterApp:
    router = create_router_app(
        Settings(data_dir=data_dir, kafka_exactly_once=exactly_once),
        topics,
        default_catalogue(),
        bootstrap_servers=broker.bootstrap_servers,
        app_id=f"{topics.prefix}.router",
        tuning=TUNING,
    )
    router.core.release_chunk = chunk
    return router


def held_count(router: RouterApp, iban: str) -> int:
    return len(router.tables.get_held(iban) or [])


def ibans_of_one_partition(topics: Topics) -> tuple[str, str]:
    pending = make_iban(7)
    partition = default_partition(pending.encode(), topics.partitions)
    neighbour = next(
        iban
        for iban in (make_iban(n) for n in range(8, 10_000))
        if default_partition(iban.encode(), topics.partitions) == partition
    )
    return pending, neighbour


async def hold(router: RouterApp, broker: BrokerProcess, topics: Topics, pending: str,
               neighbour: str, count: int) -> None:
    """States of both IBANs (``pending``'s mandate pending), ``count`` statements held."""
    producer = make_producer(ProducerParams(broker.bootstrap_servers))
    await producer.start()
    try:
        await producer.send(
            topics.iban_state,
            state(pending, connector_id="acd", mandate_status="pending"),
            key=pending.encode(),
        )
        await producer.send(
            topics.iban_state, state(neighbour, connector_id="acd"), key=neighbour.encode()
        )
        for n in range(count):
            await producer.send(
                topics.received, statement(f"p{n:05d}", pending), key=pending.encode()
            )
        await producer.flush()
    finally:
        await producer.stop()
    await router.start()
    await eventually(lambda: held_count(router, pending) == count, f"{count} held", within=180)


async def approve(broker: BrokerProcess, topics: Topics, pending: str,
                  then: tuple[tuple[str, str], ...] = ()) -> None:
    """Approve ``pending``'s mandate, then send the statements ``then`` (id, IBAN)."""
    producer = make_producer(ProducerParams(broker.bootstrap_servers))
    await producer.start()
    try:
        await producer.send_and_wait(
            topics.iban_state, state(pending, version=2, connector_id="acd"),
            key=pending.encode(),
        )
        for sid, iban in then:
            await producer.send_and_wait(topics.received, statement(sid, iban),
                                         key=iban.encode())
    finally:
        await producer.stop()


async def test_a_large_release_stays_in_order_and_lets_another_iban_through(
    kafka_broker: BrokerProcess, topics: Topics, tmp_path: Path
) -> None:
    held = 3_000
    pending, neighbour = ibans_of_one_partition(topics)
    router = router_for(kafka_broker, topics, tmp_path, chunk=20)  # 150 steps
    try:
        await hold(router, kafka_broker, topics, pending, neighbour, held)
        others = tuple((f"n{n}", neighbour) for n in range(3))
        await approve(kafka_broker, topics, pending, then=others)
        records = await read_until(
            kafka_broker.bootstrap_servers, topics.partner("acd"), held + len(others),
            within=180,
        )
        await eventually(lambda: held_count(router, pending) == 0, "held entries deleted")
        assert router.core.held_by_reason() == {}
    finally:
        await router.stop()
    # Both IBANs' routed records share one partition of the partner topic (same key
    # partition), in the order the router issued them.
    ids = [json.loads(r.value)["statement_id"] for r in records]
    assert len({r.partition for r in records}) == 1
    assert [i for i in ids if i.startswith("p")] == [f"p{n:05d}" for n in range(held)]
    assert [i for i in ids if i.startswith("n")] == [sid for sid, _ in others]
    # The neighbour was routed while the release ran, not after it.
    assert ids.index("n0") < ids.index(f"p{held - 1:05d}")
    assert ids.index("n0") > ids.index("p00000")


async def test_a_release_interrupted_by_a_restart_resumes_and_loses_nothing(
    kafka_broker: BrokerProcess, topics: Topics, tmp_path: Path
) -> None:
    await release_across_a_restart(kafka_broker, topics, tmp_path, exactly_once=False)


@pytest.fixture
async def kafka_topics(apache_kafka: BrokerProcess) -> Topics:
    topics = Topics(prefix=unique_prefix(), partitions=TEST_PARTITIONS)
    await ensure_topics(apache_kafka.bootstrap_servers, topics.specs(list(default_catalogue())))
    return topics


async def test_an_exactly_once_release_interrupted_by_a_restart_loses_nothing(
    apache_kafka: BrokerProcess, kafka_topics: Topics, tmp_path: Path
) -> None:
    # Each chunk is one transaction of the partition's producer (KAFKA_EXACTLY_ONCE).
    await release_across_a_restart(apache_kafka, kafka_topics, tmp_path, exactly_once=True)


async def release_across_a_restart(
    broker: BrokerProcess, topics: Topics, tmp_path: Path, *, exactly_once: bool
) -> None:
    held = 3_000
    pending, neighbour = ibans_of_one_partition(topics)
    router = router_for(broker, topics, tmp_path / "a", 5, exactly_once)  # 600 steps
    try:
        await hold(router, broker, topics, pending, neighbour, held)
        assert router.exactly_once is exactly_once
        await approve(broker, topics, pending)
        await eventually(lambda: router.core.stats["released"] > 0, "the release started")
    finally:
        await router.stop()  # in the middle of the release
    left = held_count(router, pending)
    assert 0 < left < held, "the router was to stop in the middle of the release"

    router = router_for(broker, topics, tmp_path / "b", 5, exactly_once)  # a new worker
    try:
        await router.start()
        async def committed() -> list[ConsumerRecord[bytes, bytes]]:
            return await read_topic(broker.bootstrap_servers, topics.partner("acd"),
                                    isolation_level="read_committed")

        records = await eventually(
            committed,
            f"{held} records on the partner topic",
            within=180,
            interval=0.2,
            done=lambda found: len(found) >= held,
        )
        await eventually(lambda: held_count(router, pending) == 0, "held entries deleted")
        assert router.core.stats["released"] == left
        assert router.core.held_by_reason() == {}
    finally:
        await router.stop()
    ids = [json.loads(r.value)["statement_id"] for r in records]
    assert ids == [f"p{n:05d}" for n in range(held)]
