"""The delivery ledger in the state store (``DeliveryLedger`` on SQL).

Idempotency: each row carries ``dedupe_key``, the SHA-256 of the fields that identify one
outcome record — statement id, outcome, attempt, time (UTC, microseconds) and connector —
under a unique constraint, and rows go in with ``INSERT ... ON CONFLICT DO NOTHING``. So
the same record read twice (the ledger consumer restarted before committing its offsets,
or a producer retried a send) adds nothing. Two *different* records of the same step, e.g.
an adapter that delivered, crashed before committing, and delivered again with a new
``at``, are two entries: both deliveries happened, and the trace says so.

The trace reads the global file too (same database): the global-file builder's event
carries the full routing trace (checks, state version), which the router's ``routed``
outcome does not always carry, and a statement is in its cabinet's file as soon as the
builder committed, even if the ledger has not read the builder's outcome yet.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from routing.domain import rules
from routing.domain.errors import UnknownIban
from routing.domain.iban import normalise_iban
from routing.domain.model import Actor
from routing.ports import (
    ConnectorDeliveries,
    DeliveryLedger,
    GlobalFileEntry,
    LedgerEntry,
    OutcomeRecord,
    StatementSummary,
    StatementTrace,
    UnknownStatement,
    statement_status,
)
from routing.store.engine import READ_ONLY_OPTION, create_store_engine, translated_errors
from routing.store.global_file import entry_of, insert_ignoring_duplicates, utcnow
from routing.store.tables import delivery_ledger as dl
from routing.store.tables import global_file_statements as gfs
from routing.store.tables import ibans

_ROUTING_OUTCOMES = ("routed", "held")


def dedupe_key(record: OutcomeRecord) -> str:
    """The identity of one outcome record (see the module docstring)."""
    at = record.at.astimezone(UTC).isoformat(timespec="microseconds")
    parts = (
        record.statement_id,
        record.outcome,
        "" if record.attempt is None else str(record.attempt),
        at,
        record.connector_id or "",
    )
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def routing_from_detail(entry: LedgerEntry) -> dict[str, Any]:
    """What the router's outcome ``detail`` says when it carries no ``routing`` field.

    The router writes ``partner:<connector>``, ``global-file`` or ``held:<reason>``,
    optionally followed by `` (<note>)``. That gives the destination and, for held
    statements, the reason; the checks and the state version are unknown (None).
    """
    where = (entry.detail or "").split(" (", 1)[0].strip()
    kind, _, rest = where.partition(":")
    trace: dict[str, Any] = {
        "destination": None,
        "reason": None,
        "connector_id": entry.connector_id,
        "checks": None,
        "state_version": None,
        "decided_at": entry.at.isoformat(),
        "source": "outcome_detail",
    }
    if kind == "partner":
        trace.update(destination="partner", reason="bound", connector_id=rest or None)
    elif kind == "global-file":
        trace.update(destination="global-file", reason="unbound")
    elif kind == "held":
        trace.update(destination="held", reason=rest or None)
    elif entry.outcome == "held":
        trace.update(destination="held")
    return trace


def best_routing(
    entries: Sequence[LedgerEntry], stored: GlobalFileEntry | None
) -> dict[str, Any] | None:
    """The most complete routing trace known, latest decision first.

    1. a ``routing`` field on the latest routed/held outcome (full trace);
    2. the global file's copy of the ``statement.global-file/v1`` trace (full trace);
    3. the latest routed/held outcome's ``detail`` (destination and reason only).
    """
    decisions = [e for e in entries if e.outcome in _ROUTING_OUTCOMES]
    latest = decisions[-1] if decisions else None
    if latest is not None and latest.routing is not None:
        return {**latest.routing, "connector_id": latest.connector_id, "source": "outcome"}
    if stored is not None and stored.routing is not None:
        return {**stored.routing, "connector_id": None, "source": "global_file"}
    if latest is not None:
        return routing_from_detail(latest)
    return None


def _entry(row: Row[Any]) -> LedgerEntry:
    return LedgerEntry(
        statement_id=row.statement_id,
        outcome=row.outcome,
        at=row.at,
        iban=row.iban,
        cabinet_id=row.cabinet_id,
        connector_id=row.connector_id,
        attempt=row.attempt,
        detail=row.detail,
        routing=row.routing,
        recorded_at=row.recorded_at,
    )


class SqlDeliveryLedger(DeliveryLedger):
    """``DeliveryLedger`` on the state store's database (SQLite or PostgreSQL).

    Share the ``SqlStateStore``'s engine with ``owns_engine=False`` (the default).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        owns_engine: bool = False,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._engine = engine
        self._read_engine = engine.execution_options(**{READ_ONLY_OPTION: True})
        self._owns_engine = owns_engine
        self._clock = clock

    @classmethod
    def from_url(cls, url: str, **engine_kwargs: Any) -> SqlDeliveryLedger:
        """A ledger with its own engine; the schema must exist."""
        return cls(create_store_engine(url, **engine_kwargs), owns_engine=True)

    async def close(self) -> None:
        if self._owns_engine:
            await self._engine.dispose()

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        with translated_errors(self._engine.url):
            async with self._engine.begin() as conn:
                yield conn

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        with translated_errors(self._engine.url):
            async with self._read_engine.begin() as conn:
                yield conn

    # --- writing ---------------------------------------------------------------------------

    async def record(self, outcomes: Sequence[OutcomeRecord]) -> int:
        rows: dict[str, dict[str, Any]] = {}
        now = self._clock().astimezone(UTC)
        for record in outcomes:
            key = dedupe_key(record)
            rows.setdefault(
                key,
                {
                    "dedupe_key": key,
                    "statement_id": record.statement_id,
                    "outcome": record.outcome,
                    "at": record.at,
                    "attempt": record.attempt,
                    "iban": record.iban,
                    "cabinet_id": record.cabinet_id,
                    "connector_id": record.connector_id,
                    "detail": record.detail,
                    "routing": record.routing,
                    "recorded_at": now,
                },
            )
        if not rows:
            return 0
        insert = insert_ignoring_duplicates(self._engine, dl, ["dedupe_key"])
        # executemany: the statement is compiled once and cached, and SQLAlchemy batches
        # the rows itself (a multi-row VALUES was compiled anew for every batch).
        async with self._write() as conn:
            result = await conn.execute(insert.returning(dl.c.id), list(rows.values()))
            return len(result.all())

    # --- reading ---------------------------------------------------------------------------

    @staticmethod
    async def _entries(conn: AsyncConnection, statement_id: str) -> list[LedgerEntry]:
        rows = (
            await conn.execute(
                select(dl).where(dl.c.statement_id == statement_id).order_by(dl.c.at, dl.c.id)
            )
        ).all()
        return [_entry(row) for row in rows]

    @staticmethod
    async def _iban_cabinet(conn: AsyncConnection, iban: str) -> str | None:
        found = await conn.execute(select(ibans.c.cabinet_id).where(ibans.c.iban == iban))
        return found.scalar_one_or_none()

    async def trace(self, actor: Actor, statement_id: str) -> StatementTrace:
        found = await self.operator_trace(statement_id)
        if found is None or not found.cabinet_id:
            # Nothing ties it to a cabinet (never seen, or held for an unknown IBAN):
            # nobody's statement as far as users are concerned.
            raise UnknownStatement(statement_id)
        rules.ensure_visible(actor, found.cabinet_id, UnknownStatement(statement_id))
        return found

    async def operator_trace(self, statement_id: str) -> StatementTrace | None:
        """The trace for an operator: any cabinet's, and a statement held for an unknown
        IBAN too (``cabinet_id`` empty). None when the ledger has never seen it."""
        async with self._read() as conn:
            entries = await self._entries(conn, statement_id)
            row = (
                await conn.execute(select(gfs).where(gfs.c.statement_id == statement_id))
            ).first()
            stored = None if row is None else entry_of(row)
            iban = stored.iban if stored else next((e.iban for e in entries if e.iban), None)
            # The statement's cabinet: the global file's, else the latest one an outcome
            # names (the router knows it from the IBAN state), else the IBAN's registration.
            cabinet_id = stored.cabinet_id if stored else None
            if cabinet_id is None:
                cabinet_id = next((e.cabinet_id for e in reversed(entries) if e.cabinet_id), None)
            if cabinet_id is None and iban is not None:
                cabinet_id = await self._iban_cabinet(conn, iban)
        if not entries and stored is None:
            return None
        return StatementTrace(
            statement_id=statement_id,
            cabinet_id=cabinet_id or "",
            iban=iban,
            status=statement_status(entries, in_global_file=stored is not None),
            routing=best_routing(entries, stored),
            entries=tuple(entries),
            global_file=stored,
        )

    async def statement_ids_starting(self, prefix: str, limit: int = 10) -> list[str]:
        """Up to ``limit`` statement ids (ledger or global file) that start with ``prefix``."""
        async with self._read() as conn:
            found = set(
                (
                    await conn.execute(
                        select(dl.c.statement_id)
                        .where(dl.c.statement_id.startswith(prefix, autoescape=True))
                        .distinct()
                        .limit(limit)
                    )
                ).scalars()
            )
            found.update(
                (
                    await conn.execute(
                        select(gfs.c.statement_id)
                        .where(gfs.c.statement_id.startswith(prefix, autoescape=True))
                        .limit(limit)
                    )
                ).scalars()
            )
        return sorted(found)[:limit]

    async def unsettled_statements(self) -> dict[str, str]:
        """Statement id -> status, for every statement not delivered nor in a global file.

        These are the statements a broker that lost its records may have taken with it
        (held, on their way to a partner, retrying, dead-lettered), for ``up`` to name
        after a run that ended without saving the embedded broker's records.
        """
        async with self._read() as conn:
            rows = (await conn.execute(select(dl).order_by(dl.c.at, dl.c.id))).all()
            in_file = set((await conn.execute(select(gfs.c.statement_id))).scalars())
        entries: dict[str, list[LedgerEntry]] = {}
        for row in rows:
            entries.setdefault(row.statement_id, []).append(_entry(row))
        unsettled: dict[str, str] = {}
        for sid, seen in entries.items():
            status = statement_status(seen, in_global_file=sid in in_file)
            if status not in ("delivered", "in_global_file"):
                unsettled[sid] = status
        return unsettled

    async def connector_deliveries(self, since: datetime) -> list[ConnectorDeliveries]:
        counted = ("delivered", "dead_lettered", "retrying")
        async with self._read() as conn:
            counts = await conn.execute(
                select(dl.c.connector_id, dl.c.outcome, func.count())
                .where(dl.c.at >= since, dl.c.connector_id.is_not(None), dl.c.outcome.in_(counted))
                .group_by(dl.c.connector_id, dl.c.outcome)
            )
            by_connector: dict[str, dict[str, int]] = {}
            for connector_id, outcome, n in counts:
                by_connector.setdefault(connector_id, {})[outcome] = int(n)
            result = []
            for connector_id in sorted(by_connector):
                last = (
                    await conn.execute(
                        select(dl.c.detail, dl.c.at)
                        .where(
                            dl.c.connector_id == connector_id,
                            dl.c.at >= since,
                            dl.c.outcome.in_(("dead_lettered", "retrying")),
                        )
                        .order_by(dl.c.at.desc())
                        .limit(1)
                    )
                ).first()
                n = by_connector[connector_id]
                result.append(
                    ConnectorDeliveries(
                        connector_id=connector_id,
                        delivered=n.get("delivered", 0),
                        dead_lettered=n.get("dead_lettered", 0),
                        retries=n.get("retrying", 0),
                        last_error=None if last is None else last.detail,
                        last_error_at=None if last is None else last.at,
                    )
                )
        return result

    async def recent_statements(
        self, actor: Actor, iban: str, limit: int = 5
    ) -> list[StatementSummary]:
        iban = normalise_iban(iban)
        if limit < 1:
            return []
        async with self._read() as conn:
            cabinet_id = await self._iban_cabinet(conn, iban)
            if cabinet_id is None:
                raise UnknownIban(iban)
            rules.ensure_visible(actor, cabinet_id, UnknownIban(iban))
            last_at = func.max(dl.c.at).label("last_at")
            latest = (
                await conn.execute(
                    select(dl.c.statement_id, last_at)
                    .where(dl.c.iban == iban)
                    .group_by(dl.c.statement_id)
                    .order_by(last_at.desc(), dl.c.statement_id.desc())
                    .limit(limit)
                )
            ).all()
            ids = [row.statement_id for row in latest]
            if not ids:
                return []
            rows = (
                await conn.execute(
                    select(dl).where(dl.c.statement_id.in_(ids)).order_by(dl.c.at, dl.c.id)
                )
            ).all()
            in_file = set(
                (
                    await conn.execute(
                        select(gfs.c.statement_id).where(gfs.c.statement_id.in_(ids))
                    )
                ).scalars()
            )
        by_statement: dict[str, list[LedgerEntry]] = {sid: [] for sid in ids}
        for row in rows:
            by_statement[row.statement_id].append(_entry(row))
        summaries = []
        for sid in ids:
            entries = by_statement[sid]
            last = entries[-1]
            summaries.append(
                StatementSummary(
                    statement_id=sid,
                    status=statement_status(entries, in_global_file=sid in in_file),
                    last_outcome=last.outcome,
                    last_at=last.at,
                    connector_id=next(
                        (e.connector_id for e in reversed(entries) if e.connector_id), None
                    ),
                    attempt=last.attempt,
                    detail=last.detail,
                )
            )
        return summaries
