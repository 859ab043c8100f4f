"""Exactly-once on Apache Kafka, and its absence on Tansu, against the real brokers.

The transactional tests use the ``apache_kafka`` fixture only: Tansu has no transactions
(``InitProducerId`` fails), which the last tests check the router notices and says.

* An open transaction of a router that lost its partition (a zombie, or a process killed
  mid-step) is aborted when the new owner fences the partition's transactional id: a
  ``read_committed`` reader never sees its outputs (a ``read_uncommitted`` one does: they
  were written), and the zombie can no longer commit.
* A routing step of the Stepper commits outputs, changelog records and input offsets
  together; one that fails is aborted and leaves nothing visible.
* The whole router with ``kafka_exactly_once`` routes on Kafka, read_committed.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from config.catalogue import default_catalogue
from config.settings import Settings
from events.topics import Topics
from routing.broker import ProducerParams, ensure_topics, make_producer, read_topic
from routing.broker.process import BrokerProcess
from routing.broker.transactions import broker_has_transactions, committed_end_offsets
from routing.router import create_router_app
from routing.router.emit import Out
from routing.router.step import Stepper
from routing.router.transactions import PartitionProducers
from tests.eventually import eventually
from tests.fixtures.broker import TEST_PARTITIONS, unique_prefix
from tests.integration.router.test_router_broker import TUNING
from tests.unit.router.dict_tables import DictTables
from tests.unit.router.factories import make_iban, state, statement

IBAN = make_iban(7001)


class ChangelogDictTables(DictTables):
    """DictTables with the changelog queue the Stepper takes (none written here)."""

    def take_changelog(self) -> list[Out]:
        return []

    def changelog_persisted(self, acks: Any) -> None:
        return None

    def count_changelog(self, changelog: Any) -> None:
        return None


@pytest.fixture
async def kafka_topics(apache_kafka: BrokerProcess) -> Topics:
    topics = Topics(prefix=unique_prefix(), partitions=TEST_PARTITIONS)
    await ensure_topics(apache_kafka.bootstrap_servers, topics.specs(list(default_catalogue())))
    return topics


def producers(bootstrap: str, app_id: str) -> PartitionProducers:
    def make(transactional_id: str) -> AIOKafkaProducer:
        return make_producer(ProducerParams(bootstrap, transactional_id=transactional_id))

    return PartitionProducers(app_id, make)


async def values(bootstrap: str, topic: str, isolation_level: str) -> list[bytes]:
    records = await read_topic(bootstrap, topic, isolation_level=isolation_level)
    return [r.value for r in records]


async def test_a_new_owner_aborts_the_zombies_transaction_and_fences_it(
    apache_kafka: BrokerProcess, kafka_topics: Topics
) -> None:
    bootstrap = apache_kafka.bootstrap_servers
    topic = kafka_topics.global_file
    app_id = f"{kafka_topics.prefix}.router"
    zombie, owner = producers(bootstrap, app_id), producers(bootstrap, app_id)
    try:
        await zombie.fence([0])
        sink = zombie.sink(0)
        await sink.producer.begin_transaction()
        acks = await sink.send_many([Out(topic, b"k", b"zombie's output", 0)])
        for ack in acks:
            await ack  # written and acknowledged, but not committed
        await owner.fence([0])  # the new owner takes partition 0's transactional id
        assert await values(bootstrap, topic, "read_committed") == []
        assert await values(bootstrap, topic, "read_uncommitted") == [b"zombie's output"]
        with pytest.raises(KafkaError):
            await sink.producer.commit_transaction()  # ProducerFenced

        stepper = Stepper(ChangelogDictTables(), lambda: sink, owner)
        offsets = {TopicPartition(kafka_topics.received, 0): 1}
        await stepper.run_transaction(
            lambda now: [Out(topic, b"k", b"owner's output", 0)], 0, offsets, app_id
        )
    finally:
        await zombie.release()
        await owner.release()
    assert await values(bootstrap, topic, "read_committed") == [b"owner's output"]
    ends = await committed_end_offsets(bootstrap, [(topic, 0)])
    # zombie's record, its abort marker, the owner's record, its commit marker
    assert ends[TopicPartition(topic, 0)] == 3


async def test_a_failed_step_is_aborted_and_leaves_nothing_visible(
    apache_kafka: BrokerProcess, kafka_topics: Topics
) -> None:
    bootstrap = apache_kafka.bootstrap_servers
    topic = kafka_topics.global_file
    app_id = f"{kafka_topics.prefix}.router"
    owner = producers(bootstrap, app_id)
    stepper = Stepper(ChangelogDictTables(), lambda: owner.sink(0), owner)
    offsets = {TopicPartition(kafka_topics.received, 0): 5}
    try:
        with pytest.raises(ValueError):
            # The outputs are sent and acknowledged, then joining the input offsets to the
            # transaction fails (aiokafka refuses an empty group id): the step is aborted.
            await stepper.run_transaction(
                lambda now: [Out(topic, b"k", b"first", 0), Out(topic, b"k2", b"second", 0)],
                0,
                offsets,
                "",
            )
        assert await values(bootstrap, topic, "read_uncommitted") == [b"first", b"second"]
        await stepper.run_transaction(lambda now: [Out(topic, b"k", b"next", 0)], 0, None, app_id)
    finally:
        await owner.release()
    assert await values(bootstrap, topic, "read_committed") == [b"next"]


@pytest.fixture
async def eos_router(
    apache_kafka: BrokerProcess, kafka_topics: Topics, tmp_path: Path
) -> AsyncIterator[Any]:
    router = create_router_app(
        Settings(data_dir=tmp_path, kafka_exactly_once=True),
        kafka_topics,
        default_catalogue(),
        bootstrap_servers=apache_kafka.bootstrap_servers,
        tuning=TUNING,
    )
    await router.start()
    try:
        yield router
    finally:
        await router.stop()


async def test_the_router_routes_in_transactions_on_kafka(
    apache_kafka: BrokerProcess, kafka_topics: Topics, eos_router: Any
) -> None:
    bootstrap = apache_kafka.bootstrap_servers
    assert eos_router.exactly_once
    producer = make_producer(ProducerParams(bootstrap))
    await producer.start()
    try:
        await producer.send_and_wait(
            kafka_topics.iban_state, state(IBAN, connector_id="acd"), key=IBAN.encode()
        )
        for n in range(5):
            await producer.send_and_wait(
                kafka_topics.received, statement(f"s{n}", IBAN), key=IBAN.encode()
            )
    finally:
        await producer.stop()

    async def routed_ids() -> list[str]:
        records = await read_topic(
            bootstrap, kafka_topics.partner("acd"), isolation_level="read_committed"
        )
        return [json.loads(r.value)["statement_id"] for r in records]

    routed = await eventually(
        routed_ids, "five routed statements", interval=0.2, done=lambda ids: len(ids) >= 5
    )
    assert routed == [f"s{n}" for n in range(5)]


async def test_tansu_has_no_transactions_and_the_router_stays_at_least_once(
    tansu_broker: BrokerProcess, apache_kafka: BrokerProcess, tmp_path: Path
) -> None:
    assert await broker_has_transactions(apache_kafka.bootstrap_servers)
    assert not await broker_has_transactions(tansu_broker.bootstrap_servers)
    topics = Topics(prefix=unique_prefix(), partitions=TEST_PARTITIONS)
    await ensure_topics(tansu_broker.bootstrap_servers, topics.specs(list(default_catalogue())))
    router = create_router_app(
        Settings(data_dir=tmp_path, kafka_exactly_once=True),
        topics,
        default_catalogue(),
        bootstrap_servers=tansu_broker.bootstrap_servers,
        tuning=TUNING,
    )
    await router.start()
    try:
        assert router.exactly_once is False
        assert router.stepper.transactions is None
    finally:
        await router.stop()
