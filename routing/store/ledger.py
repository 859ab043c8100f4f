"""The delivery ledger in the state store (``DeliveryLedger`` on SQL).

Idempotency: each row carries ``dedupe_key``, the SHA-256 of the fields that identify one
outcome record — statement id, outcome, attempt, time (UTC, microseconds), connector, IBAN
and content SHA-256 — under a unique constraint, and rows go in with ``INSERT ... ON
CONFLICT DO NOTHING``. So the same record read twice (the ledger consumer restarted
before committing its offsets, or a producer retried a send) adds nothing. Two
*different* records of the same step, e.g. an adapter that delivered, crashed before
committing, and delivered again with a new ``at``, are two entries: both deliveries
happened, and the trace says so. So are the same step of two statements that share an id
(a builder stores a batch at one instant): the IBAN and the content are in the key.

Identity (``routing.domain.identity``): a statement is (IBAN, statement_id), and its
content tells a redelivery from a reused id. The trace groups the entries of an id by
IBAN, then by ``content_sha256`` (an entry without one, from a producer that does not
send it, belongs to every content of its IBAN), and each group is one statement with its
own cabinet. A user sees only their cabinet's: one is traced, several are listed
(``AmbiguousStatement``) for the user to choose by statement key, none is
``UnknownStatement``, whatever other cabinets hold under that id.

The trace reads the global file too (same database): the global-file builder's event
carries the full routing trace (checks, state version), which a ``routed`` outcome record
of an older router may lack (the entries the ledger derives from the routed events carry
it), and a statement is in its cabinet's file as soon as the builder committed, even if
the ledger has not read the builder's outcome yet.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from events.dead_letters import replayed_places
from routing.domain import rules
from routing.domain.errors import UnknownIban
from routing.domain.iban import mask_iban, normalise_iban
from routing.domain.identity import statement_key
from routing.domain.model import Actor
from routing.ports import (
    AmbiguousStatement,
    ConnectorDeliveries,
    DeliveryLedger,
    GlobalFileEntry,
    LedgerEntry,
    OutcomeRecord,
    StatementCandidate,
    StatementSummary,
    StatementTrace,
    UnknownStatement,
    statement_status,
)
from routing.store.engine import EngineStore, record_of
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
        record.iban or "",
        record.content_sha256 or "",
    )
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def routing_from_detail(entry: LedgerEntry) -> dict[str, Any]:
    """What a routed/held step's ``detail`` says when it carries no ``routing`` field.

    The detail is ``partner:<connector>``, ``global-file`` or ``held:<reason>``,
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


def _first_seen(entries: Sequence[LedgerEntry], stored: GlobalFileEntry | None) -> datetime | None:
    times = [e.at for e in entries]
    if stored is not None and stored.stored_at is not None:
        times.append(stored.stored_at)
    return min(times) if times else None


def by_content(
    entries: Sequence[LedgerEntry], stored: Collection[str]
) -> list[tuple[str | None, list[LedgerEntry]]]:
    """One account's entries under one id, split by content: ``stored`` contents first,
    then the ones only entries name; an entry without a content belongs to each. A single
    ``(None, entries)`` when nothing names a content (records of older producers)."""
    contents = list(stored)
    for e in entries:
        if e.content_sha256 and e.content_sha256 not in contents:
            contents.append(e.content_sha256)
    if not contents:
        return [(None, list(entries))]
    return [(sha, [e for e in entries if e.content_sha256 in (sha, None)]) for sha in contents]


def statements_of(
    statement_id: str,
    entries: Sequence[LedgerEntry],
    stored: Sequence[GlobalFileEntry],
    registered: dict[str, str | None],
) -> list[StatementTrace]:
    """The statements recorded under one id (see the module docstring), first seen first.

    ``entries`` in time order; ``registered`` maps an IBAN to the cabinet it is registered
    under here (None if it is not), the last resort for a statement's cabinet.
    """
    found: list[tuple[datetime | None, StatementTrace]] = []
    accounts: list[str | None] = []
    for account in [g.iban for g in stored] + [e.iban for e in entries]:
        if account not in accounts:
            accounts.append(account)
    for iban in accounts:
        mine = [e for e in entries if e.iban == iban]
        files = {g.content_sha256: g for g in stored if g.iban == iban}
        split = by_content(mine, files)
        contents = [sha for sha, _ in split if sha is not None]
        for sha, steps in split:
            in_file = files.get(sha) if sha is not None else None
            # The statement's cabinet: the global file's, else the latest one an outcome
            # names (the router knows it from the IBAN state), else the IBAN's registration.
            cabinet_id = in_file.cabinet_id if in_file else None
            if cabinet_id is None:
                cabinet_id = next((e.cabinet_id for e in reversed(steps) if e.cabinet_id), None)
            if cabinet_id is None and iban is not None:
                cabinet_id = registered.get(iban)
            own = [e for e in steps if e.content_sha256 == sha] if sha else steps
            trace = StatementTrace(
                statement_id=statement_id,
                cabinet_id=cabinet_id or "",
                iban=iban,
                status=statement_status(steps, in_global_file=in_file is not None),
                routing=best_routing(steps, in_file),
                entries=tuple(steps),
                global_file=in_file,
                key=None if sha is None or iban is None else statement_key(iban, statement_id, sha),
                content_sha256=sha,
                other_contents=tuple(c for c in contents if c != sha),
            )
            found.append((_first_seen(own, in_file) or _first_seen(steps, in_file), trace))
    # Python's sort is stable: equal (or unknown) times keep the order found above.
    found.sort(key=lambda pair: (pair[0] is None, pair[0] or datetime.min.replace(tzinfo=UTC)))
    return [trace for _, trace in found]


def candidate(trace: StatementTrace) -> StatementCandidate:
    """How an ambiguous id's statement is listed: masked IBAN, key, content, status."""
    first = trace.entries[0].at if trace.entries else None
    if trace.global_file is not None and trace.global_file.stored_at is not None:
        first = min(filter(None, (first, trace.global_file.stored_at)))
    return StatementCandidate(
        key=trace.key,
        iban=None if trace.iban is None else mask_iban(trace.iban),
        content_sha256=trace.content_sha256,
        status=trace.status,
        first_seen=first,
    )


def chosen(
    statement_id: str,
    found: Sequence[StatementTrace],
    key: str | None,
    unknown: UnknownStatement,
) -> StatementTrace:
    """The one statement of ``found`` that ``key`` (or nothing, when there is only one)
    designates; ``unknown`` when none does, ``AmbiguousStatement`` when several do."""
    if key is not None:
        found = [t for t in found if t.key == key]
    if not found:
        raise unknown
    if len(found) > 1:
        raise AmbiguousStatement(statement_id, [candidate(t) for t in found])
    return found[0]


def _entry(row: Row[Any]) -> LedgerEntry:
    return record_of(LedgerEntry, row)


class SqlDeliveryLedger(EngineStore, DeliveryLedger):
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
        super().__init__(engine, owns_engine=owns_engine)
        self._clock = clock

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
                    "content_sha256": record.content_sha256,
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

    async def trace(
        self, actor: Actor, statement_id: str, key: str | None = None
    ) -> StatementTrace:
        # Every statement under the id is read and grouped whoever asks, and only then
        # are the other cabinets' left out: the same work, and the same answer, whether
        # another cabinet holds one or nobody does (no existence oracle).
        found = [
            t
            for t in await self._statements(statement_id)
            # An empty cabinet: nothing ties it to one (held for an unknown IBAN), so it
            # is nobody's statement as far as users are concerned.
            if t.cabinet_id and t.cabinet_id == actor.cabinet_id
        ]
        return chosen(statement_id, found, key, UnknownStatement(statement_id))

    async def operator_trace(
        self, statement_id: str, key: str | None = None
    ) -> StatementTrace | None:
        """The trace for an operator: any cabinet's, and a statement held for an unknown
        IBAN too (``cabinet_id`` empty). None when the ledger has never seen it."""
        try:
            return chosen(
                statement_id, await self._statements(statement_id), key,
                UnknownStatement(statement_id),
            )
        except UnknownStatement:
            return None

    async def _statements(self, statement_id: str) -> list[StatementTrace]:
        """Every statement recorded under ``statement_id``, one per account and content."""
        async with self._read() as conn:
            entries = await self._entries(conn, statement_id)
            rows = (
                await conn.execute(select(gfs).where(gfs.c.statement_id == statement_id))
            ).all()
            stored = [entry_of(row) for row in rows]
            accounts = {e.iban for e in entries if e.iban} | {g.iban for g in stored}
            # One query whatever the number of accounts, none included: the same
            # statements are read whether the id is another cabinet's or nobody's.
            found = await conn.execute(
                select(ibans.c.iban, ibans.c.cabinet_id).where(ibans.c.iban.in_(sorted(accounts)))
            )
            registered: dict[str, str | None] = dict.fromkeys(accounts)
            registered.update({row.iban: row.cabinet_id for row in found})
        return statements_of(statement_id, entries, stored, registered)

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
            in_file: dict[tuple[str, str], set[str]] = {}
            for kept in await conn.execute(
                select(gfs.c.iban, gfs.c.statement_id, gfs.c.content_sha256)
            ):
                in_file.setdefault((kept.iban, kept.statement_id), set()).add(
                    kept.content_sha256
                )
        entries: dict[tuple[str | None, str], list[LedgerEntry]] = {}
        for row in rows:
            entries.setdefault((row.iban, row.statement_id), []).append(_entry(row))
        unsettled: dict[str, str] = {}
        for (iban, sid), seen in entries.items():
            stored = in_file.get((iban or "", sid), set())
            for sha, steps in by_content(seen, stored):
                status = statement_status(steps, in_global_file=sha in stored)
                if status not in ("delivered", "in_global_file"):
                    unsettled[sid] = status
        return unsettled

    async def replayed_dead_letters(
        self, dlq_topics: Mapping[str, str]
    ) -> dict[str, frozenset[tuple[int, int]]]:
        """Per connector id, the places of its DLQ topic (``dlq_topics[connector_id]``)
        that ``replayed`` outcomes name, i.e. the dead letters closed by a replay.

        One query on the (outcome, connector_id, at) index: it reads the replays of those
        connectors, a handful of operator actions, never the other outcomes, so the
        monitor's open dead letters cost the same after ten outcomes or ten million.
        """
        if not dlq_topics:
            return {}
        places: dict[str, set[tuple[int, int]]] = {cid: set() for cid in dlq_topics}
        async with self._read() as conn:
            rows = await conn.execute(
                select(dl.c.connector_id, dl.c.detail).where(
                    dl.c.outcome == "replayed", dl.c.connector_id.in_(sorted(dlq_topics))
                )
            )
            for connector_id, detail in rows:
                places[connector_id].update(replayed_places(detail, dlq_topics[connector_id]))
        return {cid: frozenset(found) for cid, found in places.items()}

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
            # This IBAN's entries only: another account's statement may share an id.
            rows = (
                await conn.execute(
                    select(dl)
                    .where(dl.c.iban == iban, dl.c.statement_id.in_(ids))
                    .order_by(dl.c.at, dl.c.id)
                )
            ).all()
            in_file: dict[str, set[str]] = {}
            for kept in await conn.execute(
                select(gfs.c.statement_id, gfs.c.content_sha256).where(
                    gfs.c.iban == iban, gfs.c.statement_id.in_(ids)
                )
            ):
                in_file.setdefault(kept.statement_id, set()).add(kept.content_sha256)
        by_statement: dict[str, list[LedgerEntry]] = {sid: [] for sid in ids}
        for row in rows:
            by_statement[row.statement_id].append(_entry(row))
        summaries = []
        for sid in ids:
            stored = in_file.get(sid, set())
            # A reused id (another content under it) is one line per content.
            for sha, entries in by_content(by_statement[sid], sorted(stored)):
                if not entries:
                    continue
                last = entries[-1]
                summaries.append(
                    StatementSummary(
                        statement_id=sid,
                        status=statement_status(entries, in_global_file=sha in stored),
                        last_outcome=last.outcome,
                        last_at=last.at,
                        connector_id=next(
                            (e.connector_id for e in reversed(entries) if e.connector_id), None
                        ),
                        attempt=last.attempt,
                        detail=last.detail,
                        key=None if sha is None else statement_key(iban, sid, sha),
                    )
                )
        summaries.sort(key=lambda s: (s.last_at, s.statement_id), reverse=True)
        return summaries[:limit]
