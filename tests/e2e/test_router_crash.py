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
from pathlib import Path

from aiokafka import AIOKafkaProducer

from events.topics import Topics
from routing.broker import EmbeddedBroker, ProducerParams, end_offsets, make_producer
from tests.e2e.routers import (
    approve,
    duplicate_count,
    final_copies,
    produce_states,
    start_router,
    stop_process,
)
from tests.eventually import eventually
from tests.unit.router.factories import make_iban, statement

BOUND = [make_iban(10_000 + i) for i in range(20)]
UNBOUND = [make_iban(20_000 + i) for i in range(20)]
PENDING = [make_iban(30_000 + i) for i in range(10)]
ALL = BOUND + UNBOUND + PENDING
BEFORE_KILL = 1_500
AFTER_KILL = 1_500


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


async def test_sigkill_mid_stream_loses_nothing(
    kafka_broker: EmbeddedBroker, topics: Topics, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    log = tmp_path / "router.log"
    producer = make_producer(ProducerParams(bootstrap))
    await producer.start()
    proc = None
    try:
        await produce_states(producer, topics, bound=BOUND, unbound=UNBOUND, pending=PENDING)

        proc = start_router(kafka_broker, topics, tmp_path / "var", log)
        await produce_statements(producer, topics, 0, BEFORE_KILL)

        def alive() -> None:
            assert proc is not None and proc.poll() is None, log.read_text()[-3000:]

        await eventually(lambda: routed_count(bootstrap, topics), f"300 routed (router log: {log})",
                         within=90, interval=0.02, done=lambda n: n >= 300, guard=alive)
        proc.kill()  # SIGKILL: no flush, no commit, no goodbye to the group
        proc.wait(timeout=30)
        killed_at = await routed_count(bootstrap, topics)

        await produce_statements(producer, topics, BEFORE_KILL, AFTER_KILL)
        proc = start_router(kafka_broker, topics, tmp_path / "var", log)
        await approve(producer, topics, PENDING)

        total = BEFORE_KILL + AFTER_KILL
        copies = await eventually(lambda: final_copies(bootstrap, topics),
                                  f"{total} routed (router log: {log})", within=180,
                                  interval=0.5, done=lambda c: len(c) >= total, guard=alive)
    finally:
        if proc is not None:
            stop_process(proc)
        await producer.stop()
    assert proc.returncode == 0, log.read_text()[-3000:]

    expected = {f"st-{n:05d}" for n in range(total)}
    assert set(copies) == expected
    assert killed_at < total, "the kill came after the router had finished"
    duplicates = duplicate_count(copies)
    pending_ids = [sid for sid, found in copies.items()
                   if json.loads(found[0][1])["iban"] in PENDING]
    assert pending_ids and all(copies[s][0][0] == topics.partner("acd") for s in pending_ids)
    print(f"routed {total} statements across a SIGKILL; {duplicates} duplicate copies")
