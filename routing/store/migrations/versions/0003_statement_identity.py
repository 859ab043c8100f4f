"""A statement is (IBAN, statement_id), told apart from a reused id by its content.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04

* ``global_file_statements``: primary key (iban, statement_id, content_sha256) instead of
  statement_id alone, which kept one cabinet's statement and dropped another cabinet's
  under the same id; an index on statement_id for the trace.
* ``delivery_ledger``: a ``content_sha256`` column, and every ``dedupe_key`` recomputed
  with the IBAN and the content in it (``routing.store.ledger.dedupe_key``), so the same
  step of two statements that share an id at the same instant stays two entries.

Frozen history: sqlalchemy types only, never routing.store.tables.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BATCH = 500


def _global_file_table(primary_key: Sequence[str]) -> sa.Table:
    """The table as 0002 made it, with ``primary_key``: SQLite's copy-and-move needs the
    whole definition, since reflection there does not bring the CHECK constraints back."""
    return sa.Table(
        "global_file_statements",
        sa.MetaData(),
        sa.Column("statement_id", sa.Text(), nullable=False),
        sa.Column("cabinet_id", sa.Text(), nullable=False),
        sa.Column("iban", sa.String(length=34), nullable=False),
        sa.Column("client_ref", sa.Text(), nullable=True),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("period_end", sa.Date(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("content_sha256", sa.String(length=64), nullable=False),
        sa.Column(
            "routed_at", sa.DateTime(timezone=True), nullable=False, comment="routing.decided_at"
        ),
        sa.Column(
            "routing", sa.JSON(none_as_null=True), nullable=True, comment="the routing trace"
        ),
        sa.Column(
            "stored_at",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="first write; kept on redelivery",
        ),
        sa.Column("kafka_topic", sa.Text(), nullable=False),
        sa.Column("kafka_partition", sa.Integer(), nullable=False),
        sa.Column("kafka_offset", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(*primary_key, name="pk_global_file_statements"),
        sa.CheckConstraint(
            "format IN ('cfonb120', 'camt053', 'mt940')", name="ck_global_file_statements_format"
        ),
        sa.CheckConstraint(
            "period_end >= period_start", name="ck_global_file_statements_period"
        ),
        sa.Index(
            "ix_global_file_statements_cabinet_id_period_start_period_end",
            "cabinet_id",
            "period_start",
            "period_end",
        ),
    )


def _set_global_file_key(old: Sequence[str], new: Sequence[str]) -> None:
    with op.batch_alter_table(
        "global_file_statements", copy_from=_global_file_table(old)
    ) as batch:
        batch.drop_constraint("pk_global_file_statements", type_="primary")
        batch.create_primary_key("pk_global_file_statements", list(new))


def _dedupe_key(row: Any, with_identity: bool) -> str:
    at = row.at if row.at.tzinfo is not None else row.at.replace(tzinfo=UTC)
    parts = [
        row.statement_id,
        row.outcome,
        "" if row.attempt is None else str(row.attempt),
        at.astimezone(UTC).isoformat(timespec="microseconds"),
        row.connector_id or "",
    ]
    if with_identity:
        parts += [row.iban or "", row.content_sha256 or ""]
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def _rekey_ledger(with_identity: bool) -> None:
    """Recompute every ``dedupe_key`` (by id ranges, so a large ledger never sits in memory)."""
    ledger = sa.table(
        "delivery_ledger",
        sa.column("id", sa.BigInteger()),
        sa.column("dedupe_key", sa.String(64)),
        sa.column("statement_id", sa.Text()),
        sa.column("outcome", sa.String(32)),
        sa.column("at", sa.DateTime(timezone=True)),
        sa.column("attempt", sa.Integer()),
        sa.column("iban", sa.Text()),
        sa.column("connector_id", sa.Text()),
        sa.column("content_sha256", sa.Text()),
    )
    bind = op.get_bind()
    update = (
        sa.update(ledger)
        .where(ledger.c.id == sa.bindparam("row_id"))
        .values(dedupe_key=sa.bindparam("new_key"))
    )
    last = -1
    while True:
        rows = bind.execute(
            sa.select(ledger).where(ledger.c.id > last).order_by(ledger.c.id).limit(_BATCH)
        ).all()
        if not rows:
            return
        changes = []
        for row in rows:
            if isinstance(row.at, str):  # pragma: no cover - SQLite's driver parses it
                row = row._replace(at=datetime.fromisoformat(row.at))
            changes.append({"row_id": row.id, "new_key": _dedupe_key(row, with_identity)})
        bind.execute(update, changes)
        last = rows[-1].id


def upgrade() -> None:
    _set_global_file_key(["statement_id"], ["iban", "statement_id", "content_sha256"])
    op.create_index(
        "ix_global_file_statements_statement_id", "global_file_statements", ["statement_id"]
    )
    with op.batch_alter_table("delivery_ledger") as batch:
        batch.add_column(sa.Column("content_sha256", sa.Text(), nullable=True))
    _rekey_ledger(with_identity=True)


def downgrade() -> None:
    # A statement id held by several rows cannot go back under a one-column key: the
    # downgrade refuses rather than pick which statement to lose.
    bind = op.get_bind()
    shared = bind.execute(
        sa.text(
            "SELECT statement_id FROM global_file_statements GROUP BY statement_id "
            "HAVING COUNT(*) > 1 LIMIT 1"
        )
    ).first()
    if shared is not None:
        raise RuntimeError(
            "cannot downgrade below 0003: several statements of the global file share the "
            f"id {shared[0]}, which revision 0002 cannot hold"
        )
    _rekey_ledger(with_identity=False)
    with op.batch_alter_table("delivery_ledger") as batch:
        batch.drop_column("content_sha256")
    op.drop_index("ix_global_file_statements_statement_id", table_name="global_file_statements")
    _set_global_file_key(["iban", "statement_id", "content_sha256"], ["statement_id"])
