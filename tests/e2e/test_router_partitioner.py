"""Statements placed by any producer's partitioner are routed (issue 12, item 1).

A bank feed that produces with librdkafka (kcat, confluent-kafka, the Go and .NET
clients) places a keyed record with CRC32, not murmur2, so about five in six statements
land on a partition whose IBAN states another router holds. Measured before the
repartition step: with two routers, 290 of 600 such statements stayed held as
``unknown_iban`` for ever.

Here 600 statements over 60 IBANs are produced by confluent-kafka's own producer with its
default partitioner (``consistent_random``: CRC32 of the key), checked against CRC32, to
two and then three ``python -m routing.router`` processes sharing the 6 partitions. Every
statement must reach the destination its IBAN's state names, none may be held, and the
routers must say (log line ``statements_forwarded``) that they forwarded the misplaced
ones. kcat is used on Kafka only: Debian's kcat (librdkafka 2.0) fails the ApiVersions
exchange with the embedded Tansu broker, so it cannot produce there at all; confluent-kafka
bundles a newer librdkafka with the same default partitioner and runs on both.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Producer

from events.topics import Topics
from routing.broker import (
    EmbeddedBroker,
    ProducerParams,
    ensure_topics,
    make_producer,
    read_topic,
)
from routing.broker.partitioner import default_partition
from tests.e2e.routers import (
    duplicate_count,
    final_copies,
    log_text,
    produce_states,
    start_router,
    stop_process,
    tails,
)
from tests.e2e.test_router_scale_out import ISOLATED, last_assignment
from tests.eventually import eventually
from tests.fixtures.broker import TopicsFactory, unique_prefix
from tests.unit.router.factories import make_iban, statement

PARTITIONS = 6
BOUND = [make_iban(60_000 + n) for n in range(30)]
UNBOUND = [make_iban(61_000 + n) for n in range(30)]
STATEMENTS = 600


def crc32_partition(key: bytes) -> int:
    """Where librdkafka's default partitioner puts a keyed record."""
    return (zlib.crc32(key) & 0xFFFFFFFF) % PARTITIONS


def produce_with_librdkafka(bootstrap: str, topic: str) -> dict[str, int]:
    """600 statements over the 60 IBANs, by confluent-kafka's default partitioner; the
    partition each one landed on."""
    placed: dict[str, int] = {}
    errors: list[str] = []

    def delivered(err: object, msg: object) -> None:
        if err is not None:
            errors.append(str(err))
            return
        placed[json.loads(msg.value())["statement_id"]] = msg.partition()  # type: ignore[attr-defined]

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": False})
    ibans = BOUND + UNBOUND
    for n in range(STATEMENTS):
        iban = ibans[n % len(ibans)]
        producer.produce(
            topic, statement(f"crc-{n:04d}", iban), key=iban.encode(), on_delivery=delivered
        )
        producer.poll(0)
    assert producer.flush(60) == 0
    assert not errors, errors
    return placed


def produce_with_kcat(bootstrap: str, topic: str) -> dict[str, int]:
    """The same 600 statements through Debian's kcat, as docs/ingest.md shows it (default
    partitioner); the partition each one landed on, read back from the topic."""
    kcat = shutil.which("kcat")
    assert kcat, "kcat is needed (Debian: apt-get install kcat; .ci/run installs it)"
    ibans = BOUND + UNBOUND
    lines = "".join(
        f"{ibans[n % len(ibans)]}|{statement(f'crc-{n:04d}', ibans[n % len(ibans)]).decode()}\n"
        for n in range(STATEMENTS)
    )
    result = subprocess.run(
        [kcat, "-P", "-b", bootstrap, "-t", topic, "-K", "|", "-X", "acks=all"],
        input=lines.encode(), capture_output=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    records = asyncio.run(read_topic(bootstrap, topic))
    return {json.loads(r.value)["statement_id"]: r.partition for r in records}


@pytest.mark.parametrize("routers", [2, 3])
async def test_statements_placed_by_crc32_are_all_routed_by_several_routers(
    kafka_broker: EmbeddedBroker, make_topics: TopicsFactory, tmp_path: Path, routers: int
) -> None:
    topics: Topics = await make_topics(partitions=PARTITIONS, connector_ids=["acd"])
    await route_and_check(kafka_broker, topics, tmp_path, routers, produce_with_librdkafka)


async def test_statements_sent_by_kcat_are_all_routed_by_two_routers(
    apache_kafka: EmbeddedBroker, tmp_path: Path
) -> None:
    """Kafka only: Debian's kcat cannot talk to Tansu (see the module's docstring)."""
    topics = Topics(prefix=unique_prefix(), partitions=PARTITIONS)
    await ensure_topics(apache_kafka.bootstrap_servers, topics.specs(["acd"]))
    await route_and_check(apache_kafka, topics, tmp_path, 2, produce_with_kcat)


async def route_and_check(
    kafka_broker: EmbeddedBroker,
    topics: Topics,
    tmp_path: Path,
    routers: int,
    produce: Callable[[str, str], dict[str, int]],
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    producer = make_producer(ProducerParams(bootstrap))
    await producer.start()
    try:
        await produce_states(producer, topics, bound=BOUND, unbound=UNBOUND, pending=())
    finally:
        await producer.stop()
    logs = [tmp_path / f"router-{i}.log" for i in range(routers)]
    procs = [
        start_router(kafka_broker, topics, tmp_path / f"var-{i}", logs[i], dropped=ISOLATED)
        for i in range(routers)
    ]
    try:
        def alive() -> None:
            assert all(p.poll() is None for p in procs), tails(*logs)

        def split_whole(split: list[frozenset[int] | None]) -> bool:
            return (
                all(split)
                and sum(len(s or ()) for s in split) == PARTITIONS
                and frozenset(p for s in split for p in (s or ())) == frozenset(range(PARTITIONS))
            )

        await eventually(lambda: [last_assignment(log) for log in logs],
                         "the routers to split the partitions", within=180, interval=0.5,
                         done=split_whole, guard=alive, explain=lambda: tails(*logs))

        placed = await asyncio.to_thread(produce, bootstrap, topics.received)
        assert len(placed) == STATEMENTS
        ibans = BOUND + UNBOUND
        misplaced = 0
        for n in range(STATEMENTS):
            key = ibans[n % len(ibans)].encode()
            if produce is produce_with_librdkafka:  # kcat's placement is its own business
                assert placed[f"crc-{n:04d}"] == crc32_partition(key)
            misplaced += placed[f"crc-{n:04d}"] != default_partition(key, PARTITIONS)
        assert misplaced > STATEMENTS // 4  # many land off their murmur2 partition

        copies = await eventually(lambda: final_copies(bootstrap, topics),
                                  f"all {STATEMENTS} statements routed", within=180, interval=1,
                                  done=lambda found: len(found) >= STATEMENTS,
                                  explain=lambda: tails(*logs))
        for n in range(STATEMENTS):
            found = copies[f"crc-{n:04d}"]
            expected = topics.partner("acd") if n % 60 < 30 else topics.global_file
            assert {topic for topic, _ in found} == {expected}
        assert duplicate_count(copies) == 0
        assert await read_topic(bootstrap, topics.held) == []
        assert await read_topic(bootstrap, topics.invalid) == []
        assert any("statements_forwarded" in log_text(log) for log in logs), tails(*logs)
    finally:
        for proc in procs:
            stop_process(proc)
