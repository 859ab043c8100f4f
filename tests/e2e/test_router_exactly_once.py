"""Exactly-once on Apache Kafka: a router SIGKILLed again and again mid-stream, or frozen
and replaced, and a ``read_committed`` reader still sees every statement exactly once.

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

The second test is the zombie: a router frozen (SIGSTOP) past its session while another
takes its partitions over, then resumed; its transaction in flight is fenced.

No process is left behind: the router is stopped (or killed) in ``finally``.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from pathlib import Path

from aiokafka import AIOKafkaProducer, TopicPartition

from config.catalogue import default_catalogue
from events.topics import Topics
from routing.broker import ProducerParams, end_offsets, ensure_topics, make_producer
from routing.broker.process import BrokerProcess
from tests.e2e.routers import (
    approve,
    duplicate_count,
    exited,
    final_copies,
    log_text,
    produce_states,
    start_router,
    stop_process,
    tails,
)
from tests.e2e.test_router_scale_out import ISOLATED, committed, last_assignment
from tests.eventually import eventually
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
            await eventually(lambda: written(bootstrap, topics), "the router to write 200 records",
                             within=120, interval=0.02,
                             done=lambda n, floor=before + 200: n >= floor,
                             guard=lambda running=proc: exited(running, log),
                             explain=lambda: log_text(log)[-3000:])
            proc.kill()  # SIGKILL: no flush, no commit, no goodbye to the group
            proc.wait(timeout=30)
            proc = None
            copies = await final_copies(bootstrap, topics, isolation_level="read_committed")
            if len(copies) < (wave + 1) * WAVE:
                kills_mid_stream += 1

        proc = start_router(apache_kafka, topics, data, log, KAFKA_EXACTLY_ONCE="true")
        await approve(producer, topics, PENDING)
        total = KILLS * WAVE
        last = proc
        await eventually(
            lambda: final_copies(bootstrap, topics, isolation_level="read_committed"),
            f"all {total} statements routed", within=240, interval=0.5,
            done=lambda found: len(found) >= total, guard=lambda: exited(last, log),
            explain=lambda: log_text(log)[-3000:])
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


async def test_a_paused_router_commits_nothing_once_another_took_its_partitions(
    apache_kafka: BrokerProcess, tmp_path: Path
) -> None:
    """The zombie case: SIGSTOP past the session, the other router takes over, SIGCONT.

    The resumed router's transaction in flight belongs to transactional ids the other
    router has since initialised: the broker aborted it and refuses its commit
    (``ProducerFenced``), so its outputs never become visible and its offsets never move.
    Checked: committed input offsets never go backwards, and a ``read_committed`` reader
    sees every statement exactly once, in its right destination.
    """
    partitions = 6
    bootstrap = apache_kafka.bootstrap_servers
    topics = Topics(prefix=unique_prefix(), partitions=partitions)
    await ensure_topics(bootstrap, topics.specs(["acd"]))
    group = f"{topics.prefix}.router"
    inputs = [
        TopicPartition(t, p)
        for t in (topics.received, topics.iban_state)
        for p in range(partitions)
    ]
    bound, unbound = BOUND[:12], UNBOUND[:12]
    ibans = bound + unbound
    logs = {"victim": tmp_path / "victim.log", "other": tmp_path / "other.log"}
    producer = make_producer(ProducerParams(bootstrap, linger_ms=5))
    await producer.start()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    produced = 0
    loop = asyncio.get_running_loop()

    async def produce(count: int) -> None:
        nonlocal produced
        for _ in range(count):
            iban = ibans[produced % len(ibans)]
            await producer.send(
                topics.received, statement(f"z-{produced:05d}", iban), key=iban.encode()
            )
            produced += 1
        await producer.flush()

    try:
        await produce_states(producer, topics, bound=bound, unbound=unbound, pending=())
        for name, log in logs.items():
            procs[name] = start_router(
                apache_kafka,
                topics,
                tmp_path / name,
                log,
                dropped=ISOLATED,
                KAFKA_EXACTLY_ONCE="true",
            )
        await eventually(lambda: all(last_assignment(log) for log in logs.values()),
                         "both routers to be assigned partitions", within=120, interval=0.5,
                         explain=lambda: tails(*logs.values()))

        for _ in range(10):
            await produce(200)
        procs["victim"].send_signal(signal.SIGSTOP)
        other_log_start = len(log_text(logs["other"]))

        async def other_assignment() -> frozenset[int] | None:
            await produce(50)  # traffic while the group notices the frozen member
            return last_assignment(logs["other"], other_log_start)

        await eventually(other_assignment, "the other router to take every partition",
                         within=120, interval=0.5,
                         done=lambda taken: taken == frozenset(range(partitions)),
                         explain=lambda: tails(*logs.values()))
        await produce(1_000)

        async def committed_inputs() -> int:
            done = await committed(bootstrap, group, inputs)
            return sum(o for tp, o in done.items() if tp.topic == topics.received)

        await eventually(committed_inputs, "every produced statement's offset committed",
                         within=240, interval=0.5, done=lambda n: n >= produced,
                         explain=lambda: tails(*logs.values()))

        seen = await committed(bootstrap, group, inputs)
        victim_log_start = len(log_text(logs["victim"]))
        procs["victim"].send_signal(signal.SIGCONT)
        watch_until = loop.time() + 30
        while loop.time() < watch_until:
            for tp, offset in (await committed(bootstrap, group, inputs)).items():
                assert offset >= seen.get(tp, 0), f"{tp} moved back: {seen[tp]} -> {offset}"
                seen[tp] = offset
            await produce(20)
            await asyncio.sleep(0.2)
        victim_tail = log_text(logs["victim"], victim_log_start)

        copies = await eventually(
            lambda: final_copies(bootstrap, topics, isolation_level="read_committed"),
            f"all {produced} statements routed", within=180, interval=1,
            done=lambda found: len(found) >= produced,
            guard=lambda: exited(procs["other"], logs["other"]),
            explain=lambda: tails(*logs.values()))
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
            stop_process(proc)
        await producer.stop()

    assert set(copies) == {f"z-{n:05d}" for n in range(produced)}
    for sid, found in copies.items():
        n = int(sid.split("-")[1])
        expected = topics.partner("acd") if n % len(ibans) < len(bound) else topics.global_file
        assert {topic for topic, _ in found} == {expected}, sid
    assert duplicate_count(copies) == 0
    fenced = "ProducerFenced" in victim_tail
    print(f"zombie: {produced} statements, 0 duplicates read_committed; victim fenced: {fenced}")
