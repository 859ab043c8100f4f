"""``statement_router_held_statements{reason}``: what the router holds now, kept by the core
as it holds and releases, recounted from the Table once per assignment (the sweep)."""

from __future__ import annotations

from config.catalogue import default_catalogue
from routing.broker.partitioner import default_partition
from routing.observability import metrics
from routing.router.core import RouterCore
from routing.router.sink import MemorySink
from tests.unit.router.factories import IBAN_A, IBAN_B
from tests.unit.router.test_router_core import TOPICS, Harness, make_router


def gauge(reason: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(
        "statement_router_held_statements", {"reason": reason})


async def test_the_gauge_counts_held_statements_per_reason_until_released() -> None:
    sink = MemorySink()
    h = Harness(make_router(sink), sink)
    h.router.core.keep_held_counts(range(TOPICS.partitions))  # assigned: the gauge is its own
    b = default_partition(IBAN_B.encode(), TOPICS.partitions)
    await h.state(IBAN_B, partition=b, connector_id="acd", mandate_status="pending")
    await h.statement("u1")  # IBAN_A: no state at all
    await h.statement("u2")
    await h.statement("p1", IBAN_B)
    core = h.router.core
    assert core.held_by_reason() == {"unknown_iban": 2, "mandate_pending": 1}
    assert (gauge("unknown_iban"), gauge("mandate_pending")) == (2, 1)

    # Approving IBAN_B's mandate releases its statement: the reason's series falls to 0.
    await h.state(IBAN_B, partition=b, version=2, connector_id="acd")
    assert h.ids(TOPICS.partner("acd")) == ["p1"]
    assert core.held_by_reason() == {"unknown_iban": 2}
    assert (gauge("unknown_iban"), gauge("mandate_pending")) == (2, 0)

    # A restarted router (same Tables, new core) counts them again in its first sweep,
    # and forgets a partition it no longer owns.
    fresh = RouterCore(topics=TOPICS, catalogue=default_catalogue(), tables=h.router.tables)
    assert fresh.held_by_reason() == {}
    fresh.sweep(set(range(TOPICS.partitions)), "2026-01-01T00:00:00+00:00")
    assert fresh.held_by_reason() == {"unknown_iban": 2}
    assert gauge("unknown_iban") == 2
    a = default_partition(IBAN_A.encode(), TOPICS.partitions)
    fresh.keep_held_counts(p for p in range(TOPICS.partitions) if p != a)
    assert fresh.held_by_reason() == {}
    assert gauge("unknown_iban") == 0


async def test_a_hold_or_release_moves_only_its_reasons_and_a_recovery_recounts() -> None:
    sink = MemorySink()
    h = Harness(make_router(sink), sink)
    core = h.router.core
    core.release_chunk = 2
    everything = set(range(TOPICS.partitions))
    core.keep_held_counts(everything)
    b = default_partition(IBAN_B.encode(), TOPICS.partitions)
    await h.state(IBAN_B, partition=b, connector_id="acd", mandate_status="pending")
    for n in range(5):
        await h.statement(f"p{n}", IBAN_B)
    await h.statement("u1")  # IBAN_A: unknown
    assert (gauge("mandate_pending"), gauge("unknown_iban")) == (5, 1)

    # The review's finding: every hold and release rewrote every reason's series. Now a
    # series of another reason is left alone (here one set by hand to a stray value).
    stray = metrics.HELD_STATEMENTS.labels("connector_not_on_cabinet")
    stray.set(42)
    await h.statement("u2")
    await h.state(IBAN_B, partition=b, version=2, connector_id="acd")  # releases 2 of 5
    assert (gauge("mandate_pending"), gauge("unknown_iban")) == (3, 2)
    await h.router.run_step(core.continue_releases)  # 2 more
    assert (gauge("mandate_pending"), gauge("unknown_iban")) == (1, 2)
    assert gauge("connector_not_on_cabinet") == 42

    # A recovery (a new worker: the held Table rebuilt, a new core): its assignment sets
    # the gauge whole from the Table, the stray series included, and its sweep goes on
    # with the release.
    tables = h.router.tables
    tables.recover()
    fresh = RouterCore(topics=TOPICS, catalogue=default_catalogue(), tables=tables,
                       release_chunk=2)
    fresh.keep_held_counts(everything)
    assert gauge("connector_not_on_cabinet") == 0
    fresh.sweep(everything, "2026-01-01T00:00:00+00:00")
    assert fresh.held_by_reason() == {"unknown_iban": 2}
    assert (gauge("mandate_pending"), gauge("unknown_iban")) == (0, 2)
    assert h.ids(TOPICS.partner("acd")) == ["p0", "p1", "p2", "p3"]
