"""Errors of the SQL state store: one root, ``StoreError``, for everything the database or
its driver can throw at us.

Callers (API, CLI, relay) must be able to tell "the rules said no" (a
``routing.domain.errors.DomainError``) from "the database is not there / not migrated /
too busy" without knowing which driver is underneath, so every SQLAlchemy, aiosqlite or
asyncpg error that leaves this package is one of these, with a sentence a person can act
on and the original error chained as ``__cause__``.
"""

from __future__ import annotations


class StoreError(Exception):
    """Root of the state store's infrastructure errors (never a rule refusal)."""

    code = "store_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class StoreUnavailable(StoreError):
    """The database cannot be reached (connection refused, lost, unknown database, …)."""

    code = "store_unavailable"


class StoreBusy(StoreError):
    """The database stayed locked too long, or a serialization failure / deadlock occurred.

    Retrying the whole operation is safe: nothing was committed.
    """

    code = "store_busy"


class SchemaNotReady(StoreError):
    """A table or column is missing: the migrations have not been applied."""

    code = "schema_not_ready"


class StoreIntegrityError(StoreError):
    """The database refused a write because of a constraint.

    The store turns the ones a rule explains into domain errors; ``kind`` is one of
    ``foreign_key``, ``unique``, ``not_null``, ``check`` or ``other``, and ``constraint``
    is the constraint's name when the driver reports it (PostgreSQL does, SQLite does not).
    """

    code = "store_integrity_error"

    def __init__(self, message: str, *, kind: str, constraint: str | None) -> None:
        super().__init__(message)
        self.kind = kind
        self.constraint = constraint
