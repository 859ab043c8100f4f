"""The initial schema: cabinets, users, cabinet connectors, IBANs and the outbox.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Migrations are frozen history: use sqlalchemy types here, never routing.store.tables, so a
later change to the tables cannot rewrite what an old migration did.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "cabinets",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_cabinets"),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("cabinet_id", sa.Text(), nullable=False),
        sa.Column("profile", sa.String(length=16), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column(
            "token_hash", sa.String(length=64), nullable=False, comment="SHA-256 hex of the token"
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.ForeignKeyConstraint(
            ["cabinet_id"],
            ["cabinets.id"],
            name="fk_users_cabinet_id_cabinets",
            ondelete="RESTRICT",
        ),
        sa.UniqueConstraint("token_hash", name="uq_users_token_hash"),
        sa.CheckConstraint(
            "profile IN ('collaborateur', 'superviseur', 'administrateur')",
            name="ck_users_profile",
        ),
    )
    op.create_index("ix_users_cabinet_id", "users", ["cabinet_id"])
    op.create_table(
        "cabinet_connectors",
        sa.Column("cabinet_id", sa.Text(), nullable=False),
        sa.Column("connector_id", sa.String(length=64), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("cabinet_id", "connector_id", name="pk_cabinet_connectors"),
        sa.ForeignKeyConstraint(
            ["cabinet_id"],
            ["cabinets.id"],
            name="fk_cabinet_connectors_cabinet_id_cabinets",
            ondelete="RESTRICT",
        ),
    )
    op.create_table(
        "ibans",
        sa.Column("iban", sa.String(length=34), nullable=False),
        sa.Column("cabinet_id", sa.Text(), nullable=False),
        sa.Column("client_ref", sa.Text(), nullable=True),
        sa.Column("connector_id", sa.String(length=64), nullable=True),
        sa.Column("mandate_status", sa.String(length=16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("iban", name="pk_ibans"),
        sa.ForeignKeyConstraint(
            ["cabinet_id"],
            ["cabinets.id"],
            name="fk_ibans_cabinet_id_cabinets",
            ondelete="RESTRICT",
        ),
        # Rules 2 and 3 in the database: a bound IBAN's connector is on its cabinet, and a
        # connector with bound IBANs cannot leave it. NULL connector_id is exempt (MATCH SIMPLE).
        sa.ForeignKeyConstraint(
            ["cabinet_id", "connector_id"],
            ["cabinet_connectors.cabinet_id", "cabinet_connectors.connector_id"],
            name="fk_ibans_cabinet_connector",
            ondelete="RESTRICT",
        ),
        sa.CheckConstraint(
            "mandate_status IN ('pending', 'approved', 'rejected', 'revoked')",
            name="ck_ibans_mandate_status",
        ),
        sa.CheckConstraint("version >= 1", name="ck_ibans_version_positive"),
    )
    op.create_index("ix_ibans_cabinet_id_connector_id", "ibans", ["cabinet_id", "connector_id"])
    op.create_table(
        "outbox",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("topic", sa.Text(), nullable=False, comment="logical topic name, without the prefix"),
        sa.Column("msg_key", sa.Text(), nullable=False),
        sa.Column("payload", sa.JSON(none_as_null=True), nullable=True, comment="NULL is a tombstone"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_outbox_published_at_id", "outbox", ["published_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_outbox_published_at_id", table_name="outbox")
    op.drop_table("outbox")
    op.drop_index("ix_ibans_cabinet_id_connector_id", table_name="ibans")
    op.drop_table("ibans")
    op.drop_table("cabinet_connectors")
    op.drop_index("ix_users_cabinet_id", table_name="users")
    op.drop_table("users")
    op.drop_table("cabinets")
