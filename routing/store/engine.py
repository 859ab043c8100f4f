"""Building the async engine of the state store, and turning driver errors into ``StoreError``.

SQLite (the embedded default) needs per-connection set-up that PostgreSQL does not:

* ``foreign_keys=ON``: SQLite ignores foreign keys unless asked, and the composite foreign
  key ibans(cabinet_id, connector_id) -> cabinet_connectors is the database's own guard of
  FAQ rules 2 and 3;
* ``journal_mode=WAL``: readers never block the writer and the writer never blocks readers;
* ``busy_timeout``: a writer waits for the current one instead of failing at once;
* transactions that write start with ``BEGIN IMMEDIATE`` (SQLAlchemy's aiosqlite recipe:
  the driver's own BEGIN handling is switched off and we emit ours in a ``begin`` event).
  Taking the write lock at BEGIN serializes the store's read-check-write transactions, which
  is what a removal of a connector racing a binding to it needs; a deferred BEGIN would
  instead fail one of them with "database is locked" when it upgrades its read lock.
  Read-only transactions (execution option ``READ_ONLY_OPTION``) use a plain deferred BEGIN
  so that, under WAL, they never wait for a writer.

Every store (the state store, the delivery ledger, the global files) is an ``EngineStore``:
one engine set-up, one read-only twin of it, one rule for who disposes of it. The
process's batch writers on one SQLite file queue on ``sqlite_writer_lock``.

Errors: SQLAlchemy itself catches ``DBAPIError`` in a few internal places, so instead of
replacing errors inside the engine (``handle_error``), callers wrap their work in
``translated_errors`` at the store's boundary.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, TypeVar

from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Connection, Row, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from routing.store.errors import (
    SchemaNotReady,
    StoreBusy,
    StoreError,
    StoreIntegrityError,
    StoreUnavailable,
)

#: Execution option that marks a connection's transactions as read-only (SQLite: deferred
#: BEGIN instead of BEGIN IMMEDIATE). Set it with ``await conn.execution_options(**{...})``.
READ_ONLY_OPTION = "statement_router_read_only"

DEFAULT_SQLITE_BUSY_TIMEOUT_MS = 30_000

_ASYNC_DRIVERS = {
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
}


def async_url(url: str | URL) -> URL:
    """The URL with an async driver: postgresql:// -> asyncpg, sqlite:// -> aiosqlite."""
    parsed = make_url(url) if isinstance(url, str) else url
    driver = _ASYNC_DRIVERS.get(parsed.drivername)
    return parsed.set(drivername=driver) if driver else parsed


def safe_url(url: str | URL) -> str:
    """The URL for messages and logs, password hidden."""
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except sa_exc.ArgumentError:
        return "<unparsable database URL>"
    return parsed.render_as_string(hide_password=True)


def sqlite_file(url: str | URL) -> Path | None:
    """The database file of a SQLite URL, or None (not SQLite, in-memory, or a URI)."""
    parsed = make_url(url) if isinstance(url, str) else url
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file:") or parsed.query.get("uri"):
        return None
    return Path(database)


def create_store_engine(
    url: str | URL,
    *,
    sqlite_busy_timeout_ms: int = DEFAULT_SQLITE_BUSY_TIMEOUT_MS,
    echo: bool = False,
    **engine_kwargs: Any,
) -> AsyncEngine:
    """An ``AsyncEngine`` for the state store, with the SQLite set-up described above.

    For a SQLite file the parent directory is created, so the embedded mode needs no set-up.
    The caller owns the engine and must ``await engine.dispose()``.
    """
    parsed = async_url(url)
    if parsed.get_backend_name() != "sqlite":
        # A pooled connection may have been closed by the server or a proxy meanwhile.
        engine_kwargs.setdefault("pool_pre_ping", True)
        return create_async_engine(parsed, echo=echo, **engine_kwargs)

    path = sqlite_file(parsed)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(
                f"cannot create the directory {path.parent} of the SQLite database: {exc}"
            ) from exc
    connect_args = dict(engine_kwargs.pop("connect_args", {}))
    connect_args.setdefault("timeout", sqlite_busy_timeout_ms / 1000)
    engine = create_async_engine(parsed, echo=echo, connect_args=connect_args, **engine_kwargs)
    _install_sqlite_hooks(engine, sqlite_busy_timeout_ms)
    return engine


def _install_sqlite_hooks(engine: AsyncEngine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        # Take BEGIN away from the driver (it would emit a deferred BEGIN, and none at all
        # before DDL); the "begin" listener below emits ours.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.fetchall()
            cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get(READ_ONLY_OPTION):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")


@asynccontextmanager
async def engine_for(store_url_or_engine: str | AsyncEngine) -> AsyncIterator[AsyncEngine]:
    """The given engine (left open), or one built from the URL and disposed of on exit."""
    if isinstance(store_url_or_engine, AsyncEngine):
        yield store_url_or_engine
        return
    engine = create_store_engine(store_url_or_engine)
    try:
        yield engine
    finally:
        await engine.dispose()


_SQLITE_WRITERS: weakref.WeakKeyDictionary[AsyncEngine, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def sqlite_writer_lock(
    engine: AsyncEngine | None,
) -> contextlib.AbstractAsyncContextManager[Any]:
    """Serialises this process's batch writers (ledger, global-file builder) on SQLite.

    SQLite has one writer at a time, and a writer that finds the database locked sleeps in
    SQLite's busy handler, in growing steps of up to 100 ms, instead of being woken when
    the lock is free. With the ledger and the global-file builder sharing one SQLite file
    (the embedded mode) that sleeping made a five-row insert take 44 ms at the median and
    up to 660 ms (docs/performance.md). Queuing them on one asyncio lock per engine hands
    the database over without sleeping. PostgreSQL has row locks: no lock there.
    """
    if engine is None or engine.dialect.name != "sqlite":
        return contextlib.nullcontext()
    lock = _SQLITE_WRITERS.get(engine)
    if lock is None:
        lock = _SQLITE_WRITERS[engine] = asyncio.Lock()
    return lock


class EngineStore:
    """A store on an ``AsyncEngine``: writing and read-only transactions, errors translated.

    Share one engine between the stores of a process with ``owns_engine=False`` (one pool
    per process; ``close`` then leaves the engine to its owner); ``from_url`` makes a
    store that owns its engine and disposes of it in ``close``.
    """

    def __init__(self, engine: AsyncEngine, *, owns_engine: bool) -> None:
        self._engine = engine
        self._read_engine = engine.execution_options(**{READ_ONLY_OPTION: True})
        self._owns_engine = owns_engine

    @classmethod
    def from_url(cls, url: str, **engine_kwargs: Any) -> Self:
        """A store with its own engine (``create_store_engine``); the schema must exist."""
        return cls(create_store_engine(url, **engine_kwargs), owns_engine=True)

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    async def close(self) -> None:
        if self._owns_engine:
            await self._engine.dispose()

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        """One writing transaction (BEGIN IMMEDIATE on SQLite), driver errors translated."""
        with translated_errors(self._engine.url):
            async with self._engine.begin() as conn:
                yield conn

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        """One read-only transaction (a deferred BEGIN on SQLite, so it never waits)."""
        with translated_errors(self._engine.url):
            async with self._read_engine.begin() as conn:
                yield conn


# --- errors ---------------------------------------------------------------------------

_PG_UNAVAILABLE_CLASSES = ("08", "28", "3D", "53", "57P")
_PG_BUSY = {"40001", "40P01", "55P03", "57014"}
_PG_SCHEMA = {"42P01", "42703", "42704"}
_PG_INTEGRITY_KINDS = {
    "23503": "foreign_key",
    "23001": "foreign_key",
    "23505": "unique",
    "23502": "not_null",
    "23514": "check",
}
_SQLITE_INTEGRITY_KINDS = (
    ("FOREIGN KEY", "foreign_key"),
    ("UNIQUE", "unique"),
    ("PRIMARY KEY", "unique"),
    ("NOT NULL", "not_null"),
    ("CHECK", "check"),
)


def _sqlstate(error: BaseException | None) -> str | None:
    for attr in ("sqlstate", "pgcode"):
        value = getattr(error, attr, None)
        if isinstance(value, str):
            return value
    return None


def _driver_message(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    detail = getattr(orig, "detail", None)
    if isinstance(detail, str) and detail and detail not in text:
        text = f"{text} ({detail})"
    return re.sub(r"\s+", " ", text) or type(exc).__name__


def wrap_error(exc: BaseException, url: str | URL) -> StoreError:
    """The ``StoreError`` that explains ``exc`` (a driver, pool or socket error)."""
    if isinstance(exc, StoreError):
        return exc
    where = safe_url(url)
    message = _driver_message(exc)
    orig = getattr(exc, "orig", None)
    state = _sqlstate(orig)
    lowered = message.lower()

    if isinstance(exc, sa_exc.IntegrityError):
        kind = _PG_INTEGRITY_KINDS.get(state or "", "")
        if not kind:
            kind = next((k for marker, k in _SQLITE_INTEGRITY_KINDS if marker in message), "other")
        cause = getattr(orig, "__cause__", None)
        constraint = getattr(cause, "constraint_name", None) or getattr(
            orig, "constraint_name", None
        )
        return StoreIntegrityError(
            f"the database refused the change ({kind} constraint): {message}",
            kind=kind,
            constraint=constraint if isinstance(constraint, str) else None,
        )
    if isinstance(exc, sa_exc.TimeoutError):
        return StoreBusy(f"no free database connection in time for {where}: {message}")
    if isinstance(exc, OSError):
        return StoreUnavailable(f"cannot reach the database {where}: {message}")
    if isinstance(exc, sa_exc.DBAPIError):
        if state in _PG_BUSY or "database is locked" in lowered or "database is busy" in lowered:
            return StoreBusy(
                f"the database {where} is busy (lock wait, serialization failure or "
                f"deadlock); nothing was committed, retry: {message}"
            )
        if state in _PG_SCHEMA or "no such table" in lowered or "no such column" in lowered:
            return SchemaNotReady(
                f"the database {where} has no or an outdated schema; apply the migrations "
                f"(statement-router db upgrade): {message}"
            )
        if (
            exc.connection_invalidated
            or isinstance(exc, sa_exc.InterfaceError)
            or (state is not None and state.startswith(_PG_UNAVAILABLE_CLASSES))
            or "unable to open database file" in lowered
            or isinstance(orig, OSError)
        ):
            return StoreUnavailable(f"cannot use the database {where}: {message}")
        return StoreError(f"database error on {where}: {message}")
    return StoreError(f"database error on {where}: {message}")


@contextmanager
def translated_errors(url: str | URL) -> Iterator[None]:
    """Re-raise driver, pool and socket errors as ``StoreError`` (original as ``__cause__``)."""
    try:
        yield
    except (sa_exc.DBAPIError, sa_exc.TimeoutError, OSError) as exc:
        raise wrap_error(exc, url) from exc


if TYPE_CHECKING:
    from _typeshed import DataclassInstance

_Record = TypeVar("_Record", bound="DataclassInstance")


def record_of(cls: type[_Record], row: Row[Any], **converted: Any) -> _Record:
    """The port's dataclass ``cls`` from a row whose columns carry its field names.

    One mapping for every store, instead of a field-by-field copy per record type;
    ``converted`` gives the fields whose column needs converting (``bytes`` of a memoryview).
    A column missing from the row is a KeyError here, at the first read in the tests, not
    a silently defaulted field.
    """
    mapping = row._mapping
    names = (f.name for f in dataclasses.fields(cls))
    return cls(**{name: converted[name] if name in converted else mapping[name]
                  for name in names})
