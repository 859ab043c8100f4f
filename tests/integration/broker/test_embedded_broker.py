"""The embedded broker and the Kafka boundary helpers, against a real Tansu process."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaTimeoutError, UnknownTopicOrPartitionError

from config.settings import Settings
from events.topics import Topics, TopicSpec
from routing.broker import (
    BrokerError,
    BrokerStartupError,
    BrokerUnavailable,
    EmbeddedBroker,
    ProducerParams,
    TopicMismatch,
    UnknownTopic,
    describe_cleanup_policies,
    describe_topics,
    end_offsets,
    ensure_topics,
    make_producer,
    read_topic,
)
from routing.broker.kafka_local import LocalKafka
from tests.fixtures.broker import (
    TopicsFactory,
    parent_of,
    process_gone,
    tansu_children,
    unique_prefix,
)

pytestmark = pytest.mark.broker


async def produce(bootstrap: str, topic: str, items: list[tuple[str, bytes]]) -> None:
    producer = make_producer(ProducerParams(bootstrap_servers=bootstrap))
    await producer.start()
    try:
        futures = [await producer.send(topic, key=k.encode(), value=v) for k, v in items]
        await producer.flush()
        for future in futures:
            await future
    finally:
        await producer.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- the broker process -------------------------------------------------------------------


async def test_the_broker_answers_kafka_metadata_with_its_own_cluster_id(
    kafka_broker: EmbeddedBroker,
) -> None:
    assert kafka_broker.running
    assert kafka_broker.bootstrap_servers == f"127.0.0.1:{kafka_broker.port}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap_servers)
    try:
        await admin.start()
        cluster = await admin.describe_cluster()
    finally:
        await admin.close()
    assert cluster["cluster_id"] == kafka_broker.cluster_id
    assert [(b["host"], b["port"]) for b in cluster["brokers"]] == [
        ("127.0.0.1", kafka_broker.port)
    ]
    assert kafka_broker.pid is not None
    assert parent_of(kafka_broker.pid) == os.getpid()


def test_stop_terminates_and_reaps_the_process(tmp_path: Path) -> None:
    broker = EmbeddedBroker(log_dir=tmp_path)
    broker.start()
    pid = broker.pid
    assert pid is not None
    assert pid in tansu_children()
    broker.stop()
    assert process_gone(pid)
    assert pid not in tansu_children()
    assert not broker.running
    broker.stop()  # idempotent
    with pytest.raises(BrokerError, match="not running"):
        _ = broker.bootstrap_servers
    log = (tmp_path / "tansu.log").read_text()
    assert "tansu broker" in log
    assert "\x1b[" not in log  # NO_COLOR: the log is readable as plain text


def test_the_sync_context_manager_removes_its_private_log_dir() -> None:
    with EmbeddedBroker() as broker:
        pid = broker.pid
        log_path = broker.log_path
        assert log_path is not None
        assert log_path.exists()
        assert broker.startup_seconds is not None
    assert pid is not None
    assert process_gone(pid)
    assert not log_path.parent.exists()


async def test_the_async_context_manager_starts_and_stops() -> None:
    async with EmbeddedBroker() as broker:
        pid = broker.pid
        counts = await describe_topics(broker.bootstrap_servers)
        assert counts == {}
    assert pid is not None
    assert process_gone(pid)


async def test_blocking_start_inside_an_event_loop_is_refused() -> None:
    broker = EmbeddedBroker()
    with pytest.raises(BrokerError, match="astart"):
        broker.start()
    assert broker.pid is None


def test_a_busy_port_is_reported_before_spawning() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        broker = EmbeddedBroker(port=port)
        with pytest.raises(BrokerStartupError, match="already in use"):
            broker.start()
    assert broker.pid is None


def test_a_broker_that_dies_at_startup_is_reported_with_its_log(tmp_path: Path) -> None:
    fake = tmp_path / "tansu-fake"
    fake.write_text("#!/bin/sh\necho 'boom: listener refused' >&2\nexit 0\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    broker = EmbeddedBroker(binary=fake, log_dir=tmp_path, port=free_port())
    with pytest.raises(BrokerStartupError, match="exited during startup") as failure:
        broker.start()
    assert "boom: listener refused" in failure.value.message
    assert str(tmp_path / "tansu.log") in failure.value.message
    assert broker.pid is not None
    assert process_gone(broker.pid)


def test_a_broker_that_never_answers_times_out_readably(tmp_path: Path) -> None:
    fake = tmp_path / "tansu-silent"
    fake.write_text("#!/bin/sh\necho 'still warming up'\nexec sleep 30\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    broker = EmbeddedBroker(binary=fake, log_dir=tmp_path, startup_timeout=0.5, stop_timeout=1)
    with pytest.raises(BrokerStartupError, match=r"did not answer within 0\.5s") as failure:
        broker.start()
    assert "still warming up" in failure.value.message
    assert broker.pid is not None
    assert process_gone(broker.pid)


# -- topics ---------------------------------------------------------------------------------


async def test_ensure_topics_creates_exact_partition_counts_and_is_idempotent(
    kafka_broker: EmbeddedBroker,
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    topics = Topics(prefix=unique_prefix(), partitions=5)
    specs = topics.specs(["acd", "cegid"])
    names = [spec.name for spec in specs]

    assert await ensure_topics(bootstrap, specs) == names
    assert await describe_topics(bootstrap, names) == dict.fromkeys(names, 5)
    assert await ensure_topics(bootstrap, specs) == []
    assert await ensure_topics(bootstrap, specs[:3] + specs) == []

    policies = await describe_cleanup_policies(bootstrap, names)
    compacted = {topics.iban_state, topics.adapters_control}
    assert {policies[n] for n in compacted} == {"compact"}
    assert {policies[n] for n in names if n not in compacted} == {"delete"}


async def test_ensure_topics_creates_only_what_is_missing(kafka_broker: EmbeddedBroker) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    specs = Topics(prefix=unique_prefix(), partitions=2).specs([])
    assert await ensure_topics(bootstrap, specs[:2]) == [specs[0].name, specs[1].name]
    assert await ensure_topics(bootstrap, specs) == [s.name for s in specs[2:]]


async def test_a_partition_count_mismatch_is_refused_before_creating_anything(
    kafka_broker: EmbeddedBroker,
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    prefix = unique_prefix()
    await ensure_topics(bootstrap, Topics(prefix=prefix, partitions=2).specs([])[1:2])
    wanted = Topics(prefix=prefix, partitions=3)

    with pytest.raises(TopicMismatch, match="co-partitioned") as refusal:
        await ensure_topics(bootstrap, wanted.specs([]))

    assert f"topic {wanted.iban_state} has 2 partitions but the catalogue needs 3" in str(
        refusal.value
    )
    assert isinstance(refusal.value, BrokerError)
    assert await describe_topics(bootstrap, [s.name for s in wanted.specs([])]) == {
        wanted.iban_state: 2
    }


async def test_a_topic_auto_created_by_a_producer_is_caught(tansu_broker: EmbeddedBroker) -> None:
    """Tansu only: it auto-creates topics on produce (Kafka here does not, as in production:
    see the next test), with its own default partition count."""
    bootstrap = tansu_broker.bootstrap_servers
    topics = Topics(prefix=unique_prefix(), partitions=3)
    await produce(bootstrap, topics.received, [("FR76", b"{}")])  # auto-creates it

    auto_partitions = (await describe_topics(bootstrap, [topics.received]))[topics.received]
    assert auto_partitions != 3  # Tansu's default (4), not the catalogue's count
    with pytest.raises(TopicMismatch, match=f"has {auto_partitions} partitions"):
        await ensure_topics(bootstrap, topics.specs([]))


async def test_apache_kafka_does_not_auto_create_topics(apache_kafka: LocalKafka) -> None:
    """Kafka only: like docker-compose.yml, the local node has auto-creation off, so a
    producer to a missing topic fails instead of creating it with a wrong partition count."""
    bootstrap = apache_kafka.bootstrap_servers
    topic = Topics(prefix=unique_prefix(), partitions=3).received
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=2_000)
    await producer.start()
    try:
        with pytest.raises((UnknownTopicOrPartitionError, KafkaTimeoutError)):
            await producer.send_and_wait(topic, b"{}", key=b"FR76")
    finally:
        await producer.stop()
    assert topic not in await describe_topics(bootstrap)


async def test_a_cleanup_policy_that_would_lose_data_is_refused(
    kafka_broker: EmbeddedBroker,
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    topics = Topics(prefix=unique_prefix(), partitions=3)
    wrong = TopicSpec(topics.iban_state, 3, "delete", "IBAN", "iban.state/v1", "wrong policy")
    await ensure_topics(bootstrap, [wrong])
    with pytest.raises(TopicMismatch, match="needs compact"):
        await ensure_topics(bootstrap, topics.specs([]))


async def test_invalid_specs_are_rejected_locally(kafka_broker: EmbeddedBroker) -> None:
    # Tansu would accept all of these, so ensure_topics must not send them.
    bootstrap = kafka_broker.bootstrap_servers
    name = f"{unique_prefix()}.x"
    with pytest.raises(ValueError, match="at least 1"):
        await ensure_topics(bootstrap, [TopicSpec(name, 0, "delete", "k", "s", "d")])
    with pytest.raises(ValueError, match="replication_factor"):
        await ensure_topics(bootstrap, [TopicSpec(name, 1, "delete", "k", "s", "d")], 0)
    with pytest.raises(ValueError, match="twice"):
        await ensure_topics(
            bootstrap,
            [
                TopicSpec(name, 1, "delete", "k", "s", "d"),
                TopicSpec(name, 2, "delete", "k", "s", "d"),
            ],
        )
    assert await describe_topics(bootstrap, [name]) == {}


async def test_looking_up_unknown_topics_never_creates_them(kafka_broker: EmbeddedBroker) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    name = f"{unique_prefix()}.missing"
    assert await describe_topics(bootstrap, [name]) == {}
    with pytest.raises(UnknownTopic, match="does not exist"):
        await read_topic(bootstrap, name, timeout=5)
    with pytest.raises(UnknownTopic):
        await end_offsets(bootstrap, [name])
    assert name not in await describe_topics(bootstrap)


# -- producing and reading -------------------------------------------------------------------


async def test_keyed_round_trip_through_a_consumer_group(
    kafka_broker: EmbeddedBroker, topics: Topics, unique_group: Callable[..., str]
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    sent = [(f"FR76{i % 5}", f'{{"n": {i}}}'.encode()) for i in range(40)]
    await produce(bootstrap, topics.received, sent)

    consumer = AIOKafkaConsumer(
        topics.received,
        bootstrap_servers=bootstrap,
        group_id=unique_group("round-trip"),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    received = []
    try:
        await consumer.start()
        async with asyncio.timeout(30):
            while len(received) < len(sent):
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    received.extend(records)
        await consumer.commit()
    finally:
        await consumer.stop()

    assert sorted((r.key.decode(), r.value) for r in received) == sorted(sent)
    partitions_by_key: dict[bytes, set[int]] = defaultdict(set)
    for record in received:
        partitions_by_key[record.key].add(record.partition)
    assert all(len(p) == 1 for p in partitions_by_key.values())  # a key keeps its partition
    per_key = defaultdict(list)
    for record in sorted(received, key=lambda r: (r.partition, r.offset)):
        per_key[record.key].append(record.value)
    for key, values in per_key.items():  # per-key order is the send order
        assert values == [v for k, v in sent if k.encode() == key]


async def test_read_topic_returns_everything_produced(
    kafka_broker: EmbeddedBroker, topics: Topics
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    sent = [(f"IBAN{i % 7}", f"value-{i}".encode()) for i in range(100)]
    await produce(bootstrap, topics.outcomes, sent)

    records = await read_topic(bootstrap, topics.outcomes, timeout=20)

    assert sorted((r.key.decode(), r.value) for r in records) == sorted(sent)
    assert records == sorted(records, key=lambda r: (r.partition, r.offset))
    offsets = await end_offsets(bootstrap, [topics.outcomes])
    assert len(offsets) == topics.partitions
    assert sum(offsets.values()) == len(sent)
    assert await read_topic(bootstrap, topics.held, timeout=5) == []


async def test_the_topics_fixture_prepares_every_catalogue_topic(
    kafka_broker: EmbeddedBroker, make_topics: TopicsFactory
) -> None:
    first = await make_topics()
    second = await make_topics(partitions=2, connector_ids=["acd"])
    assert first.prefix != second.prefix
    counts = await describe_topics(kafka_broker.bootstrap_servers)
    for connector in ("acd", "cegid", "quadra", "pennylane"):
        assert counts[first.partner(connector)] == 3
        assert counts[first.partner_dlq(connector)] == 3
    assert counts[second.partner("acd")] == 2
    assert second.partner("cegid") not in counts


async def test_end_offsets_count_every_record_of_a_batched_send(
    kafka_broker: EmbeddedBroker, make_topics: TopicsFactory
) -> None:
    # Tansu's ListOffsets reports the last *batch's* base offset + 1 (here 1, not 22);
    # end_offsets must not inherit that, or lag and read_topic would miss records.
    bootstrap = kafka_broker.bootstrap_servers
    topics = await make_topics(partitions=1, connector_ids=[])
    await produce(bootstrap, topics.invalid, [("k", b"v")] * 22)
    assert await end_offsets(bootstrap, [topics.invalid]) == {(topics.invalid, 0): 22}
    assert len(await read_topic(bootstrap, topics.invalid, timeout=10)) == 22


def test_unique_group_ids_differ(unique_group: Callable[..., str]) -> None:
    assert unique_group("router") != unique_group("router")
    assert unique_group("router").startswith("router-")


# -- errors at the boundary ------------------------------------------------------------------


async def test_an_unreachable_broker_raises_broker_unavailable() -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    with pytest.raises(BrokerUnavailable, match=f"cannot reach Kafka at {bootstrap}"):
        await describe_topics(bootstrap, request_timeout_ms=2000)


def test_producer_params_take_the_resolved_address_and_the_settings() -> None:
    # The address is resolved once, by routing.entrypoints.bootstrap.broker_address (tests/unit/
    # test_bootstrap.py): the params only carry it.
    settings = Settings(kafka_bootstrap_servers=None, kafka_linger_ms=7)
    params = ProducerParams.from_settings(settings, bootstrap_servers="127.0.0.1:1")
    assert params.bootstrap_servers == "127.0.0.1:1"
    assert params.exactly_once is False
    assert params.linger_ms == 7


async def test_make_producer_uses_at_least_once_settings() -> None:
    producer = make_producer(ProducerParams(bootstrap_servers="127.0.0.1:1"))
    try:
        # aiokafka exposes no getters; these private names are stable within 0.14.
        assert producer._sender._acks == -1  # acks="all"
        assert producer._txn_manager is None  # no idempotence, no transactions
        assert producer._compression_type is None
    finally:
        await producer.stop()


def test_make_producer_outside_an_event_loop_is_refused() -> None:
    with pytest.raises(BrokerError, match="running event loop"):
        make_producer(ProducerParams(bootstrap_servers="127.0.0.1:1"))
