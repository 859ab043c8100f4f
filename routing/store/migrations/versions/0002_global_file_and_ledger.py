"""The cabinet global file and the delivery ledger.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02

Frozen history: sqlalchemy types only, never routing.store.tables.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "global_file_statements",
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
        sa.PrimaryKeyConstraint("statement_id", name="pk_global_file_statements"),
        sa.CheckConstraint(
            "format IN ('cfonb120', 'camt053', 'mt940')", name="ck_global_file_statements_format"
        ),
        sa.CheckConstraint(
            "period_end >= period_start", name="ck_global_file_statements_period"
        ),
    )
    op.create_index(
        "ix_global_file_statements_cabinet_id_period_start_period_end",
        "global_file_statements",
        ["cabinet_id", "period_start", "period_end"],
    )
    op.create_table(
        "delivery_ledger",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("dedupe_key", sa.String(length=64), nullable=False),
        sa.Column("statement_id", sa.Text(), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=True),
        sa.Column("iban", sa.Text(), nullable=True),
        sa.Column("cabinet_id", sa.Text(), nullable=True),
        sa.Column("connector_id", sa.Text(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column(
            "routing", sa.JSON(none_as_null=True), nullable=True, comment="when the record has it"
        ),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_delivery_ledger"),
        sa.UniqueConstraint("dedupe_key", name="uq_delivery_ledger_dedupe_key"),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_delivery_ledger_statement_id_at", "delivery_ledger", ["statement_id", "at"]
    )
    op.create_index("ix_delivery_ledger_iban_at", "delivery_ledger", ["iban", "at"])


def downgrade() -> None:
    op.drop_index("ix_delivery_ledger_iban_at", table_name="delivery_ledger")
    op.drop_index("ix_delivery_ledger_statement_id_at", table_name="delivery_ledger")
    op.drop_table("delivery_ledger")
    op.drop_index(
        "ix_global_file_statements_cabinet_id_period_start_period_end",
        table_name="global_file_statements",
    )
    op.drop_table("global_file_statements")
