"""Migration 0003 (statement identity) on a 0002 database holding data, SQLite and
PostgreSQL: the rows survive, the ledger's dedupe keys are recomputed so that a record
read again after the upgrade is still absorbed, the global file takes a second statement
under an id it already holds, and the downgrade goes back when no id is shared (and
refuses, changing nothing, when one is)."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

from routing.domain.model import Actor, Profile
from routing.ports import OutcomeRecord
from routing.store.engine import create_store_engine
from routing.store.global_file import SqlGlobalFileStore
from routing.store.ledger import SqlDeliveryLedger, dedupe_key
from routing.store.migrate import alembic_config, current_revision, head_revision, upgrade
from routing.store.tables import metadata
from tests.integration.global_file.factories import entry, iban
from tests.integration.store.test_store_contract import _schema_diffs

CAB_A = Actor("usr-a", "cab-a", Profile.COLLABORATEUR)
JAN = (date(2026, 1, 1), date(2026, 1, 31))
AT = datetime(2026, 1, 6, 7, 1, tzinfo=UTC)
CONTENT = b"01 stmt-1".ljust(120)
SHA = hashlib.sha256(CONTENT).hexdigest()

# The tables as revision 0002 made them (frozen here, like the migrations).
GFS_0002 = sa.table(
    "global_file_statements",
    *(sa.column(name) for name in (
        "statement_id", "cabinet_id", "iban", "client_ref", "format", "period_start",
        "period_end", "received_at", "source", "content", "content_sha256", "routed_at",
        "routing", "stored_at", "kafka_topic", "kafka_partition", "kafka_offset",
    )),
)
LEDGER_0002 = sa.table(
    "delivery_ledger",
    *(sa.column(name) for name in (
        "dedupe_key", "statement_id", "outcome", "at", "attempt", "iban", "cabinet_id",
        "connector_id", "detail", "recorded_at",
    )),
)


def dedupe_key_0002(statement_id: str, outcome: str, connector_id: str | None) -> str:
    """Revision 0002's dedupe key: (statement_id, outcome, attempt, at, connector_id)."""
    parts = (statement_id, outcome, "", AT.isoformat(timespec="microseconds"),
             connector_id or "")
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def record(statement_id: str, outcome: str, connector_id: str | None) -> OutcomeRecord:
    return OutcomeRecord(statement_id=statement_id, outcome=outcome, at=AT, iban=iban(1),
                         cabinet_id="cab-a", connector_id=connector_id)


def _downgrade_on(connection: Connection, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.downgrade(config, revision)


async def downgrade(url: str, revision: str) -> None:
    """Alembic's downgrade, in one transaction (as ``routing.store.migrate.upgrade``)."""
    engine = create_store_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_downgrade_on, revision)
    finally:
        await engine.dispose()


async def run(url: str, fn: Any) -> Any:
    engine = create_store_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            return await connection.run_sync(fn)
    finally:
        await engine.dispose()


def seed_0002(conn: Connection) -> None:
    conn.execute(sa.insert(GFS_0002), [{
        "statement_id": "stmt-1", "cabinet_id": "cab-a", "iban": iban(1),
        "client_ref": "client-1", "format": "cfonb120", "period_start": date(2026, 1, 5),
        "period_end": date(2026, 1, 5), "received_at": AT, "source": "feed",
        "content": CONTENT, "content_sha256": SHA, "routed_at": AT, "routing": None,
        "stored_at": AT, "kafka_topic": "t.statements.global-file", "kafka_partition": 0,
        "kafka_offset": 4,
    }])
    conn.execute(sa.insert(LEDGER_0002), [
        {"dedupe_key": dedupe_key_0002(sid, kind, connector), "statement_id": sid,
         "outcome": kind, "at": AT, "attempt": None, "iban": iban(1), "cabinet_id": "cab-a",
         "connector_id": connector, "detail": None, "recorded_at": AT}
        for sid, kind, connector in (("stmt-1", "stored_global_file", None),
                                     ("stmt-9", "delivered", "acd"))
    ])


def ledger_rows(conn: Connection) -> list[tuple[Any, ...]]:
    rows = conn.execute(sa.text(
        "SELECT statement_id, outcome, dedupe_key FROM delivery_ledger ORDER BY id"
    ))
    return [tuple(r) for r in rows]


def pk_columns(conn: Connection) -> list[str]:
    return list(sa.inspect(conn).get_pk_constraint("global_file_statements")
                ["constrained_columns"])


async def test_0003_upgrades_a_0002_database_with_data(database_url: str) -> None:
    await upgrade(database_url, "0002")
    await run(database_url, seed_0002)

    await upgrade(database_url)
    assert await current_revision(database_url) == head_revision()
    assert await run(database_url, lambda c: _schema_diffs(c, metadata)) == []
    assert await run(database_url, pk_columns) == ["iban", "statement_id", "content_sha256"]
    # Every dedupe key is the new formula's, so the records read again are absorbed.
    assert await run(database_url, ledger_rows) == [
        ("stmt-1", "stored_global_file", dedupe_key(record("stmt-1", "stored_global_file",
                                                           None))),
        ("stmt-9", "delivered", dedupe_key(record("stmt-9", "delivered", "acd"))),
    ]
    ledger = SqlDeliveryLedger.from_url(database_url)
    files = SqlGlobalFileStore.from_url(database_url)
    try:
        assert await ledger.record([record("stmt-9", "delivered", "acd")]) == 0
        [kept] = await files.statements(CAB_A, "cab-a", *JAN)
        assert (kept.statement_id, kept.content, kept.kafka_offset) == ("stmt-1", CONTENT, 4)
        # The old statement is its identity now: its redelivery is absorbed, another
        # account's stmt-1 and a reused id's other content are stored beside it.
        [again] = await files.store([entry("stmt-1", content=CONTENT)])
        assert again.created is False
        other, reused = await files.store([
            entry("stmt-1", account=2, cabinet_id="cab-b", content=b"B"),
            entry("stmt-1", content=b"corrected"),
        ])
        assert other.created and reused.created and reused.other_contents == (SHA,)
    finally:
        await ledger.close()
        await files.close()


async def test_0003_downgrades_when_no_id_is_shared(database_url: str) -> None:
    await upgrade(database_url, "0002")
    await run(database_url, seed_0002)
    await upgrade(database_url)

    await downgrade(database_url, "0002")
    assert await current_revision(database_url) == "0002"
    assert await run(database_url, pk_columns) == ["statement_id"]
    assert await run(database_url, ledger_rows) == [
        ("stmt-1", "stored_global_file", dedupe_key_0002("stmt-1", "stored_global_file", None)),
        ("stmt-9", "delivered", dedupe_key_0002("stmt-9", "delivered", "acd")),
    ]
    await upgrade(database_url)  # and up again
    assert await current_revision(database_url) == head_revision()


async def test_0003_refuses_to_downgrade_when_an_id_is_shared(database_url: str) -> None:
    await upgrade(database_url, "0003")
    files = SqlGlobalFileStore.from_url(database_url)
    try:
        await files.store([
            entry("stmt-1", content=b"A"),
            entry("stmt-1", account=2, cabinet_id="cab-b", content=b"B"),
        ])
    finally:
        await files.close()
    with pytest.raises(RuntimeError, match="several statements of the global file share "
                                           "the id stmt-1"):
        await downgrade(database_url, "0002")
    assert await current_revision(database_url) == "0003"  # rolled back, nothing lost
    assert await run(database_url, pk_columns) == ["iban", "statement_id", "content_sha256"]
