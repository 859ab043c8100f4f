"""The clients that bank feeds and partners use, against Apache Kafka and our router.

Kafka only, because these clients do not work with the embedded broker: Debian's ``kcat``
(librdkafka 2.0) fails at ``ApiVersions`` against Tansu, and librdkafka consumers cannot
join a group there. Against Kafka they must work exactly as ``docs/ingest.md`` and
``docs/delivery.md`` tell partners.

librdkafka's default partitioner is CRC32-based (``consistent_random``), not murmur2: a
statement it places may sit on another partition than its IBAN's state. With one router
holding every partition that still routes; with several it needs the router's repartition
step (see the router's scale-out tests).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer

from events.topics import Topics
from routing.broker import ProducerParams, make_producer
from routing.broker.kafka_local import LocalKafka
from tests.integration.router.test_router_broker import Pipeline, router_for
from tests.unit.router.factories import make_iban, statement

pytestmark = pytest.mark.kafka


@pytest.fixture
async def kafka_pipeline(
    apache_kafka: LocalKafka, make_topics: Any, tmp_path: Path
) -> AsyncIterator[Pipeline]:
    """A router on Apache Kafka (not parametrised: these clients exist for Kafka only)."""
    topics: Topics = await make_topics()
    router = router_for(apache_kafka, topics, tmp_path)
    producer = make_producer(ProducerParams(apache_kafka.bootstrap_servers))
    await producer.start()
    try:
        await router.start()
        try:
            yield Pipeline(apache_kafka, topics, router, producer)
        finally:
            await router.stop()
    finally:
        await producer.stop()


@pytest.fixture
def make_topics(apache_kafka: LocalKafka) -> Any:
    """The shared factory, pinned to Apache Kafka for this module."""
    from config.catalogue import default_catalogue
    from routing.broker.admin import ensure_topics
    from tests.fixtures.broker import TEST_PARTITIONS, unique_prefix

    async def make(*, partitions: int = TEST_PARTITIONS) -> Topics:
        topics = Topics(prefix=unique_prefix(), partitions=partitions)
        await ensure_topics(apache_kafka.bootstrap_servers, topics.specs(list(default_catalogue())))
        return topics

    return make


def _kcat() -> str:
    found = shutil.which("kcat")
    assert found, "kcat is needed (Debian: apt-get install kcat; .ci/run installs it)"
    return found


@pytest.mark.parametrize("partitioner", ["default", "murmur2_random"])
async def test_kcat_publishes_statements_that_the_router_routes(
    kafka_pipeline: Pipeline, partitioner: str
) -> None:
    """The command of docs/ingest.md, run for real: one "IBAN|JSON" line per statement."""
    ibans = [make_iban(7000 + n) for n in range(6)]
    for iban in ibans:
        await kafka_pipeline.state_applied(iban, version=1, connector_id=None)
    lines = "".join(
        f"{iban}|{statement(f'kcat-{partitioner}-{n}', iban).decode()}\n"
        for n, iban in enumerate(ibans)
    )
    argv = [
        _kcat(),
        "-P",
        "-b",
        kafka_pipeline.bootstrap,
        "-t",
        kafka_pipeline.topics.received,
        "-K",
        "|",
        "-X",
        "acks=all",
    ]
    if partitioner != "default":
        argv += ["-X", f"partitioner={partitioner}"]
    result = await asyncio.to_thread(
        subprocess.run, argv, input=lines.encode(), capture_output=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr.decode()
    routed = await kafka_pipeline.ids(kafka_pipeline.topics.global_file, len(ibans))
    assert sorted(routed) == sorted(f"kcat-{partitioner}-{n}" for n in range(len(ibans)))
    assert await kafka_pipeline.records(kafka_pipeline.topics.held, 0, within=0) == []


async def test_confluent_kafka_default_partitioner_statements_are_routed(
    kafka_pipeline: Pipeline,
) -> None:
    ibans = [make_iban(7100 + n) for n in range(12)]
    for iban in ibans:
        await kafka_pipeline.state_applied(iban, version=1, connector_id="acd")
    producer = Producer({"bootstrap.servers": kafka_pipeline.bootstrap, "acks": "all"})
    for n, iban in enumerate(ibans):
        producer.produce(kafka_pipeline.topics.received, statement(f"ck-{n}", iban), iban.encode())
    assert await asyncio.to_thread(producer.flush, 30) == 0
    routed = await kafka_pipeline.ids(kafka_pipeline.topics.partner("acd"), len(ibans))
    assert sorted(routed) == sorted(f"ck-{n}" for n in range(len(ibans)))


async def test_a_confluent_kafka_group_consumer_reads_a_partner_topic(
    kafka_pipeline: Pipeline, unique_group: Any
) -> None:
    """A partner reads its topic as a consumer *group* (subscribe, not assign), commits, and
    a second member of the group after it gets nothing twice."""
    ibans = [make_iban(7200 + n) for n in range(9)]
    for iban in ibans:
        await kafka_pipeline.state_applied(iban, version=1, connector_id="quadra")
    for n, iban in enumerate(ibans):
        await kafka_pipeline.statement(f"grp-{n}", iban)
    topic = kafka_pipeline.topics.partner("quadra")
    group = unique_group("partner")

    def consume(expected: int) -> list[dict[str, Any]]:
        consumer = Consumer(
            {
                "bootstrap.servers": kafka_pipeline.bootstrap,
                "group.id": group,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        consumer.subscribe([topic])
        got: list[dict[str, Any]] = []
        try:
            for _ in range(300):
                message = consumer.poll(0.2)
                if message is None:
                    if len(got) >= expected and consumer.assignment():
                        break
                    continue
                assert message.error() is None, message.error()
                got.append(json.loads(message.value()))
                consumer.commit(message=message, asynchronous=False)
            assert consumer.assignment(), "the group never assigned partitions"
        finally:
            consumer.close()
        return got

    first = await asyncio.to_thread(consume, len(ibans))
    assert sorted(doc["statement_id"] for doc in first) == sorted(
        f"grp-{n}" for n in range(len(ibans))
    )
    assert {doc["schema"] for doc in first} == {"statement.partner-delivery/v1"}
    again = await asyncio.to_thread(consume, 0)
    assert again == []
