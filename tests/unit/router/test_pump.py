"""The batch pump with in-memory fakes: a consumer over lists, the core over dicts.

No faust and no broker: the pump is driven through the same calls faust makes
(``on_rebalance_complete``, ``on_partitions_revoked``) and reads a fake consumer, so
these tests check its own rules: states before statements, commits only after the
outputs are acknowledged, nothing read or committed once the partitions are revoked, and
a failed send stops it without committing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from config.catalogue import default_catalogue
from events.topics import Topics
from routing.broker.partitioner import default_partition
from routing.router.core import RouterCore
from routing.router.emit import Out
from routing.router.faust_glue import Membership
from routing.router.fencing import CommitFenced
from routing.router.pump import BatchPump
from routing.router.sink import MemorySink
from routing.router.step import Issued, Stepper
from tests.eventually import eventually
from tests.unit.router.dict_tables import DictTables
from tests.unit.router.factories import IBAN_A, state, statement

TOPICS = Topics("pump", 3)
P = default_partition(IBAN_A.encode(), TOPICS.partitions)


class FakeConsumer:
    """The subset of AIOKafkaConsumer the pump uses, over in-memory partition logs."""

    def __init__(self) -> None:
        self.logs: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = {}
        self.committed: dict[TopicPartition, int] = {}
        self.commits: list[tuple[frozenset[TopicPartition], dict[TopicPartition, int]]] = []
        self._assigned: list[TopicPartition] = []
        self._paused: set[TopicPartition] = set()
        self._positions: dict[TopicPartition, int] = {}

    def append(self, topic: str, partition: int, key: bytes, value: bytes | None) -> None:
        tp = TopicPartition(topic, partition)
        log = self.logs.setdefault(tp, [])
        log.append(
            ConsumerRecord(
                topic, partition, len(log), 0, 0, key, value, None, len(key), len(value or b""), ()
            )
        )

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def assign(self, tps: Sequence[TopicPartition]) -> None:
        self._assigned = list(tps)
        self._paused &= set(tps)
        self._positions = {tp: self.committed.get(tp, 0) for tp in tps}

    def assignment(self) -> set[TopicPartition]:
        return set(self._assigned)

    def pause(self, *tps: TopicPartition) -> None:
        self._paused.update(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self._paused.difference_update(tps)

    def paused(self) -> set[TopicPartition]:
        return set(self._paused)

    def highwater(self, tp: TopicPartition) -> int:
        return len(self.logs.get(tp, []))

    async def position(self, tp: TopicPartition) -> int:
        return self._positions[tp]

    async def getmany(
        self, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        batch = {}
        for tp in self._assigned:
            if tp in self._paused:
                continue
            records = self.logs.get(tp, [])[self._positions[tp] :]
            if records:
                batch[tp] = records
                self._positions[tp] += len(records)
        if not batch:
            await asyncio.sleep(timeout_ms / 1000)
        return batch

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append((frozenset(self._assigned), dict(offsets)))
        self.committed.update(offsets)


class GatedSink(MemorySink):
    """Acknowledges each ``send_many`` call only when the test opens its gate."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[tuple[asyncio.Future[Any], asyncio.Future[Any]]]] = []

    async def send_many(self, outs: Sequence[Out]) -> list[asyncio.Future[Any]]:
        acked = await super().send_many(outs)
        loop = asyncio.get_running_loop()
        gates = [(loop.create_future(), ack) for ack in acked]
        self.calls.append(gates)
        return [gate for gate, _ in gates]

    def open(self, call: int, error: BaseException | None = None) -> None:
        for gate, ack in self.calls[call]:
            if error is not None:
                gate.set_exception(error)
            else:
                gate.set_result(ack.result())

    def opened(self, call: int) -> bool:
        return all(gate.done() for gate, _ in self.calls[call])


class FailingSink(MemorySink):
    async def send_many(self, outs: Sequence[Out]) -> list[asyncio.Future[Any]]:
        raise RuntimeError("broker gone")


@dataclass
class FakeHost:
    """What the pump needs of a RouterApp."""

    sink: MemorySink
    topics: Topics = TOPICS
    tables: DictTables = field(default_factory=DictTables)
    active: frozenset[int] = frozenset()
    fatal_errors: list[BaseException] = field(default_factory=list)
    exactly_once: bool = False
    transactions: list[tuple[int, dict[TopicPartition, int] | None]] = field(default_factory=list)
    consumer: FakeConsumer | None = None

    def __post_init__(self) -> None:
        self.core = RouterCore(
            topics=self.topics, catalogue=default_catalogue(), tables=self.tables
        )
        self.stepper = Stepper(self.tables, lambda: self.sink)

    async def run_step(self, step: Any) -> None:
        await self.stepper.run_step(step)

    async def issue_step(self, step: Any) -> Issued:
        return await self.stepper.issue(step)

    async def settle_step(self, issued: Issued) -> None:
        await self.stepper.settle(issued)

    async def run_transaction(
        self, step: Any, partition: int, offsets: dict[TopicPartition, int] | None
    ) -> None:
        """A transaction's bookkeeping: the step alone, then its offsets with it."""
        self.transactions.append((partition, offsets))
        assert self.consumer is not None
        await self.stepper.run_step(step)
        if offsets:
            await self.consumer.commit(offsets)

    async def fatal(self, exc: BaseException, where: str) -> None:
        self.fatal_errors.append(exc)

    member: Membership | None = None

    def active_partitions(self) -> frozenset[int]:
        return self.active

    def membership(self) -> Membership | None:
        return self.member


def ids(sink: MemorySink, topic: str) -> list[str]:
    return [json.loads(o.value or b"")["statement_id"] for o in sink.on(topic)]


@pytest.fixture
async def pumped() -> Any:
    consumer = FakeConsumer()
    host = FakeHost(MemorySink())
    pump = BatchPump(host, consumer, poll_timeout_ms=5)  # type: ignore[arg-type]
    await pump.start()
    try:
        yield host, consumer, pump
    finally:
        await pump.stop()


async def test_states_first_then_statements_committed_after_their_outputs(pumped: Any) -> None:
    host, consumer, pump = pumped
    received = TopicPartition(TOPICS.received, P)
    for n in range(3):
        consumer.append(TOPICS.received, P, IBAN_A.encode(), statement(f"s{n}", IBAN_A))
    consumer.append(TOPICS.iban_state, P, IBAN_A.encode(), state(IBAN_A, connector_id="acd"))
    host.active = frozenset({P})
    await pump.on_rebalance_complete(None)
    await eventually(lambda: consumer.committed.get(received) == 3, "statements committed")
    # The state was applied before the statements, which were read after it: none held.
    assert ids(host.sink, TOPICS.partner("acd")) == ["s0", "s1", "s2"]
    assert host.sink.on(TOPICS.held) == []
    assert consumer.committed[TopicPartition(TOPICS.iban_state, P)] == 1
    assert all(tps == consumer.assignment() for tps, _ in consumer.commits)


async def test_nothing_is_read_or_committed_once_revoked(pumped: Any) -> None:
    host, consumer, pump = pumped
    consumer.append(TOPICS.iban_state, P, IBAN_A.encode(), state(IBAN_A, connector_id="acd"))
    host.active = frozenset({P})
    await pump.on_rebalance_complete(None)
    await eventually(lambda: bool(consumer.committed), "the state committed")
    await pump.on_partitions_revoked(None)
    commits = len(consumer.commits)
    consumer.append(TOPICS.received, P, IBAN_A.encode(), statement("late", IBAN_A))
    await asyncio.sleep(0.1)
    assert consumer.assignment() == set() and pump.assigned == frozenset()
    assert len(consumer.commits) == commits and host.sink.on(TOPICS.partner("acd")) == []


@pytest.fixture
async def gated() -> Any:
    """A pump over a gated sink, whose first batch (a state of IBAN_A, bound to ``acd``)
    is issued and not acknowledged: the sink's call 0."""
    consumer = FakeConsumer()
    sink = GatedSink()
    host = FakeHost(sink)
    pump = BatchPump(host, consumer, poll_timeout_ms=5)  # type: ignore[arg-type]
    consumer.append(TOPICS.iban_state, P, IBAN_A.encode(), state(IBAN_A, connector_id="acd"))
    await pump.start()
    try:
        host.active = frozenset({P})
        await pump.on_rebalance_complete(None)  # nothing held: the sweep sends nothing
        await eventually(lambda: len(sink.calls) == 1, "the state's batch issued")
        yield host, consumer, sink
    finally:
        for n in range(len(sink.calls)):
            if not sink.opened(n):
                sink.open(n)
        await pump.stop()


async def test_the_next_batch_is_routed_while_the_last_ones_acks_are_awaited(gated: Any) -> None:
    """One batch in flight: routed and issued, committed only once acknowledged, in order."""
    host, consumer, sink = gated
    received = TopicPartition(TOPICS.received, P)
    consumer.append(TOPICS.received, P, IBAN_A.encode(), statement("s0", IBAN_A))
    # Batch 2 (s0) is routed and issued while batch 1 (the state) is unacknowledged.
    await eventually(lambda: len(sink.calls) == 2, "s0 issued before the state's acks")
    assert ids(sink, TOPICS.partner("acd")) == ["s0"] and consumer.commits == []
    consumer.append(TOPICS.received, P, IBAN_A.encode(), statement("s1", IBAN_A))
    await asyncio.sleep(0.1)
    assert len(sink.calls) == 2, "a third batch was routed with two unacknowledged"
    sink.open(1)  # s0's acks first: still nothing committed before the state's
    await asyncio.sleep(0.05)
    assert consumer.commits == []
    sink.open(0)
    await eventually(lambda: consumer.committed.get(received) == 1, "s0 committed")
    assert [offsets for _, offsets in consumer.commits][:2] == [
        {TopicPartition(TOPICS.iban_state, P): 1},
        {received: 1},
    ]
    await eventually(lambda: len(sink.calls) == 3, "s1 issued")
    sink.open(2)
    await eventually(lambda: consumer.committed.get(received) == 2, "s1 committed")
    assert ids(sink, TOPICS.partner("acd")) == ["s0", "s1"] and host.fatal_errors == []


async def test_failed_acks_of_the_batch_in_flight_stop_the_pump_before_any_later_commit(
    gated: Any,
) -> None:
    host, consumer, sink = gated
    consumer.append(TOPICS.received, P, IBAN_A.encode(), statement("s0", IBAN_A))
    await eventually(lambda: len(sink.calls) == 2, "s0 issued")
    sink.open(1)
    sink.open(0, RuntimeError("broker gone"))
    await eventually(lambda: bool(host.fatal_errors), "the pump's fatal error")
    consumer.append(TOPICS.received, P, IBAN_A.encode(), statement("s1", IBAN_A))
    await asyncio.sleep(0.1)
    # Neither the failed batch nor the one routed after it is committed, and no further
    # batch is routed: both are read again after the restart.
    assert consumer.commits == [] and len(sink.calls) == 2
    assert "broker gone" in repr(host.fatal_errors[0])


async def test_a_failed_send_stops_the_pump_without_committing() -> None:
    consumer = FakeConsumer()
    host = FakeHost(FailingSink())
    pump = BatchPump(host, consumer, poll_timeout_ms=5)  # type: ignore[arg-type]
    await pump.start()
    try:
        consumer.append(TOPICS.received, P, IBAN_A.encode(), statement("s0", IBAN_A))
        host.active = frozenset({P})
        await pump.on_rebalance_complete(None)
        await eventually(lambda: bool(host.fatal_errors), "the pump's fatal error")
        assert consumer.commits == []
    finally:
        await pump.stop()


async def test_the_held_order_survives_a_restart_of_the_tables(pumped: Any) -> None:
    host, consumer, pump = pumped
    consumer.append(
        TOPICS.iban_state,
        P,
        IBAN_A.encode(),
        state(IBAN_A, connector_id="acd", mandate_status="pending"),
    )
    for n in range(50):
        consumer.append(TOPICS.received, P, IBAN_A.encode(), statement(f"s{n:02d}", IBAN_A))
    host.active = frozenset({P})
    await pump.on_rebalance_complete(None)
    received = TopicPartition(TOPICS.received, P)
    await eventually(lambda: consumer.committed.get(received) == 50, "all held")
    # A rebalance: the index is rebuilt from the Table's keys alone.
    await pump.on_partitions_revoked(None)
    await pump.on_rebalance_complete(None)
    consumer.append(
        TOPICS.iban_state, P, IBAN_A.encode(), state(IBAN_A, version=2, connector_id="acd")
    )
    await eventually(lambda: len(host.sink.on(TOPICS.partner("acd"))) == 50, "all released")
    assert ids(host.sink, TOPICS.partner("acd")) == [f"s{n:02d}" for n in range(50)]


async def test_a_fenced_commit_drops_the_partitions_until_the_next_assignment(
    pumped: Any,
) -> None:
    host, consumer, pump = pumped
    generations: list[int] = []
    fence = {"on": False}

    async def commit_as_member(_: Any, member: Membership, offsets: Any) -> None:
        generations.append(member.generation)
        if fence["on"]:
            raise CommitFenced("IllegalGenerationError")
        await consumer.commit(offsets)

    pump.commit_as_member = commit_as_member
    received = TopicPartition(TOPICS.received, P)
    consumer.append(TOPICS.iban_state, P, IBAN_A.encode(), state(IBAN_A, connector_id="acd"))
    consumer.append(TOPICS.received, P, IBAN_A.encode(), statement("s0", IBAN_A))
    host.active, host.member = frozenset({P}), Membership("g", 4, "m")
    await pump.on_rebalance_complete(None)
    await eventually(lambda: consumer.committed.get(received) == 1, "s0 committed")

    # The group moved on without this worker (a long pause): its next commit is refused.
    fence["on"] = True
    host.member = Membership("g", 5, "m")  # faust's new generation, not this assignment's
    consumer.append(TOPICS.received, P, IBAN_A.encode(), statement("s1", IBAN_A))
    await eventually(lambda: pump.fenced == 1, "the commit fenced")
    assert generations[-1] == 4  # committed as the assignment's generation, not the latest
    assert consumer.committed[received] == 1 and pump.assigned == frozenset()
    assert consumer.assignment() == set() and host.fatal_errors == []

    # faust assigns again: the pump reads from the committed offset, as the owner would.
    fence["on"] = False
    await pump.on_rebalance_complete(None)
    await eventually(lambda: consumer.committed.get(received) == 2, "s1 committed")
    assert generations[-1] == 5
    assert ids(host.sink, TOPICS.partner("acd")) == ["s0", "s1", "s1"]  # a duplicate, no loss


async def test_exactly_once_makes_one_transaction_per_input_partition() -> None:
    """Each partition's states and statements, and only its offsets, in one transaction."""
    consumer = FakeConsumer()
    host = FakeHost(MemorySink(), exactly_once=True, consumer=consumer)
    pump = BatchPump(host, consumer, poll_timeout_ms=5)  # type: ignore[arg-type]
    other = (P + 1) % TOPICS.partitions
    await pump.start()
    try:
        for n in range(3):
            consumer.append(TOPICS.received, P, IBAN_A.encode(), statement(f"s{n}", IBAN_A))
        consumer.append(TOPICS.iban_state, P, IBAN_A.encode(), state(IBAN_A, connector_id="acd"))
        consumer.append(TOPICS.received, other, IBAN_A.encode(), statement("off", IBAN_A))
        host.active = frozenset({P, other})
        await pump.on_rebalance_complete(None)
        received = TopicPartition(TOPICS.received, P)
        await eventually(lambda: consumer.committed.get(received) == 3, "P committed")
        await eventually(
            lambda: consumer.committed.get(TopicPartition(TOPICS.received, other)) == 1,
            "the other partition committed",
        )
    finally:
        await pump.stop()
    # The sweep of each partition first (no offsets), then one transaction per partition.
    assert sorted(p for p, offsets in host.transactions if offsets is None) == sorted({P, other})
    committed = [(p, offsets) for p, offsets in host.transactions if offsets]
    # (The statement off its key's partition is forwarded to P and read there again.)
    assert {p for p, _ in committed} == {P, other}
    for p, offsets in committed:
        assert offsets is not None and {tp.partition for tp in offsets} == {p}
    # States before statements within the partition: none held.
    assert ids(host.sink, TOPICS.partner("acd"))[:3] == ["s0", "s1", "s2"]
    assert host.sink.on(TOPICS.held) == []
    assert host.fatal_errors == []
