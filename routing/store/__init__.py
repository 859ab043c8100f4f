"""The SQL state store: tables, migrations, the async engine and ``SqlStateStore``.

SQLAlchemy lives here and nowhere in ``routing.domain``; the rest of the application talks
to ``routing.ports.StateStore``.
"""

from routing.store.engine import create_store_engine
from routing.store.errors import (
    SchemaNotReady,
    StoreBusy,
    StoreError,
    StoreIntegrityError,
    StoreUnavailable,
)
from routing.store.migrate import upgrade
from routing.store.sql import SqlStateStore
from routing.store.users import hash_token

__all__ = [
    "SchemaNotReady",
    "SqlStateStore",
    "StoreBusy",
    "StoreError",
    "StoreIntegrityError",
    "StoreUnavailable",
    "create_store_engine",
    "hash_token",
    "upgrade",
]
