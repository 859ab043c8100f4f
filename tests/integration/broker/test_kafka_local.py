"""The Apache Kafka launcher (``routing.broker.kafka_local``) against real Kafka processes.

The session's node (``apache_kafka``) serves the broker tests; these start nodes of their
own, because they stop and restart them. Kafka only, by nature: they test its launcher.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from events.topics import TopicSpec
from routing.broker import (
    BrokerStartupError,
    ProducerParams,
    ensure_topics,
    make_producer,
    read_topic,
)
from routing.broker.kafka_local import (
    KAFKA_VERSION,
    LocalKafka,
    default_cache_dir,
    resolve_kafka_classpath,
)
from tests.fixtures.broker import parent_of, process_gone

pytestmark = [pytest.mark.kafka, pytest.mark.broker]


async def test_a_node_keeps_its_data_and_cluster_id_across_a_restart(tmp_path: Path) -> None:
    """``up --broker kafka`` keeps its data under var/kafka: a restart finds it again."""
    topic = TopicSpec("kept.statements", 2, "delete", "IBAN", "-", "test")
    async with LocalKafka(log_dir=tmp_path) as node:
        first_id = node.cluster_id
        pid = node.pid
        assert pid is not None and parent_of(pid) == os.getpid()
        await ensure_topics(node.bootstrap_servers, [topic])
        producer = make_producer(ProducerParams(node.bootstrap_servers))
        await producer.start()
        try:
            await producer.send_and_wait(topic.name, b"kept", key=b"FR76")
        finally:
            await producer.stop()
    assert process_gone(pid), "stop() left the JVM running"

    async with LocalKafka(log_dir=tmp_path) as again:
        assert again.cluster_id == first_id
        records = await read_topic(again.bootstrap_servers, topic.name)
        assert [r.value for r in records] == [b"kept"]


async def test_without_java_the_error_says_what_is_missing(tmp_path: Path) -> None:
    node = LocalKafka(log_dir=tmp_path, java=tmp_path / "no-such-java")
    with pytest.raises(BrokerStartupError, match=r"needs a Java runtime \(17 or newer\)"):
        await node.astart()
    assert not node.running


def test_the_cached_jars_are_reused_without_maven() -> None:
    """Once resolved, no Maven and no network are needed."""
    resolve_kafka_classpath()  # resolves on a fresh machine; a no-op once cached
    resolved = resolve_kafka_classpath(mvn="/no/such/mvn")
    assert resolved == default_cache_dir()
    assert (resolved / f"kafka_2.13-{KAFKA_VERSION}.jar").exists()


def test_a_failed_resolution_says_so_and_leaves_no_half_cache(tmp_path: Path) -> None:
    cache = tmp_path / "cache" / KAFKA_VERSION
    with pytest.raises(BrokerStartupError, match="cannot run Maven"):
        resolve_kafka_classpath(cache, mvn=str(tmp_path / "no-such-mvn"))
    assert not cache.exists()
    assert [p.name for p in cache.parent.iterdir()] == [f".{KAFKA_VERSION}.lock"]


async def test_a_busy_port_is_reported_before_spawning(tmp_path: Path) -> None:
    async with LocalKafka(log_dir=tmp_path / "a") as node:
        busy = LocalKafka(log_dir=tmp_path / "b", port=node.port)
        with pytest.raises(BrokerStartupError, match="already in use"):
            await busy.astart()
