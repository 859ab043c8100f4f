"""The cabinets' global files in the state store (``GlobalFileStore`` on SQL).

Why a table and not files on disk: the builder must be idempotent (DESIGN §5), and a
primary key plus ``INSERT ... ON CONFLICT DO NOTHING`` gives that on SQLite and PostgreSQL
alike, in the same transaction as the rest of the batch, with no window where a crash
leaves half a file. The download assembles the file on request, in a deterministic order,
so the same period always yields the same bytes.

The key is the statement's identity and its content, (IBAN, statement_id,
content_sha256) (``routing.domain.identity``): a redelivery hits it and changes nothing,
while another account's statement under the same id, or another content under a reused
id, is a row of its own, never dropped in favour of the first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Table, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.dml import Insert

from routing.domain import rules
from routing.domain.ids import ensure_valid_id
from routing.domain.model import Actor
from routing.ports import GlobalFileEntry, GlobalFileStore, StoredStatement
from routing.store.engine import EngineStore, record_of
from routing.store.tables import global_file_statements as gfs

_CHUNK = 200

#: The global file's key: a statement's identity, then its content (routing.domain.identity).
IDENTITY = ("iban", "statement_id", "content_sha256")


def utcnow() -> datetime:
    return datetime.now(UTC)


def insert_ignoring_duplicates(
    engine: AsyncEngine, table: Table, index_elements: Sequence[str]
) -> Insert:
    """``INSERT ... ON CONFLICT (index_elements) DO NOTHING`` in the engine's dialect.

    Both supported dialects spell it the same way; the conflict target is explicit so
    that any *other* constraint violation still raises instead of being swallowed.
    """
    name = engine.dialect.name
    if name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=index_elements)
    if name == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=index_elements)
    raise NotImplementedError(f"no idempotent insert for the {name} dialect")


def chunks(values: Sequence[Any], size: int = _CHUNK) -> list[Sequence[Any]]:
    return [values[start : start + size] for start in range(0, len(values), size)]


def identity_of(entry: GlobalFileEntry) -> tuple[str, str, str]:
    return (entry.iban, entry.statement_id, entry.content_sha256)


def entry_of(row: Row[Any]) -> GlobalFileEntry:
    return record_of(GlobalFileEntry, row, content=bytes(row.content))


class SqlGlobalFileStore(EngineStore, GlobalFileStore):
    """``GlobalFileStore`` on the state store's database (SQLite or PostgreSQL).

    Share the ``SqlStateStore``'s engine (``store.engine``) with ``owns_engine=False``:
    one pool per process, and ``close`` then leaves the engine to its owner.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        owns_engine: bool = False,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        super().__init__(engine, owns_engine=owns_engine)
        self._clock = clock

    async def store(self, entries: Sequence[GlobalFileEntry]) -> list[StoredStatement]:
        unique: dict[tuple[str, str, str], GlobalFileEntry] = {}
        for entry in entries:
            unique.setdefault(identity_of(entry), entry)  # first one wins, as in the table
        if not unique:
            return []
        now = self._clock().astimezone(UTC)
        rows = [
            {
                "statement_id": e.statement_id,
                "cabinet_id": e.cabinet_id,
                "iban": e.iban,
                "client_ref": e.client_ref,
                "format": e.format,
                "period_start": e.period_start,
                "period_end": e.period_end,
                "received_at": e.received_at,
                "source": e.source,
                "content": e.content,
                "content_sha256": e.content_sha256,
                "routed_at": e.routed_at,
                "routing": e.routing,
                "stored_at": now,
                "kafka_topic": e.kafka_topic,
                "kafka_partition": e.kafka_partition,
                "kafka_offset": e.kafka_offset,
            }
            for e in unique.values()
        ]
        insert = insert_ignoring_duplicates(self._engine, gfs, list(IDENTITY))
        created: set[tuple[str, str, str]] = set()
        # (iban, statement_id) -> {content_sha256: (cabinet_id, stored_at)}
        stored: dict[tuple[str, str], dict[str, tuple[str, datetime]]] = {}
        async with self._write() as conn:
            # executemany, compiled once (see SqlDeliveryLedger.record).
            result = await conn.execute(
                insert.returning(gfs.c.iban, gfs.c.statement_id, gfs.c.content_sha256), rows
            )
            created.update((r.iban, r.statement_id, r.content_sha256) for r in result)
            for ids in chunks(sorted({sid for _, sid, _ in unique})):
                found = await conn.execute(
                    select(
                        gfs.c.iban,
                        gfs.c.statement_id,
                        gfs.c.content_sha256,
                        gfs.c.cabinet_id,
                        gfs.c.stored_at,
                    ).where(gfs.c.statement_id.in_(ids))
                )
                for row in found:
                    stored.setdefault((row.iban, row.statement_id), {})[row.content_sha256] = (
                        row.cabinet_id,
                        row.stored_at,
                    )
        results = []
        for key in unique:
            iban, sid, sha = key
            versions = stored[(iban, sid)]
            cabinet_id, stored_at = versions[sha]
            results.append(
                StoredStatement(
                    statement_id=sid,
                    cabinet_id=cabinet_id,
                    created=key in created,
                    stored_at=stored_at,
                    iban=iban,
                    content_sha256=sha,
                    other_contents=tuple(sorted(other for other in versions if other != sha)),
                )
            )
        return results

    async def statements(
        self, actor: Actor, cabinet_id: str, start: date, end: date
    ) -> list[GlobalFileEntry]:
        ensure_valid_id("cabinet", cabinet_id)
        rules.ensure_own_cabinet(actor, cabinet_id)
        if end < start:
            raise ValueError(f"the period ends ({end}) before it starts ({start})")
        async with self._read() as conn:
            rows = (
                await conn.execute(
                    select(gfs)
                    .where(
                        gfs.c.cabinet_id == cabinet_id,
                        gfs.c.period_start <= end,
                        gfs.c.period_end >= start,
                    )
                    .order_by(
                        gfs.c.period_start,
                        gfs.c.received_at,
                        gfs.c.statement_id,
                        gfs.c.iban,
                        gfs.c.content_sha256,
                    )
                )
            ).all()
        return [entry_of(row) for row in rows]

    async def latest_period_start(self, actor: Actor, cabinet_id: str) -> date | None:
        rules.ensure_own_cabinet(actor, cabinet_id)
        async with self._read() as conn:
            latest = await conn.scalar(
                select(func.max(gfs.c.period_start)).where(gfs.c.cabinet_id == cabinet_id)
            )
        if isinstance(latest, str):  # SQLite returns the aggregate as text
            return date.fromisoformat(latest)
        return latest if isinstance(latest, date) else None

    async def get(self, statement_id: str) -> list[GlobalFileEntry]:
        """Operator read of the stored statements with this id (no cabinet check): one per
        account and content, in (IBAN, stored_at) order; empty when there is none."""
        async with self._read() as conn:
            rows = (
                await conn.execute(
                    select(gfs)
                    .where(gfs.c.statement_id == statement_id)
                    .order_by(gfs.c.iban, gfs.c.stored_at, gfs.c.content_sha256)
                )
            ).all()
        return [entry_of(row) for row in rows]
