"""One SQLite write transaction in one worker thread, instead of many event-loop hops.

Why: aiosqlite runs every driver call (cursor, execute, fetchall, close, commit…) in its
thread and hands each result back through the event loop. A batch insert with its
read-back is a dozen such hand-overs, and each waits for whatever the loop is running at
the time. In ``statement-router up`` the loop also runs the router and the adapters, so a
100-row global-file batch took 15 ms on an idle loop but 223 ms at the median when the
loop ran 5 ms blocks of other work, and 704 ms with 20 ms blocks
(``benchmarks/global_file_store.py``). Run as one sync transaction in a worker thread, the
same batch took 56 and 66 ms: the loop is crossed twice, whatever it is doing.

Only for a SQLite *file*: the worker thread opens its own connections to it, which an
in-memory database would not share. PostgreSQL (asyncpg) has no such hand-over per call;
it keeps the async path. The caller still serialises writers with
``routing.store.engine.sqlite_writer_lock``; SQLite's own lock and busy handler stay the
backstop, as for any second connection.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from routing.store.engine import (
    DEFAULT_SQLITE_BUSY_TIMEOUT_MS,
    install_sqlite_hooks,
    sqlite_file,
    translated_errors,
)

T = TypeVar("T")

_SYNC_ENGINES: weakref.WeakKeyDictionary[AsyncEngine, Engine] = weakref.WeakKeyDictionary()


def thread_engine(engine: AsyncEngine) -> Engine | None:
    """The sync engine on ``engine``'s SQLite file (made once, disposed of with it), or
    None when ``engine`` is not on a SQLite file."""
    found = _SYNC_ENGINES.get(engine)
    if found is not None:
        return found
    if engine.dialect.name != "sqlite" or sqlite_file(engine.url) is None:
        return None
    url = engine.url.set(drivername="sqlite")
    sync = create_engine(
        url,
        connect_args={
            "timeout": DEFAULT_SQLITE_BUSY_TIMEOUT_MS / 1000,
            "check_same_thread": False,  # the executor's threads share the pool
        },
    )
    install_sqlite_hooks(sync, DEFAULT_SQLITE_BUSY_TIMEOUT_MS)

    @event.listens_for(engine.sync_engine, "engine_disposed")
    def _dispose(_engine: Engine) -> None:
        sync.dispose()
        _SYNC_ENGINES.pop(engine, None)

    _SYNC_ENGINES[engine] = sync
    return sync


async def write_transaction(engine: AsyncEngine, work: Callable[[Connection], T]) -> T:
    """``work(conn)`` in one writing transaction (BEGIN IMMEDIATE on SQLite), errors
    translated as ``EngineStore._write`` does: on a SQLite file in a worker thread, else
    on the async engine (``run_sync``, the same sync ``Connection`` API)."""
    sync = thread_engine(engine)
    with translated_errors(engine.url):
        if sync is not None:
            return await asyncio.to_thread(_in_transaction, sync, work)
        async with engine.begin() as conn:
            return await conn.run_sync(work)


def _in_transaction(engine: Engine, work: Callable[[Connection], T]) -> T:
    with engine.begin() as conn:
        return work(conn)
