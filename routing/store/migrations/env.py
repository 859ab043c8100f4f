"""Alembic environment of the state store, for async engines.

Two ways in:

* ``routing.store.migrate.upgrade(url)`` (the application's way) opens the connection
  itself, inside one transaction, and hands it over in ``config.attributes["connection"]``;
* the ``alembic`` command line (``alembic -c routing/store/alembic.ini ...``, for writing
  new revisions) gets the URL from ``config.attributes["url"]``, then ``sqlalchemy.url``,
  then the application settings (``DATABASE_URL`` or the embedded SQLite file).

Either way the engine comes from ``routing.store.engine.create_store_engine``, so SQLite
gets the same pragmas (foreign keys on, WAL) as the running store.
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

from routing.store.engine import async_url, create_store_engine
from routing.store.tables import metadata

config = context.config
target_metadata = metadata

if config.config_file_name is not None and "connection" not in config.attributes:
    # Command-line use only: the application configures its own logging.
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _url() -> str:
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        from config.settings import get_settings

        url = get_settings().effective_database_url
    return str(url)


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=target_metadata,
        compare_type=True,
        **kwargs,  # type: ignore[arg-type]
    )


def run_migrations_offline() -> None:
    """Emit the SQL instead of running it (``alembic upgrade head --sql``)."""
    url = async_url(_url())
    _configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=url.get_backend_name() == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    # SQLite cannot ALTER most things: batch mode rebuilds the table instead.
    _configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    engine = create_store_engine(_url(), poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        asyncio.run(run_async_migrations())
    else:
        do_run_migrations(connection)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
