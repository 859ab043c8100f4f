"""Two router processes share the partitions; killing one loses nothing (issue 6, scale-out).

Two ``python -m routing.router`` processes (distinct ``DATA_DIR``, the same consumer
group ``<prefix>.router``) run against the session broker on a topic set of 6
partitions. The test:

1. produces ``iban.state`` for bound, unbound and pending IBANs, several per partition;
2. starts both routers and waits until their last ``router_partitions_assigned`` log
   lines show a non-empty, disjoint split of all 6 partitions;
3. produces states of *late* IBANs, only in the partitions of the router it will kill
   (the victim), after the split: those states are applied by the victim alone;
4. produces a steady stream of statements and SIGKILLs the victim mid-stream, once at
   least ``MIN_BEFORE_KILL`` statements were produced and the victim has committed
   (consumer group ``<prefix>.router``) the late states and some statements of
   pending IBANs, which it therefore held;
5. keeps producing, now also statements of the late IBANs, waits for the survivor to log
   an assignment of all 6 partitions, then approves the pending IBANs (state version 2).

Then every statement id must reach exactly one final destination, the right one for its
IBAN (partner ``acd`` for bound and, once approved, pending IBANs; the global file for
unbound ones), with duplicates (allowed by at-least-once after a SIGKILL) identical apart
from ``routing.decided_at``. Two sets are checked on their own, because they are what
only a changelog restore can route:

* statements of pending IBANs that the victim held *and committed*: the survivor never
  reads them again, so their release must come from the ``held`` Table it restored from
  the victim's changelog;
* statements of the late IBANs, all produced after the kill: the victim committed the
  late states' ``iban.state`` offsets, so the survivor never re-reads those states; it
  routes the statements correctly only if its ``iban-state`` Table was restored from the
  changelog (otherwise they would be held as unknown IBANs and never arrive). faust may
  have kept a standby replica of those partitions on the survivor; a standby is fed from
  the same changelog, so either way the Table comes from the changelog.

The takeover waits for the victim's group session to expire: the routers' 6 s session
(``RouterTuning``; no setting changes it) is most of it (benchmarks/failover.py measures
the takeover).
No timing is asserted; the deadlines only bound a hung run. Both processes are stopped (or
killed) in ``finally``.
"""

from __future__ import annotations

import asyncio
import re
import signal
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import murmur2

from events.topics import Topics
from routing.broker import EmbeddedBroker, ProducerParams, end_offsets, make_producer
from tests.e2e.routers import (
    DROPPED,
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
from tests.eventually import eventually
from tests.fixtures.broker import TopicsFactory
from tests.unit.router.factories import make_iban, state, statement

PARTITIONS = 6
ALL_PARTITIONS = frozenset(range(PARTITIONS))
STREAM_CHUNK = 50  # statements per tick of the steady stream
STREAM_TICK_S = 0.1  # about 500 statements/s
MIN_BEFORE_KILL = 1_000  # the victim routes a real share before it dies
AFTER_KILL = 2_000  # statements produced after the kill
BEFORE_KILL_CAP = 30_000  # the victim never met the kill conditions: fail, do not run on

_ASSIGNED = re.compile(r"router_partitions_assigned\s+partitions=\[([0-9, ]*)\]")
_RELEASED = "router_partitions_released"


def partition_of(iban: str) -> int:
    """The partition the producer's default partitioner gives the key (murmur2, as Kafka)."""
    return int(murmur2(iban.encode()) & 0x7FFFFFFF) % PARTITIONS


def per_partition(first: int, per: int) -> list[str]:
    """IBANs from ``make_iban(first)`` on, ``per`` in each of the 6 partitions."""
    found: dict[int, list[str]] = defaultdict(list)
    n = first
    while any(len(found[p]) < per for p in ALL_PARTITIONS):
        iban = make_iban(n)
        if len(found[partition_of(iban)]) < per:
            found[partition_of(iban)].append(iban)
        n += 1
    return [iban for p in sorted(ALL_PARTITIONS) for iban in found[p]]


BOUND = per_partition(10_000, 4)
UNBOUND = per_partition(20_000, 4)
PENDING = per_partition(30_000, 2)
EARLY = BOUND + UNBOUND + PENDING
# Candidates; only those in the victim's partitions get a state (after the split).
LATE_BOUND_CANDIDATES = per_partition(40_000, 2)
LATE_UNBOUND_CANDIDATES = per_partition(50_000, 2)


@dataclass
class Produced:
    """What the stream produced: where each statement landed, and of which IBAN."""

    where: dict[str, tuple[int, int]] = field(default_factory=dict)  # id -> (partition, offset)
    iban: dict[str, str] = field(default_factory=dict)
    after_kill: set[str] = field(default_factory=set)


# The caller's environment must not change the run: no metrics port the two processes
# would fight over, no transactions (Tansu has none), the default connector catalogue.
ISOLATED = DROPPED | {
    "METRICS_PORT", "LOG_FORMAT", "KAFKA_EXACTLY_ONCE", "CONNECTORS_FILE",
}


def last_assignment(log: Path, start: int = 0) -> frozenset[int] | None:
    """The partitions of the last ``router_partitions_assigned`` line (from byte ``start``)."""
    found = _ASSIGNED.findall(log_text(log, start))
    if not found:
        return None
    return frozenset(int(p) for p in found[-1].split(",") if p.strip())


async def committed(bootstrap: str, group: str, tps: Iterable[TopicPartition]) -> dict[
    TopicPartition, int
]:
    """The group's committed offsets on ``tps`` (absent: never committed)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="scale-out-test")
    await admin.start()
    try:
        answer = await admin.list_consumer_group_offsets(group, partitions=list(tps))
    finally:
        await admin.close()
    return {
        TopicPartition(tp.topic, tp.partition): int(meta.offset)
        for tp, meta in answer.items()
        if meta.offset is not None and meta.offset >= 0
    }


async def produce_stream(
    producer: AIOKafkaProducer,
    topics: Topics,
    produced: Produced,
    killed: asyncio.Event,
    late: list[str],
) -> None:
    """Statements at a steady rate until ``AFTER_KILL`` of them followed the kill.

    Before the kill they go to the early IBANs; after it, to the early and the late ones.
    """
    n = 0
    after = 0
    while after < AFTER_KILL:
        assert n < BEFORE_KILL_CAP, "the kill never came"
        now_killed = killed.is_set()
        ibans = EARLY + late if now_killed else EARLY
        chunk = []
        for _ in range(STREAM_CHUNK):
            sid = f"st-{n:06d}"
            iban = ibans[n % len(ibans)]
            chunk.append((sid, iban, await producer.send(
                topics.received, statement(sid, iban), key=iban.encode()
            )))
            n += 1
        for sid, iban, future in chunk:
            meta = await future
            assert meta.partition == partition_of(iban), "partitioner mismatch"
            produced.where[sid] = (meta.partition, meta.offset)
            produced.iban[sid] = iban
            if now_killed:
                produced.after_kill.add(sid)
        if now_killed:
            after += len(chunk)
        await asyncio.sleep(STREAM_TICK_S)


async def test_killing_one_of_two_routers_moves_its_partitions_and_loses_nothing(
    kafka_broker: EmbeddedBroker, make_topics: TopicsFactory, tmp_path: Path
) -> None:
    topics = await make_topics(partitions=PARTITIONS)
    bootstrap = kafka_broker.bootstrap_servers
    input_group = f"{topics.prefix}.router"
    logs = {"a": tmp_path / "router-a.log", "b": tmp_path / "router-b.log"}
    producer = make_producer(ProducerParams(bootstrap))
    await producer.start()
    procs: dict[str, Any] = {}
    stream: asyncio.Task[None] | None = None
    try:
        await produce_states(producer, topics, bound=BOUND, unbound=UNBOUND, pending=PENDING)
        for name in ("a", "b"):
            procs[name] = start_router(kafka_broker, topics, tmp_path / name, logs[name],
                                       dropped=ISOLATED, LOG_FORMAT="console")

        # 1. Both routers own a share: the last assignments are non-empty and disjoint.
        def alive() -> None:
            for proc in procs.values():
                assert proc.poll() is None, tails(*logs.values())

        def disjoint_and_whole(split: dict[str, frozenset[int] | None]) -> bool:
            a, b = split["a"], split["b"]
            return bool(a and b and not a & b and a | b == ALL_PARTITIONS)

        split = await eventually(
            lambda: {name: last_assignment(log) for name, log in logs.items()},
            "both routers to own a disjoint share", within=90, interval=0.2,
            done=disjoint_and_whole, guard=alive, explain=lambda: tails(*logs.values()))
        a = split["a"]
        victim, survivor = "a", "b"
        assert a is not None
        victim_parts = a
        late_bound = [i for i in LATE_BOUND_CANDIDATES if partition_of(i) in victim_parts]
        late_unbound = [i for i in LATE_UNBOUND_CANDIDATES if partition_of(i) in victim_parts]
        late = late_bound + late_unbound

        # 2. States applied only by the victim: its partitions, produced after the split.
        late_state_ends: dict[TopicPartition, int] = {}
        for iban in late:
            bound = iban in late_bound
            meta = await (await producer.send(
                topics.iban_state,
                state(iban, connector_id="acd" if bound else None),
                key=iban.encode(),
            ))
            tp = TopicPartition(topics.iban_state, meta.partition)
            late_state_ends[tp] = max(late_state_ends.get(tp, 0), meta.offset + 1)

        # 3. A steady stream; kill the victim once it committed the late states and some
        #    statements of pending IBANs (held by it, never to be read again).
        produced = Produced()
        killed = asyncio.Event()
        stream = asyncio.create_task(produce_stream(producer, topics, produced, killed, late))
        victim_received = [TopicPartition(topics.received, p) for p in sorted(victim_parts)]
        running = stream

        def streaming() -> None:
            assert not running.done(), "the stream ended before the kill"
            alive()

        def ready_to_kill(offsets: dict[TopicPartition, int]) -> bool:
            states_done = all(offsets.get(tp, 0) >= end for tp, end in late_state_ends.items())
            held_done = any(
                produced.iban[sid] in PENDING
                and where[0] in victim_parts
                and where[1] < offsets.get(TopicPartition(topics.received, where[0]), 0)
                for sid, where in list(produced.where.items())
            )
            return states_done and held_done and len(produced.where) >= MIN_BEFORE_KILL

        await eventually(
            lambda: committed(bootstrap, input_group, [*late_state_ends, *victim_received]),
            "the victim to commit the late states and some held statements", within=90,
            interval=0.1, done=ready_to_kill, guard=streaming,
            explain=lambda: tails(*logs.values()))
        assert not stream.done(), "the kill came after the stream ended"
        procs[victim].kill()  # SIGKILL: no flush, no commit, no goodbye to the group
        procs[victim].wait(timeout=30)
        killed.set()
        survivor_log_at = logs[survivor].stat().st_size
        # The premise: the victim still owned the partitions it was given at the split.
        assert last_assignment(logs[victim]) == victim_parts, tails(logs[victim])
        victim_text = log_text(logs[victim])
        assert _RELEASED not in victim_text[victim_text.rfind("router_partitions_assigned"):]

        # What the victim committed is final now: these offsets are never read again.
        at_kill = await committed(bootstrap, input_group, [*late_state_ends, *victim_received])
        assert all(at_kill.get(tp, 0) >= end for tp, end in late_state_ends.items())
        held_by_victim = {
            sid for sid, (p, offset) in list(produced.where.items())
            if produced.iban[sid] in PENDING and p in victim_parts
            and offset < at_kill.get(TopicPartition(topics.received, p), 0)
        }
        assert held_by_victim

        # 4. The survivor takes every partition (after the victim's session expires).
        await eventually(lambda: last_assignment(logs[survivor], survivor_log_at),
                         "the survivor to take every partition", within=90, interval=0.2,
                         done=lambda taken: taken == ALL_PARTITIONS,
                         guard=lambda: exited(procs[survivor], logs[survivor]),
                         explain=lambda: tails(logs[survivor]))

        # 5. Approve the pending IBANs: the survivor releases what either router held.
        await approve(producer, topics, PENDING)
        await stream
        total = len(produced.where)

        async def routed_count() -> int:
            ends = await end_offsets(bootstrap, [topics.global_file, topics.partner("acd")])
            if sum(ends.values()) < total:  # reading every copy only once all could be there
                return sum(ends.values())
            return len(await final_copies(bootstrap, topics))

        await eventually(routed_count, f"all {total} statements routed", within=120,
                         interval=0.5, done=lambda n: n >= total,
                         guard=lambda: exited(procs[survivor], logs[survivor]),
                         explain=lambda: tails(logs[survivor]))
        copies = await final_copies(bootstrap, topics)
    finally:
        if stream is not None and not stream.done():
            stream.cancel()
            await asyncio.gather(stream, return_exceptions=True)
        for proc in procs.values():
            stop_process(proc)
        await producer.stop()
    assert procs[survivor].returncode == 0, tails(logs[survivor])
    assert procs[victim].returncode == -signal.SIGKILL

    assert set(copies) == set(produced.where), "missing or unknown statement ids"
    expected_topic = {
        **dict.fromkeys(BOUND + PENDING + late_bound, topics.partner("acd")),
        **dict.fromkeys(UNBOUND + late_unbound, topics.global_file),
    }
    for sid, found in copies.items():
        topics_seen = {topic for topic, _ in found}
        assert topics_seen == {expected_topic[produced.iban[sid]]}, f"{sid} went to {topics_seen}"
    duplicates = duplicate_count(copies)

    # Only a restored Table can have routed these (see the module docstring).
    late_ids = {sid for sid in produced.after_kill if produced.iban[sid] in late}
    assert late_bound and late_unbound and late_ids
    assert {produced.iban[sid] for sid in late_ids} == set(late)
    assert all(copies[sid][0][0] == expected_topic[produced.iban[sid]] for sid in late_ids)
    assert all(copies[sid][0][0] == topics.partner("acd") for sid in held_by_victim)
    print(
        f"split a={sorted(victim_parts)} b={sorted(ALL_PARTITIONS - victim_parts)}; "
        f"{total} statements ({len(produced.after_kill)} after the kill), "
        f"{len(held_by_victim)} held by the killed router and released from its changelog, "
        f"{len(late_ids)} of IBANs only it had applied; {duplicates} duplicate copies"
    )
