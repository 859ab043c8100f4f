"""An index on the delivery ledger's (outcome, connector_id, at).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04

The monitor's open dead letters (``/ops/topics``, ``monitor``) ask the ledger for the
``replayed`` outcomes of a few connectors on every refresh; the index makes that a range
read of the replays instead of a scan of every outcome (issue 18, operator reads in
constant time). The per-connector delivery counts use it too.

Frozen history: sqlalchemy types only, never routing.store.tables.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEX = "ix_delivery_ledger_outcome_connector_id_at"


def upgrade() -> None:
    op.create_index(_INDEX, "delivery_ledger", ["outcome", "connector_id", "at"])


def downgrade() -> None:
    op.drop_index(_INDEX, table_name="delivery_ledger")
