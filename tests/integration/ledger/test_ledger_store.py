"""The ``DeliveryLedger`` port on SQLite and PostgreSQL: idempotent recording, the trace
(order, status, routing trace sources), the recent statements and the cabinet boundary."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from events.dead_letters import replay_detail
from routing.domain.errors import UnknownIban
from routing.domain.identity import statement_key
from routing.domain.model import Actor, MandateStatus, Profile
from routing.ports import AmbiguousStatement, LedgerEntry, UnknownStatement, statement_status
from routing.store.global_file import SqlGlobalFileStore
from routing.store.ledger import SqlDeliveryLedger, dedupe_key
from routing.store.sql import SqlStateStore
from routing.store.tables import delivery_ledger
from tests.fixtures.databases import MakeStore
from tests.integration.global_file.factories import entry, iban, outcome

CAB_A = Actor("usr-a", "cab-a", Profile.COLLABORATEUR)
CAB_B = Actor("usr-b", "cab-b", Profile.ADMINISTRATEUR)
ROUTING = {
    "destination": "partner",
    "reason": "bound",
    "checks": [
        {"name": "connector_on_cabinet", "ok": True},
        {"name": "iban_bound", "ok": True},
        {"name": "mandate_approved", "ok": True},
    ],
    "state_version": 7,
    "decided_at": "2026-01-06T07:01:00+00:00",
}


@pytest.fixture
async def ledger(store: SqlStateStore) -> SqlDeliveryLedger:
    await store.create_cabinet("cab-a", "A")
    await store.create_cabinet("cab-b", "B")
    await store.add_iban(iban(1), "cab-a", "client-1")
    await store.set_mandate(iban(1), MandateStatus.APPROVED)
    await store.add_iban(iban(2), "cab-b", None)
    return SqlDeliveryLedger(store.engine)


async def rows(store: SqlStateStore) -> int:
    async with store.engine.connect() as conn:
        query = select(func.count()).select_from(delivery_ledger)
        return int((await conn.execute(query)).scalar_one())


async def test_the_same_outcome_twice_is_recorded_once(
    ledger: SqlDeliveryLedger, store: SqlStateStore
) -> None:
    delivered = outcome("s1", "delivered", 5, connector_id="acd", attempt=1, detail="HTTP 200")
    assert await ledger.record([delivered]) == 1
    assert await ledger.record([delivered]) == 0
    assert await ledger.record([delivered, delivered]) == 0
    # The same instant written in another time zone is the same record.
    paris = delivered.at.astimezone(timezone(timedelta(hours=1)))
    assert dedupe_key(replace(delivered, at=paris)) == dedupe_key(delivered)
    assert await rows(store) == 1


async def test_distinct_steps_are_all_recorded(
    ledger: SqlDeliveryLedger, store: SqlStateStore
) -> None:
    steps = [
        outcome("s1", "routed", 1, connector_id="acd", detail="partner:acd"),
        outcome("s1", "retrying", 2, connector_id="acd", attempt=1, detail="HTTP 503"),
        outcome("s1", "retrying", 2, connector_id="acd", attempt=2, detail="HTTP 503"),
        outcome("s1", "delivered", 3, connector_id="acd", attempt=3),
        outcome("s1", "delivered", 4, connector_id="acd", attempt=1),  # a real redelivery
    ]
    assert await ledger.record(steps) == 5
    assert await ledger.record([]) == 0
    assert await rows(store) == 5


async def test_concurrent_ledgers_record_once(
    ledger: SqlDeliveryLedger, store: SqlStateStore, database_url: str, make_store: MakeStore
) -> None:
    other = SqlDeliveryLedger(make_store(database_url).engine)
    batch = [outcome(f"c{i}", "routed", i % 60, detail="global-file") for i in range(30)]
    created = await asyncio.gather(ledger.record(batch), other.record(batch))
    assert sum(created) == 30
    assert await rows(store) == 30


async def test_the_trace_of_a_partner_statement(ledger: SqlDeliveryLedger) -> None:
    await ledger.record(
        [
            outcome("s1", "dead_lettered", 9, connector_id="acd", attempt=5, detail="HTTP 400"),
            outcome("s1", "routed", 1, connector_id="acd", detail="partner:acd"),
            outcome("s1", "retrying", 2, connector_id="acd", attempt=1, detail="timeout"),
        ]
    )
    trace = await ledger.trace(CAB_A, "s1")
    assert [e.outcome for e in trace.entries] == ["routed", "retrying", "dead_lettered"]
    assert trace.status == "dead_lettered"
    assert trace.cabinet_id == "cab-a" and trace.iban == iban(1)
    assert trace.global_file is None
    # The router's outcome carries no routing field: destination and reason from its detail.
    assert trace.routing == {
        "destination": "partner",
        "reason": "bound",
        "connector_id": "acd",
        "checks": None,
        "state_version": None,
        "decided_at": "2026-01-06T07:01:00+00:00",
        "source": "outcome_detail",
    }
    await ledger.record([outcome("s1", "replayed", 20, connector_id="acd")])
    assert (await ledger.trace(CAB_A, "s1")).status == "replayed"
    await ledger.record([outcome("s1", "delivered", 21, connector_id="acd", attempt=1)])
    assert (await ledger.trace(CAB_A, "s1")).status == "delivered"


async def test_a_routing_field_on_the_outcome_is_the_full_trace(
    ledger: SqlDeliveryLedger,
) -> None:
    await ledger.record(
        [outcome("s1", "routed", 1, connector_id="acd", detail="partner:acd", routing=ROUTING)]
    )
    trace = await ledger.trace(CAB_A, "s1")
    assert trace.status == "routed"
    assert trace.routing == {**ROUTING, "connector_id": "acd", "source": "outcome"}


async def test_a_held_then_released_statement(ledger: SqlDeliveryLedger) -> None:
    await ledger.record(
        [
            outcome("s1", "held", 1, detail="held:mandate_pending"),
            outcome("s1", "routed", 30, detail="global-file (released)"),
        ]
    )
    trace = await ledger.trace(CAB_A, "s1")
    assert trace.status == "routed"
    assert trace.routing is not None
    assert (trace.routing["destination"], trace.routing["reason"]) == ("global-file", "unbound")
    await ledger.record([outcome("s2", "held", 1, detail="held:mandate_pending")])
    held = await ledger.trace(CAB_A, "s2")
    assert held.status == "held"
    assert held.routing is not None and held.routing["reason"] == "mandate_pending"


async def test_a_global_file_statement_has_the_builders_trace(
    ledger: SqlDeliveryLedger, store: SqlStateStore
) -> None:
    files = SqlGlobalFileStore(store.engine)
    await ledger.record([outcome("g1", "routed", 1, detail="global-file")])
    assert (await ledger.trace(CAB_A, "g1")).status == "routed"
    await files.store([entry("g1")])
    # In the file before the ledger read the builder's outcome: already in_global_file.
    trace = await ledger.trace(CAB_A, "g1")
    assert trace.status == "in_global_file"
    assert trace.global_file is not None and trace.global_file.stored_at is not None
    assert trace.routing is not None
    assert trace.routing["source"] == "global_file"
    assert trace.routing["state_version"] == 3
    assert [c["name"] for c in trace.routing["checks"]] == [
        "connector_on_cabinet", "iban_bound", "mandate_approved",
    ]
    # Known only from the global file (the ledger is behind): still traceable.
    await files.store([entry("g2")])
    only_file = await ledger.trace(CAB_A, "g2")
    assert only_file.status == "in_global_file" and only_file.entries == ()


async def test_the_trace_is_for_the_statements_cabinet_only(ledger: SqlDeliveryLedger) -> None:
    await ledger.record([outcome("s1", "routed", 1, detail="global-file")])
    with pytest.raises(UnknownStatement, match="statement s1 is not known"):
        await ledger.trace(CAB_B, "s1")  # another cabinet's: as unknown as never seen
    with pytest.raises(UnknownStatement):
        await ledger.trace(CAB_A, "never-seen")
    # Held for an IBAN nobody knows: no cabinet, so nobody's statement.
    await ledger.record([outcome("u1", "held", 1, account=77, cabinet_id=None,
                                 detail="held:unknown_iban")])
    with pytest.raises(UnknownStatement):
        await ledger.trace(CAB_A, "u1")
    # No cabinet on the outcome, but the IBAN is registered: its cabinet decides.
    await ledger.record([outcome("k1", "held", 1, cabinet_id=None, detail="held:unknown_iban")])
    assert (await ledger.trace(CAB_A, "k1")).cabinet_id == "cab-a"


async def test_recent_statements_latest_first(ledger: SqlDeliveryLedger) -> None:
    records = []
    for n in range(7):
        sid = f"s{n}"
        records.append(outcome(sid, "routed", 2 * n, connector_id="acd", detail="partner:acd"))
    records.append(outcome("s5", "retrying", 50, connector_id="acd", attempt=2, detail="HTTP 503"))
    records.append(outcome("s6", "delivered", 13, connector_id="acd", attempt=1))
    records.append(outcome("x", "routed", 59, account=2, cabinet_id="cab-b"))
    await ledger.record(records)
    recent = await ledger.recent_statements(CAB_A, iban(1), limit=5)
    assert [(s.statement_id, s.status) for s in recent] == [
        ("s5", "retrying"),
        ("s6", "delivered"),
        ("s4", "routed"),
        ("s3", "routed"),
        ("s2", "routed"),
    ]
    assert recent[0].attempt == 2 and recent[0].detail == "HTTP 503"
    assert recent[0].connector_id == "acd"
    assert await ledger.recent_statements(CAB_A, iban(1), limit=0) == []
    with pytest.raises(UnknownIban):
        await ledger.recent_statements(CAB_A, iban(2))  # cab-b's IBAN, answered as unknown
    with pytest.raises(UnknownIban):
        await ledger.recent_statements(CAB_A, iban(3))


def _entries(*outcomes: str) -> list[LedgerEntry]:
    return [
        LedgerEntry("s", kind, outcome("s", kind, i).at, None, None, None, None, None, None,
                    outcome("s", kind, i).at)
        for i, kind in enumerate(outcomes)
    ]


@pytest.mark.parametrize(
    ("outcomes", "in_file", "status"),
    [
        ((), False, "unknown"),
        ((), True, "in_global_file"),
        (("held",), False, "held"),
        (("held", "routed"), False, "routed"),
        (("routed", "retrying"), False, "retrying"),
        (("routed", "retrying", "dead_lettered"), False, "dead_lettered"),
        (("routed", "dead_lettered", "replayed"), False, "replayed"),
        (("routed", "dead_lettered", "replayed", "delivered"), False, "delivered"),
        # A success is final, whatever a lagging clock put after it.
        (("routed", "delivered", "retrying"), False, "delivered"),
        (("routed", "stored_global_file"), False, "in_global_file"),
    ],
)
def test_statement_status(outcomes: tuple[str, ...], in_file: bool, status: str) -> None:
    assert statement_status(_entries(*outcomes), in_global_file=in_file) == status


async def test_the_operator_trace_ignores_the_cabinet_boundary(ledger: SqlDeliveryLedger) -> None:
    await ledger.record([outcome("s-b", "held", 1, account=2, cabinet_id="cab-b")])
    with pytest.raises(UnknownStatement):  # another cabinet's is answered as unknown
        await ledger.trace(CAB_A, "s-b")
    found = await ledger.operator_trace("s-b")
    assert found is not None and (found.cabinet_id, found.status) == ("cab-b", "held")
    assert found == await ledger.trace(CAB_B, "s-b")
    assert await ledger.operator_trace("s-never") is None


async def test_connector_deliveries_count_since_a_time(ledger: SqlDeliveryLedger) -> None:
    await ledger.record([
        outcome("old", "dead_lettered", 0, connector_id="acd", detail="HTTP 500 long ago"),
        outcome("s1", "retrying", 10, connector_id="acd", attempt=1, detail="HTTP 503"),
        outcome("s1", "delivered", 11, connector_id="acd", attempt=2),
        outcome("s2", "dead_lettered", 12, connector_id="acd", attempt=1, detail="HTTP 400"),
        outcome("s2", "replayed", 13, connector_id="acd"),
        outcome("s3", "delivered", 14, account=2, cabinet_id="cab-b", connector_id="quadra"),
        outcome("s4", "routed", 15, connector_id="cegid"),
    ])
    since = datetime(2026, 1, 6, 7, 5, tzinfo=UTC)
    acd, quadra = await ledger.connector_deliveries(since)
    assert (acd.connector_id, acd.delivered, acd.dead_lettered, acd.retries) == ("acd", 1, 1, 1)
    assert acd.success_ratio == 0.5
    assert acd.last_error == "HTTP 400" and acd.last_error_at == datetime(
        2026, 1, 6, 7, 12, tzinfo=UTC
    )
    assert (quadra.connector_id, quadra.delivered, quadra.success_ratio) == ("quadra", 1, 1.0)
    assert quadra.last_error is None
    assert await ledger.connector_deliveries(datetime(2026, 1, 7, tzinfo=UTC)) == []


# --- issue 13 item 2: a statement is (IBAN, id), told apart from a reused id by content ---

SHA_A, SHA_B, SHA_A2 = "a" * 64, "b" * 64, "c" * 64


async def test_the_same_step_of_two_statements_sharing_an_id_is_two_entries(
    ledger: SqlDeliveryLedger, store: SqlStateStore
) -> None:
    """Same id, same step, same instant, for two accounts (two cabinets) and for a reused
    id: three entries; the same record read again is still absorbed."""
    records = [
        outcome("stmt-1", "stored_global_file", 1, content_sha256=SHA_A),
        outcome("stmt-1", "stored_global_file", 1, account=2, cabinet_id="cab-b",
                content_sha256=SHA_B),
        outcome("stmt-1", "stored_global_file", 1, content_sha256=SHA_A2),
    ]
    assert await ledger.record(records) == 3
    assert await ledger.record(records) == 0
    assert await rows(store) == 3


async def test_each_cabinet_traces_its_own_statement_under_a_shared_id(
    ledger: SqlDeliveryLedger,
) -> None:
    await ledger.record(
        [
            outcome("stmt-1", "delivered", 2, connector_id="acd", content_sha256=SHA_A),
            outcome("stmt-1", "routed", 1, account=2, cabinet_id="cab-b",
                    detail="global-file", content_sha256=SHA_B),
        ]
    )
    mine = await ledger.trace(CAB_A, "stmt-1")
    theirs = await ledger.trace(CAB_B, "stmt-1")
    assert (mine.cabinet_id, mine.iban, mine.content_sha256) == ("cab-a", iban(1), SHA_A)
    assert (theirs.cabinet_id, theirs.iban, theirs.content_sha256) == ("cab-b", iban(2), SHA_B)
    assert [e.outcome for e in mine.entries] == ["delivered"]
    assert [e.outcome for e in theirs.entries] == ["routed"]
    assert mine.key == statement_key(iban(1), "stmt-1", SHA_A) != theirs.key
    assert mine.other_contents == () and theirs.other_contents == ()
    # Another cabinet's statement under the id is never a candidate: B asking for A's key
    # gets the same answer as for a key nobody has.
    with pytest.raises(UnknownStatement):
        await ledger.trace(CAB_B, "stmt-1", mine.key)


async def test_a_reused_id_lists_both_statements_and_the_key_chooses(
    ledger: SqlDeliveryLedger,
) -> None:
    await ledger.record(
        [
            outcome("stmt-2", "delivered", 1, connector_id="acd", content_sha256=SHA_A),
            outcome("stmt-2", "retrying", 3, connector_id="acd", attempt=1,
                    detail="HTTP 503", content_sha256=SHA_A2),
        ]
    )
    with pytest.raises(AmbiguousStatement) as raised:
        await ledger.trace(CAB_A, "stmt-2")
    candidates = raised.value.candidates
    assert [(c.content_sha256, c.status) for c in candidates] == [
        (SHA_A, "delivered"), (SHA_A2, "retrying"),
    ]
    assert all(c.iban is not None and iban(1) not in c.iban for c in candidates)  # masked
    first, second = [await ledger.trace(CAB_A, "stmt-2", c.key) for c in candidates]
    assert [e.outcome for e in first.entries] == ["delivered"]
    assert [e.outcome for e in second.entries] == ["retrying"]
    assert first.other_contents == (SHA_A2,) and second.other_contents == (SHA_A,)
    with pytest.raises(UnknownStatement):
        await ledger.trace(CAB_A, "stmt-2", "0" * 16)
    # The operator sees the same two, and chooses the same way.
    with pytest.raises(AmbiguousStatement):
        await ledger.operator_trace("stmt-2")
    chosen = await ledger.operator_trace("stmt-2", candidates[1].key)
    assert chosen is not None and chosen.content_sha256 == SHA_A2


async def test_replayed_dead_letters_are_the_places_replays_name(
    ledger: SqlDeliveryLedger,
) -> None:
    """What the monitor subtracts from a DLQ's records: each place a ``replayed`` outcome
    of that connector names in that DLQ, once, whatever else the ledger holds."""
    acd, cegid = "p.statements.partner.acd.dlq", "p.statements.partner.cegid.dlq"
    await ledger.record([
        outcome("s1", "dead_lettered", 1, connector_id="acd", detail="HTTP 400"),
        outcome("s1", "replayed", 2, connector_id="acd",
                detail=replay_detail(acd, [(0, 4), (2, 7)])),
        # forced again: the same place, counted once
        outcome("s1", "replayed", 3, connector_id="acd", detail=replay_detail(acd, [(2, 7)])),
        outcome("s2", "replayed", 4, connector_id="cegid", detail=replay_detail(cegid, [(1, 0)])),
        # another topic's places (another prefix) and a detail that is no replay's
        outcome("s3", "replayed", 5, connector_id="acd",
                detail=replay_detail("q.statements.partner.acd.dlq", [(0, 9)])),
        outcome("s4", "replayed", 6, connector_id="acd", detail="by hand"),
        outcome("s5", "delivered", 7, connector_id="acd", detail=replay_detail(acd, [(1, 1)])),
    ])
    assert await ledger.replayed_dead_letters({"acd": acd, "cegid": cegid, "quadra": "x"}) == {
        "acd": frozenset({(0, 4), (2, 7)}),
        "cegid": frozenset({(1, 0)}),
        "quadra": frozenset(),
    }
    assert await ledger.replayed_dead_letters({"cegid": cegid}) == {"cegid": frozenset({(1, 0)})}
    assert await ledger.replayed_dead_letters({}) == {}


async def test_the_replay_query_reads_an_index(store: SqlStateStore) -> None:
    """The monitor's query on every refresh: the (outcome, connector_id, at) index, not a
    scan of every outcome."""
    query = (
        "SELECT connector_id, detail FROM delivery_ledger "
        "WHERE outcome = 'replayed' AND connector_id IN ('acd', 'cegid')"
    )
    async with store.engine.connect() as conn:
        if store.engine.dialect.name == "sqlite":
            plan = " ".join(str(r[-1]) for r in await conn.exec_driver_sql(
                f"EXPLAIN QUERY PLAN {query}"))
        else:
            await conn.exec_driver_sql("SET enable_seqscan = off")
            plan = " ".join(str(r[0]) for r in await conn.exec_driver_sql(f"EXPLAIN {query}"))
    assert "ix_delivery_ledger_outcome_connector_id_at" in plan, plan
