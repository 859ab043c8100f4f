"""A release of held statements in chunks (issue 18, target 6), with in-memory fakes.

An approval releases ``release_chunk`` statements in its own step and the rest in the
following steps (``RouterCore.continue_releases``): the order holds across the chunks,
other IBANs are routed in between, a statement of the releasing IBAN never overtakes
what is still held, a mandate withdrawn mid-release keeps the rest held, each chunk's
tombstones leave only after its routed records, and a restart mid-release (a new core
over the recovered Table) resumes where it stopped.
"""

from __future__ import annotations

import json

from config.catalogue import default_catalogue
from routing.broker.partitioner import default_partition
from routing.router.core import RouterCore
from routing.router.pump import BatchPump
from routing.router.sink import MemorySink
from routing.router.step import Stepper
from tests.eventually import eventually
from tests.unit.router.factories import IBAN_A, make_iban, state, statement
from tests.unit.router.test_pump import TOPICS as PUMP_TOPICS
from tests.unit.router.test_pump import FakeConsumer, FakeHost, ids
from tests.unit.router.test_router_core import TOPICS, FakeRouter, Harness, P, make_router

HELD = 23
CHUNK = 5
NOW = "2026-01-01T00:00:00+00:00"
NEIGHBOUR = next(
    iban
    for iban in (make_iban(n) for n in range(100, 10_000))
    if iban != IBAN_A and default_partition(iban.encode(), TOPICS.partitions) == P
)


async def held_harness() -> Harness:
    """IBAN_A with a pending mandate and HELD statements held; NEIGHBOUR active, unbound."""
    sink = MemorySink()
    h = Harness(make_router(sink), sink)
    h.router.core.release_chunk = CHUNK
    await h.state(IBAN_A, connector_id="acd", mandate_status="pending")
    await h.state(NEIGHBOUR)
    for n in range(HELD):
        await h.statement(f"p{n:02d}")
    assert len(h.router.tables.get_held(IBAN_A) or []) == HELD
    return h


def expected(first: int = 0, last: int = HELD) -> list[str]:
    return [f"p{n:02d}" for n in range(first, last)]


async def continue_step(h: Harness) -> None:
    await h.router.run_step(h.router.core.continue_releases)


async def test_an_approval_releases_one_chunk_per_step_in_order() -> None:
    h = await held_harness()
    core = h.router.core
    partner = TOPICS.partner("acd")
    await h.state(IBAN_A, version=2, connector_id="acd")
    assert h.ids(partner) == expected(0, CHUNK)
    assert core.releasing_partitions() == {P}
    await h.statement("n1", NEIGHBOUR)  # routed between two chunks
    assert h.ids(TOPICS.global_file) == ["n1"]
    assert h.ids(partner) == expected(0, CHUNK)
    await continue_step(h)
    assert h.ids(partner) == expected(0, 2 * CHUNK)
    while core.releasing_partitions():
        await continue_step(h)
    assert h.ids(partner) == expected()
    assert h.router.tables.get_held(IBAN_A) is None
    assert core.stats["released"] == HELD
    # Each chunk's tombstones left after its routed records (Stepper.issue's order).
    tombstones = [
        n for n, out in enumerate(h.sink.records)
        if out.topic == h.router.tables.held_changelog_topic and out.value is None
    ]
    routed = [n for n, out in enumerate(h.sink.records) if out.topic == partner]
    assert len(tombstones) == HELD
    assert routed[CHUNK - 1] < tombstones[0] < routed[CHUNK]


async def test_a_statement_of_the_releasing_iban_releases_the_rest_first() -> None:
    h = await held_harness()
    await h.state(IBAN_A, version=2, connector_id="acd")
    await h.statement("late")
    assert h.ids(TOPICS.partner("acd")) == [*expected(), "late"]
    assert h.router.core.releasing_partitions() == frozenset()
    assert h.router.tables.get_held(IBAN_A) is None


async def test_a_mandate_withdrawn_mid_release_keeps_the_rest_held() -> None:
    h = await held_harness()
    core = h.router.core
    await h.state(IBAN_A, version=2, connector_id="acd")
    await h.state(IBAN_A, version=3, connector_id="acd", mandate_status="pending")
    await continue_step(h)
    assert h.ids(TOPICS.partner("acd")) == expected(0, CHUNK)
    assert core.releasing_partitions() == frozenset()
    held = h.router.tables.get_held(IBAN_A) or []
    assert [json.loads(e["raw"])["statement_id"] for e in held] == expected(CHUNK)
    assert core.held_by_reason() == {"mandate_pending": HELD - CHUNK}


async def test_a_restart_mid_release_resumes_it_and_loses_nothing() -> None:
    h = await held_harness()
    await h.state(IBAN_A, version=2, connector_id="acd")
    await continue_step(h)
    assert h.ids(TOPICS.partner("acd")) == expected(0, 2 * CHUNK)
    # A new worker: the held Table as recovered from its changelog, a new core; its
    # sweep on assignment finds the unfinished release and goes on with it.
    tables = h.router.tables
    tables.recover()
    sink = MemorySink()
    core = RouterCore(topics=TOPICS, catalogue=default_catalogue(), tables=tables,
                      release_chunk=CHUNK)
    router = FakeRouter(core, tables, Stepper(tables, lambda: sink), sink)
    core.keep_held_counts(range(TOPICS.partitions))
    await router.run_step(lambda now: core.sweep(set(range(TOPICS.partitions)), now))
    while core.releasing_partitions():
        await router.run_step(core.continue_releases)
    assert [json.loads(o.value or b"")["statement_id"] for o in sink.on(TOPICS.partner("acd"))
            ] == expected(2 * CHUNK)
    assert tables.get_held(IBAN_A) is None
    assert core.held_by_reason() == {}


async def test_the_pump_spreads_a_release_over_steps_and_routes_others_between() -> None:
    assert default_partition(IBAN_A.encode(), PUMP_TOPICS.partitions) == P
    consumer = FakeConsumer()
    host = FakeHost(MemorySink())
    host.core.release_chunk = 1
    pump = BatchPump(host, consumer, poll_timeout_ms=5)
    await pump.start()
    try:
        consumer.append(PUMP_TOPICS.iban_state, P, IBAN_A.encode(),
                        state(IBAN_A, connector_id="acd", mandate_status="pending"))
        consumer.append(PUMP_TOPICS.iban_state, P, NEIGHBOUR.encode(), state(NEIGHBOUR))
        for n in range(HELD):
            consumer.append(
                PUMP_TOPICS.received, P, IBAN_A.encode(), statement(f"p{n:02d}", IBAN_A)
            )
        host.active = frozenset({P})
        await pump.on_rebalance_complete(None)
        await eventually(lambda: host.core.held_by_reason() == {"mandate_pending": HELD},
                         "all held")
        consumer.append(PUMP_TOPICS.iban_state, P, IBAN_A.encode(),
                        state(IBAN_A, version=2, connector_id="acd"))
        consumer.append(PUMP_TOPICS.received, P, NEIGHBOUR.encode(), statement("n1", NEIGHBOUR))
        await eventually(lambda: ids(host.sink, PUMP_TOPICS.partner("acd")) == expected(),
                         "every held statement released, without any new record")
        # The neighbour came in the approval's batch: routed after the first chunk, long
        # before the release's end.
        partner = PUMP_TOPICS.partner("acd")
        order = [json.loads(o.value or b"")["statement_id"] for o in host.sink.records
                 if o.topic in (partner, PUMP_TOPICS.global_file)]
        assert order.index("n1") < order.index(f"p{HELD - 1:02d}")
        assert host.core.held_by_reason() == {}
        assert not host.fatal_errors
    finally:
        await pump.stop()
