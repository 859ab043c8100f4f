"""Applying the state store's migrations from the application (no alembic.ini needed).

``upgrade(url)`` is what the CLI and the embedded mode call at start-up. It runs every
migration in one transaction on one connection, so a failed upgrade leaves the schema as it
was (PostgreSQL has transactional DDL; SQLite too, since the store emits its own BEGIN). Two
processes upgrading at once are serialized: a transaction-level advisory lock on PostgreSQL,
``BEGIN IMMEDIATE`` on SQLite; the second one then finds the schema at head and does nothing.
"""

from __future__ import annotations

import asyncio
import weakref
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

from routing.store.engine import create_store_engine, translated_errors

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

#: pg_advisory_xact_lock key serializing concurrent upgrades ("srmigrat" in ASCII).
_MIGRATION_LOCK_KEY = 0x73726D6967726174


def alembic_config(url: str | None = None) -> Config:
    """An Alembic ``Config`` pointing at the migrations shipped inside the package."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if url is not None:
        config.attributes["url"] = url
    return config


def head_revision() -> str | None:
    """The newest revision shipped with this version of the code."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _upgrade_on(connection: Connection, config: Config, revision: str) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


_upgrade_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def _in_process_lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    lock = _upgrade_locks.get(loop)
    if lock is None:
        lock = _upgrade_locks[loop] = asyncio.Lock()
    return lock


async def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision`` (default: the newest one).

    Driver errors come out as ``routing.store.errors.StoreError``. Upgrades in one process
    take turns: Alembic keeps the running migration in module globals (``alembic.context``,
    ``alembic.op``), so two interleaved in one event loop mixed up each other's state
    (seen as ``KeyError: 'script'`` and "table already exists"). Between processes, the
    database's own lock serializes them (module docstring).
    """
    config = alembic_config(url)
    async with _in_process_lock():
        engine = create_store_engine(url, poolclass=NullPool)
        try:
            with translated_errors(url):
                async with engine.begin() as connection:
                    await connection.run_sync(_upgrade_on, config, revision)
        finally:
            await engine.dispose()


def _current_on(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def current_revision(url: str) -> str | None:
    """The revision the database at ``url`` is at, or None for an empty database."""
    engine = create_store_engine(url, poolclass=NullPool)
    try:
        with translated_errors(url):
            async with engine.connect() as connection:
                return await connection.run_sync(_current_on)
    finally:
        await engine.dispose()
