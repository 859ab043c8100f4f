"""The state store's tables (SQLAlchemy Core). The migrations must produce exactly this
schema; a contract test compares them with ``alembic.autogenerate.compare_metadata``.

Two constraints carry FAQ rules in the database itself, as a second line of defence behind
the store's locked read-check-write transactions:

* ibans(cabinet_id, connector_id) -> cabinet_connectors(cabinet_id, connector_id)
  ON DELETE RESTRICT: a bound IBAN's connector is always one of its cabinet's connectors
  (rule 3), and a connector with bound IBANs cannot leave the cabinet (rule 2). An unbound
  IBAN (connector_id NULL) is exempt under the default MATCH SIMPLE.
* users.token_hash is unique: a token identifies exactly one user (only its SHA-256 is kept).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Dialect,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend.

    PostgreSQL keeps ``timestamptz``; SQLite keeps text without an offset. Values are
    converted to UTC on the way in (naive datetimes are refused: their zone is a guess) and
    come back UTC-aware from both backends.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: the state store keeps aware UTC times")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):  # pragma: no cover - every driver parses it
            raise TypeError(f"expected a datetime from the database, got {value!r}")
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


PROFILES = ("collaborateur", "superviseur", "administrateur")
MANDATE_STATUSES = ("pending", "approved", "rejected", "revoked")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


cabinets = Table(
    "cabinets",
    metadata,
    Column("id", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("id"),
)

users = Table(
    "users",
    metadata,
    Column("id", Text, nullable=False),
    Column("cabinet_id", Text, ForeignKey("cabinets.id", ondelete="RESTRICT"), nullable=False),
    Column("profile", String(16), nullable=False),
    Column("name", Text, nullable=True),
    Column("token_hash", String(64), nullable=False, comment="SHA-256 hex of the token"),
    Column("created_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("id"),
    UniqueConstraint("token_hash"),
    CheckConstraint(_in("profile", PROFILES), name="profile"),
    Index(None, "cabinet_id"),
)

cabinet_connectors = Table(
    "cabinet_connectors",
    metadata,
    Column("cabinet_id", Text, ForeignKey("cabinets.id", ondelete="RESTRICT"), nullable=False),
    Column("connector_id", String(64), nullable=False),
    Column("added_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("cabinet_id", "connector_id"),
)

ibans = Table(
    "ibans",
    metadata,
    Column("iban", String(34), nullable=False),
    Column("cabinet_id", Text, ForeignKey("cabinets.id", ondelete="RESTRICT"), nullable=False),
    Column("client_ref", Text, nullable=True),
    Column("connector_id", String(64), nullable=True),
    Column("mandate_status", String(16), nullable=False),
    Column("version", Integer, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("iban"),
    ForeignKeyConstraint(
        ["cabinet_id", "connector_id"],
        ["cabinet_connectors.cabinet_id", "cabinet_connectors.connector_id"],
        name="fk_ibans_cabinet_connector",
        ondelete="RESTRICT",
    ),
    CheckConstraint(_in("mandate_status", MANDATE_STATUSES), name="mandate_status"),
    CheckConstraint("version >= 1", name="version_positive"),
    # Counting the IBANs bound to a connector (rule 2) and the composite foreign key's
    # check on a cabinet_connectors delete both look IBANs up by these two columns.
    Index(None, "cabinet_id", "connector_id"),
)

#: The name of the composite foreign key that guards rules 2 and 3.
IBAN_CONNECTOR_FK = "fk_ibans_cabinet_connector"

outbox = Table(
    "outbox",
    metadata,
    # BIGINT on PostgreSQL; on SQLite only INTEGER PRIMARY KEY is the auto-incrementing rowid.
    Column(
        "id", BigInteger().with_variant(Integer(), "sqlite"), nullable=False, autoincrement=True
    ),
    Column("topic", Text, nullable=False, comment="logical topic name, without the prefix"),
    Column("msg_key", Text, nullable=False),
    Column("payload", JSON(none_as_null=True), nullable=True, comment="NULL is a tombstone"),
    Column("created_at", UtcDateTime, nullable=False),
    Column("published_at", UtcDateTime, nullable=True),
    PrimaryKeyConstraint("id"),
    # The relay's query: WHERE published_at IS NULL ORDER BY id LIMIT n.
    Index(None, "published_at", "id"),
    # AUTOINCREMENT: never reuse the id of a deleted (pruned) row, so ids keep commit order.
    sqlite_autoincrement=True,
)

# --- the cabinet global file and the delivery ledger (migration 0002) -----------------

#: Statement formats the global file keeps (``events.schemas.StatementFormat``).
STATEMENT_FORMATS = ("cfonb120", "camt053", "mt940")

global_file_statements = Table(
    "global_file_statements",
    metadata,
    # Idempotency key (DESIGN §5, migration 0003): a statement is (IBAN, statement_id), and
    # its content tells a redelivery (same SHA-256: hits the primary key and is ignored,
    # INSERT ... ON CONFLICT DO NOTHING) from another statement under a reused id (another
    # SHA-256: a row of its own). See routing.domain.identity.
    Column("statement_id", Text, nullable=False),
    Column("cabinet_id", Text, nullable=False),
    Column("iban", String(34), nullable=False),
    Column("client_ref", Text, nullable=True),
    Column("format", String(16), nullable=False),
    Column("period_start", Date, nullable=False),
    Column("period_end", Date, nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
    Column("source", Text, nullable=False),
    Column("content", LargeBinary, nullable=False),
    Column("content_sha256", String(64), nullable=False),
    Column("routed_at", UtcDateTime, nullable=False, comment="routing.decided_at"),
    Column("routing", JSON(none_as_null=True), nullable=True, comment="the routing trace"),
    Column("stored_at", UtcDateTime, nullable=False, comment="first write; kept on redelivery"),
    Column("kafka_topic", Text, nullable=False),
    Column("kafka_partition", Integer, nullable=False),
    Column("kafka_offset", BigInteger, nullable=False),
    PrimaryKeyConstraint("iban", "statement_id", "content_sha256"),
    CheckConstraint(_in("format", STATEMENT_FORMATS), name="format"),
    CheckConstraint("period_end >= period_start", name="period"),
    # The download: WHERE cabinet_id = ? AND period_start <= :to AND period_end >= :from.
    Index(None, "cabinet_id", "period_start", "period_end"),
    # A statement's trace: WHERE statement_id = ?.
    Index(None, "statement_id"),
    # No foreign key to cabinets: other systems may publish iban.state for cabinets this
    # store does not hold, and the builder must keep their statements all the same.
)

delivery_ledger = Table(
    "delivery_ledger",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer(), "sqlite"), nullable=False, autoincrement=True
    ),
    # SHA-256 of (statement_id, outcome, attempt, at, connector_id, iban, content_sha256):
    # the same outcome record read twice (at-least-once) maps to the same key and is
    # ignored, while the same step of two statements sharing an id (two accounts, or a
    # reused id) at the same instant stays two entries. A plain unique constraint over the
    # columns would not do: attempt and connector_id are often NULL, and NULLs never
    # collide in a unique constraint.
    Column("dedupe_key", String(64), nullable=False),
    Column("statement_id", Text, nullable=False),
    Column("outcome", String(32), nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Column("attempt", Integer, nullable=True),
    # Text, not String(34)/String(64): delivery.outcome/v1 does not validate these, and a
    # value too long for a bounded column would fail the batch forever (a poison record).
    Column("iban", Text, nullable=True),
    Column("cabinet_id", Text, nullable=True),
    Column("connector_id", Text, nullable=True),
    Column("detail", Text, nullable=True),
    Column("routing", JSON(none_as_null=True), nullable=True, comment="when the record has it"),
    # Which content of the statement the step was about (migration 0003); NULL on records
    # of producers that do not send it, which then belong to every content of the id.
    Column("content_sha256", Text, nullable=True),
    Column("recorded_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("id"),
    UniqueConstraint("dedupe_key"),
    # A statement's trace, in time order.
    Index(None, "statement_id", "at"),
    # An IBAN's last statements (the diagnosis).
    Index(None, "iban", "at"),
    # One kind of outcome of some connectors: the replays that close dead letters (the
    # monitor's open count) and the delivery counts per connector, without a table scan.
    Index(None, "outcome", "connector_id", "at"),
    sqlite_autoincrement=True,
)
