"""Exactly-once on Apache Kafka: a router SIGKILLed again and again mid-stream, and a
``read_committed`` reader still sees every statement exactly once.

Kafka only (the ``apache_kafka`` fixture, not the parametrised ``kafka_broker``): the
embedded Tansu broker has no transactions (``InitProducerId`` fails), so there the router
stays at-least-once and the same drill leaves duplicate copies (tests/e2e/
test_router_crash.py counts them).

The router runs as ``python -m routing.router`` with ``KAFKA_EXACTLY_ONCE=true``. The test
produces statements for bound, unbound and pending IBANs in three waves, SIGKILLs the
router while it routes each of them (three kills), restarts it each time, approves the
pending IBANs, and then reads the final destinations ``read_committed``:

* every statement id is there exactly once (0 duplicates), in its one right destination;
* the pending IBANs' statements were held, then released once, to their partner.

No process is left behind: the router is stopped (or killed) in ``finally``.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

from aiokafka import AIOKafkaProducer

from config.catalogue import default_catalogue
from events.topics import Topics
from routing.broker import ProducerParams, end_offsets, ensure_topics, make_producer
from routing.broker.process import BrokerProcess
from tests.e2e.routers import (
    approve,
    duplicate_count,
    final_copies,
    log_text,
    produce_states,
    start_router,
    stop_process,
)
from tests.fixtures.broker import TEST_PARTITIONS, unique_prefix
from tests.unit.router.factories import make_iban, statement

BOUND = [make_iban(40_000 + i) for i in range(20)]
UNBOUND = [make_iban(50_000 + i) for i in range(20)]
PENDING = [make_iban(60_000 + i) for i in range(10)]
ALL = BOUND + UNBOUND + PENDING
WAVE = 1_000
KILLS = 3


async def produce_statements(
    producer: AIOKafkaProducer, topics: Topics, start: int, count: int
) -> None:
    futures = []
    for n in range(start, start + count):
        iban = ALL[n % len(ALL)]
        futures.append(
            await producer.send(topics.received, statement(f"st-{n:05d}", iban), key=iban.encode())
        )
        if n % 200 == 0:
            await asyncio.sleep(0.01)  # a steady stream rather than one burst
    await asyncio.gather(*futures)


async def written(bootstrap: str, topics: Topics) -> int:
    """Records written to the final destinations, committed or not (markers included)."""
    ends = await end_offsets(bootstrap, [topics.global_file, topics.partner("acd")])
    return sum(ends.values())


async def test_sigkill_again_and_again_routes_each_statement_exactly_once(
    apache_kafka: BrokerProcess, tmp_path: Path
) -> None:
    bootstrap = apache_kafka.bootstrap_servers
    topics = Topics(prefix=unique_prefix(), partitions=TEST_PARTITIONS)
    await ensure_topics(bootstrap, topics.specs(list(default_catalogue())))
    log = tmp_path / "router.log"
    data = tmp_path / "var"
    loop = asyncio.get_running_loop()
    producer = make_producer(ProducerParams(bootstrap))
    await producer.start()
    proc: subprocess.Popen[bytes] | None = None
    kills_mid_stream = 0
    try:
        await produce_states(producer, topics, bound=BOUND, unbound=UNBOUND, pending=PENDING)
        for wave in range(KILLS):
            proc = start_router(apache_kafka, topics, data, log, KAFKA_EXACTLY_ONCE="true")
            before = await written(bootstrap, topics)
            await produce_statements(producer, topics, wave * WAVE, WAVE)
            deadline = loop.time() + 120
            while await written(bootstrap, topics) < before + 200:
                assert proc.poll() is None, log_text(log)[-3000:]
                assert loop.time() < deadline, "the router wrote nothing: " + log_text(log)[-3000:]
                await asyncio.sleep(0.02)
            proc.kill()  # SIGKILL: no flush, no commit, no goodbye to the group
            proc.wait(timeout=30)
            proc = None
            copies = await final_copies(bootstrap, topics, isolation_level="read_committed")
            if len(copies) < (wave + 1) * WAVE:
                kills_mid_stream += 1

        proc = start_router(apache_kafka, topics, data, log, KAFKA_EXACTLY_ONCE="true")
        await approve(producer, topics, PENDING)
        total = KILLS * WAVE
        deadline = loop.time() + 240
        while True:
            copies = await final_copies(bootstrap, topics, isolation_level="read_committed")
            if len(copies) >= total:
                break
            assert proc.poll() is None, log_text(log)[-3000:]
            assert loop.time() < deadline, f"{len(copies)}/{total} routed: {log_text(log)[-3000:]}"
            await asyncio.sleep(0.5)
        stop_process(proc)
        assert proc.returncode == 0, log_text(log)[-3000:]
        copies = await final_copies(bootstrap, topics, isolation_level="read_committed")
        uncommitted = await final_copies(bootstrap, topics)
    finally:
        if proc is not None:
            stop_process(proc)
        await producer.stop()

    text = log_text(log)
    assert text.count("guarantee=exactly_once") == KILLS + 1, text[-3000:]
    assert kills_mid_stream >= 1, "every kill came after its wave was routed: no drill"
    assert set(copies) == {f"st-{n:05d}" for n in range(total)}
    assert duplicate_count(copies) == 0
    pending_ids = [s for s, found in copies.items() if json.loads(found[0][1])["iban"] in PENDING]
    assert len(pending_ids) == total * len(PENDING) // len(ALL)
    assert all(copies[s][0][0] == topics.partner("acd") for s in pending_ids)
    # The drill did abort work: records a read_uncommitted reader sees, and none is lost.
    aborted = sum(len(found) for found in uncommitted.values()) - total
    print(
        f"routed {total} statements across {KILLS} SIGKILLs ({kills_mid_stream} mid-stream): "
        f"0 duplicates read_committed, {aborted} aborted copies invisible to it"
    )
