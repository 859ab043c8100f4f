"""The composition root: the one place that picks concrete adapters and wires them.

Nothing in the code base connects at import time; commands call these builders. The
stores (SQLAlchemy, Alembic) are imported by the builders that make them, so reading the
catalogue costs a CLI command none of that (docs/performance.md, CLI start-up).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from config.catalogue import Catalogue
from routing.ports import DeliveryLedger, GlobalFileStore

if TYPE_CHECKING:
    from config.settings import Settings
    from routing.store.sql import SqlStateStore


def catalogue(settings: Settings) -> Catalogue:
    """The connectors this deployment knows: those ``CONNECTORS_FILE`` declares (the
    shipped catalogue without it), kept current as the file changes.

    Raises ``CatalogueError`` when the file does not declare a valid catalogue. Every role
    reads the same file, so a binding the API accepts names a connector the router and
    the adapters know too.
    """
    return Catalogue.from_file(settings.connectors_file)


def store_unavailable_errors() -> tuple[type[Exception], ...]:
    """Errors that mean the store is out of reach (API: 503; CLI: exit 8)."""
    from routing.store.errors import StoreError

    return (StoreError,)


@asynccontextmanager
async def open_store(
    settings: Settings, *, migrate: bool | None = None, connectors: Catalogue | None = None
) -> AsyncIterator[SqlStateStore]:
    """Open the state store. The embedded SQLite database is migrated on first use, so the
    embedded mode needs no setup; PostgreSQL is migrated only by ``db upgrade``.
    """
    from routing.store.engine import create_store_engine
    from routing.store.migrate import upgrade
    from routing.store.sql import SqlStateStore

    url = settings.effective_database_url
    if migrate if migrate is not None else not settings.database_url:
        await upgrade(url)
    engine = create_store_engine(url)
    # ``connectors``: the API's own catalogue, so a binding and GET /connectors never see
    # two versions of the file.
    store = SqlStateStore(
        engine, catalogue=connectors if connectors is not None else catalogue(settings))
    try:
        yield store
    finally:
        await store.close()


def global_file_store(store: SqlStateStore) -> GlobalFileStore:
    """The cabinets' global files, on the state store's database (engine shared)."""
    from routing.store.global_file import SqlGlobalFileStore

    return SqlGlobalFileStore(store.engine)


def delivery_ledger(store: SqlStateStore) -> DeliveryLedger:
    """The delivery ledger, on the state store's database (engine shared)."""
    from routing.store.ledger import SqlDeliveryLedger

    return SqlDeliveryLedger(store.engine)
