"""The ``GlobalFileStore`` port on SQLite and PostgreSQL: idempotent on (IBAN, id, content),
period overlap, file order, and the cabinet boundary."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, date, datetime

import pytest
from sqlalchemy import func, select

from routing.domain.errors import OtherCabinet
from routing.domain.model import Actor, Profile
from routing.store.global_file import SqlGlobalFileStore
from routing.store.sql import SqlStateStore
from routing.store.tables import global_file_statements
from tests.fixtures.databases import MakeStore
from tests.integration.global_file.factories import entry

CAB_A = Actor("usr-a", "cab-a", Profile.COLLABORATEUR)
CAB_B = Actor("usr-b", "cab-b", Profile.ADMINISTRATEUR)
JAN = (date(2026, 1, 1), date(2026, 1, 31))


@pytest.fixture
def files(store: SqlStateStore) -> SqlGlobalFileStore:
    return SqlGlobalFileStore(store.engine)


async def count_rows(files: SqlGlobalFileStore, store: SqlStateStore) -> int:
    async with store.engine.connect() as conn:
        query = select(func.count()).select_from(global_file_statements)
        return int((await conn.execute(query)).scalar_one())


async def test_the_same_statement_twice_is_stored_once(
    files: SqlGlobalFileStore, store: SqlStateStore
) -> None:
    """A redelivery (same IBAN, id and content, read again at another offset) is absorbed."""
    [first] = await files.store([entry("s1", offset=10)])
    [again] = await files.store([entry("s1", offset=11)])
    assert first.created is True and again.created is False
    assert again.other_contents == ()
    assert again.stored_at == first.stored_at  # the first write's time, for the outcome
    assert first.stored_at.tzinfo is not None
    assert await count_rows(files, store) == 1
    [kept] = await files.statements(CAB_A, "cab-a", *JAN)
    assert kept.kafka_offset == 10 and kept.content == entry("s1").content


async def test_a_reused_id_with_other_content_is_kept_beside_the_first(
    files: SqlGlobalFileStore, store: SqlStateStore
) -> None:
    """Same account, same id, other content: another statement, never dropped, and the
    result names the content it sits beside (the builder's warning and outcome)."""
    [first] = await files.store([entry("s1", offset=10)])
    [second] = await files.store([entry("s1", offset=11, content=b"other bytes")])
    assert first.created is True and second.created is True
    assert second.other_contents == (first.content_sha256,)
    assert await count_rows(files, store) == 2
    kept = await files.statements(CAB_A, "cab-a", *JAN)
    assert sorted(e.content for e in kept) == sorted([entry("s1").content, b"other bytes"])
    [again] = await files.store([entry("s1", offset=12, content=b"other bytes")])
    assert again.created is False  # and the second one, redelivered, is a duplicate
    assert await count_rows(files, store) == 2


async def test_the_same_id_in_two_cabinets_is_two_statements(
    files: SqlGlobalFileStore, store: SqlStateStore
) -> None:
    """Two feeds send stmt-1 for accounts of two cabinets: each cabinet's file has its own."""
    a = entry("stmt-1", cabinet_id="cab-a", account=1, content=b"A's statement")
    b = entry("stmt-1", cabinet_id="cab-b", account=2, content=b"B's statement")
    results = await files.store([a, b])
    assert [(r.cabinet_id, r.created, r.other_contents) for r in results] == [
        ("cab-a", True, ()),
        ("cab-b", True, ()),
    ]
    [mine] = await files.statements(CAB_A, "cab-a", *JAN)
    [theirs] = await files.statements(CAB_B, "cab-b", *JAN)
    assert mine.content == b"A's statement" and theirs.content == b"B's statement"


async def test_duplicates_inside_one_batch_are_stored_once(
    files: SqlGlobalFileStore, store: SqlStateStore
) -> None:
    results = await files.store([entry("s1"), entry("s2"), entry("s1", offset=9)])
    assert [(r.statement_id, r.created) for r in results] == [("s1", True), ("s2", True)]
    assert await count_rows(files, store) == 2
    assert await files.store([]) == []


async def test_racing_builders_store_one_copy(
    store: SqlStateStore, database_url: str, make_store: MakeStore
) -> None:
    """Two builder processes (two engines) after a rebalance store the same batch at once."""
    other = make_store(database_url)
    mine, theirs = SqlGlobalFileStore(store.engine), SqlGlobalFileStore(other.engine)
    batch = [entry(f"r{i}") for i in range(20)]
    a, b = await asyncio.gather(mine.store(batch), theirs.store(batch))
    assert all(x.created != y.created for x, y in zip(a, b, strict=True))
    assert await count_rows(mine, store) == 20


async def test_the_period_selects_overlapping_statements_in_file_order(
    files: SqlGlobalFileStore,
) -> None:
    early = datetime(2026, 1, 6, 5, 0, tzinfo=UTC)
    await files.store(
        [
            entry("before", period=("2025-12-20", "2025-12-31")),
            entry("straddles-start", period=("2025-12-30", "2026-01-02")),
            entry("b-same-day", period=("2026-01-10", "2026-01-10")),
            entry("a-same-day-later", period=("2026-01-10", "2026-01-10")),
            entry("c-same-day-earlier", period=("2026-01-10", "2026-01-10"), received_at=early),
            entry("a-tie", period=("2026-01-10", "2026-01-10")),
            entry("straddles-end", period=("2026-01-31", "2026-02-02")),
            entry("after", period=("2026-02-01", "2026-02-01")),
            entry("other-cabinet", cabinet_id="cab-b", period=("2026-01-10", "2026-01-10")),
        ]
    )
    found = await files.statements(CAB_A, "cab-a", *JAN)
    assert [e.statement_id for e in found] == [
        "straddles-start",
        "c-same-day-earlier",  # same period_start: received first
        "a-same-day-later",  # same received_at: by statement_id
        "a-tie",
        "b-same-day",
        "straddles-end",
    ]
    one_day = await files.statements(CAB_A, "cab-a", date(2026, 1, 2), date(2026, 1, 2))
    assert [e.statement_id for e in one_day] == ["straddles-start"]


async def test_entries_come_back_whole(files: SqlGlobalFileStore) -> None:
    original = entry("whole", content=b"\x00\xff latin-1 \xe9", client_ref=None)
    await files.store([original])
    [back] = await files.statements(CAB_A, "cab-a", *JAN)
    assert back.stored_at is not None
    assert back == replace(original, stored_at=back.stored_at)
    assert back.received_at.tzinfo is not None and back.routed_at == original.routed_at


async def test_another_cabinet_is_refused_whatever_the_profile(
    files: SqlGlobalFileStore,
) -> None:
    await files.store([entry("s1")])
    with pytest.raises(OtherCabinet):
        await files.statements(CAB_B, "cab-a", *JAN)
    assert await files.statements(CAB_B, "cab-b", *JAN) == []


async def test_a_reversed_period_is_a_programming_error(files: SqlGlobalFileStore) -> None:
    with pytest.raises(ValueError, match="before it starts"):
        await files.statements(CAB_A, "cab-a", date(2026, 2, 1), date(2026, 1, 1))


async def test_latest_period_start_is_per_cabinet(files: SqlGlobalFileStore) -> None:
    assert await files.latest_period_start(CAB_A, "cab-a") is None
    await files.store([
        entry("a-jan"),
        entry("a-mar", period=("2026-03-01", "2026-03-31")),
        entry("b-may", cabinet_id="cab-b", period=("2026-05-01", "2026-05-31")),
    ])
    assert await files.latest_period_start(CAB_A, "cab-a") == date(2026, 3, 1)
    assert await files.latest_period_start(CAB_B, "cab-b") == date(2026, 5, 1)
    with pytest.raises(OtherCabinet):
        await files.latest_period_start(CAB_A, "cab-b")
