"""A paused router cannot commit the partitions another one took over (issue 12, item 3).

Two ``python -m routing.router`` processes share 6 partitions under a steady stream. One
(the victim) is frozen with SIGSTOP past its group session (6 s): faust's group moves its
partitions to the other, which routes them. The victim is then resumed with SIGCONT,
with the batch it was routing still in flight. Its commit of that batch carries the
generation of its old assignment, so the broker refuses it (``router_commit_fenced`` in
its log) and it waits for faust to assign it again.

Checked: while and after the victim resumes, no committed input offset of the router's
group ever moves backwards; in the end every statement reached exactly one destination,
the right one, any duplicates identical; and the victim's stale commit was fenced.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from aiokafka import TopicPartition

from events.topics import Topics
from routing.broker import EmbeddedBroker, ProducerParams, make_producer
from routing.router.app import RouterTuning
from tests.e2e.routers import (
    duplicate_count,
    final_copies,
    log_text,
    produce_states,
    start_router,
    stop_process,
    tails,
)
from tests.e2e.test_router_scale_out import ISOLATED, committed, last_assignment
from tests.eventually import eventually
from tests.fixtures.broker import TopicsFactory
from tests.unit.router.factories import make_iban, statement

PARTITIONS = 6
BOUND = [make_iban(70_000 + n) for n in range(24)]
UNBOUND = [make_iban(71_000 + n) for n in range(24)]
IBANS = BOUND + UNBOUND
SESSION_S = RouterTuning().session_timeout  # the router's session: the pause must outlast it


async def test_a_paused_router_cannot_commit_after_the_group_moved_on(
    kafka_broker: EmbeddedBroker, make_topics: TopicsFactory, tmp_path: Path
) -> None:
    topics: Topics = await make_topics(partitions=PARTITIONS, connector_ids=["acd"])
    bootstrap = kafka_broker.bootstrap_servers
    group = f"{topics.prefix}.router"
    inputs = [
        TopicPartition(t, p)
        for t in (topics.received, topics.iban_state)
        for p in range(PARTITIONS)
    ]
    logs = {"victim": tmp_path / "victim.log", "other": tmp_path / "other.log"}
    producer = make_producer(ProducerParams(bootstrap, linger_ms=5))
    await producer.start()
    procs = {}
    produced = 0
    loop = asyncio.get_running_loop()

    async def produce(count: int) -> None:
        nonlocal produced
        for _ in range(count):
            iban = IBANS[produced % len(IBANS)]
            await producer.send(
                topics.received, statement(f"f-{produced:05d}", iban), key=iban.encode()
            )
            produced += 1
        await producer.flush()

    try:
        await produce_states(producer, topics, bound=BOUND, unbound=UNBOUND, pending=())
        for name, log in logs.items():
            procs[name] = start_router(kafka_broker, topics, tmp_path / name, log, dropped=ISOLATED)
        await eventually(lambda: all(last_assignment(log) for log in logs.values()),
                         "both routers to be assigned partitions", within=120, interval=0.5,
                         explain=lambda: tails(*logs.values()))

        # Load, then freeze the victim mid-stream.
        for _ in range(10):
            await produce(200)
        procs["victim"].send_signal(signal.SIGSTOP)
        stopped_at = loop.time()
        other_log_start = len(log_text(logs["other"]))

        async def other_assignment() -> frozenset[int] | None:
            await produce(50)  # traffic while the group notices the frozen member
            return last_assignment(logs["other"], other_log_start)

        await eventually(other_assignment, "the other router to take every partition",
                         within=120, interval=0.5,
                         done=lambda taken: taken == frozenset(range(PARTITIONS)),
                         explain=lambda: tails(*logs.values()))
        assert loop.time() - stopped_at > SESSION_S
        await produce(1_000)
        # The other router routes everything produced so far, victim's partitions included.

        async def committed_inputs() -> int:
            done = await committed(bootstrap, group, inputs)
            return sum(o for tp, o in done.items() if tp.topic == topics.received)

        await eventually(committed_inputs, "every produced statement's offset committed",
                         within=240, interval=0.5, done=lambda n: n >= produced,
                         explain=lambda: tails(*logs.values()))

        # Resume the victim; watch the committed offsets while it comes back.
        before = await committed(bootstrap, group, inputs)
        victim_log_start = len(log_text(logs["victim"]))
        procs["victim"].send_signal(signal.SIGCONT)
        seen = dict(before)
        watch_until = loop.time() + 3 * SESSION_S
        while loop.time() < watch_until:
            now = await committed(bootstrap, group, inputs)
            for tp, offset in now.items():
                assert offset >= seen.get(tp, 0), f"{tp} moved back: {seen[tp]} -> {offset}"
                seen[tp] = offset
            await produce(20)
            await asyncio.sleep(0.2)

        victim_tail = log_text(logs["victim"], victim_log_start)
        assert "router_commit_fenced" in victim_tail, tails(*logs.values())
        assert all(p.poll() is None for p in procs.values()), tails(*logs.values())

        copies = await eventually(lambda: final_copies(bootstrap, topics),
                                  f"all {produced} statements routed", within=180, interval=1,
                                  done=lambda found: len(found) >= produced,
                                  explain=lambda: tails(*logs.values()))
        assert set(copies) == {f"f-{n:05d}" for n in range(produced)}
        for sid, found in copies.items():
            n = int(sid.split("-")[1])
            expected = topics.partner("acd") if n % len(IBANS) < len(BOUND) else topics.global_file
            assert {topic for topic, _ in found} == {expected}, sid
        print(f"fencing: {produced} statements, {duplicate_count(copies)} duplicate copies")
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
            stop_process(proc)
        await producer.stop()
