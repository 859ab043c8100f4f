"""The outbox the relay publishes to ``iban.state``, and the relay's leadership lock."""

from __future__ import annotations

import fcntl
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from routing.ports import Outbox, OutboxMessage
from routing.store.base import CHUNK, SqlStoreBase, chunks
from routing.store.engine import sqlite_file, translated_errors
from routing.store.tables import outbox

#: pg_try_advisory_lock key of the outbox relay's leadership ("sroutbox" in ASCII).
RELAY_LOCK_KEY = 0x73726F7574626F78


class SqlOutbox(SqlStoreBase, Outbox):
    """Pending outbox rows in commit order, marking them published, and relay leadership."""

    _memory_relay_held: bool = False
    _relay_conn: AsyncConnection | None = None

    # --- the outbox ----------------------------------------------------------------------

    async def pending_outbox(self, limit: int) -> Sequence[OutboxMessage]:
        if limit < 0:
            raise ValueError(f"limit must be positive, got {limit}")
        if limit == 0:
            return []
        async with self._read() as conn:
            rows = (
                await conn.execute(
                    select(outbox)
                    .where(outbox.c.published_at.is_(None))
                    .order_by(outbox.c.id)
                    .limit(limit)
                )
            ).all()
        return [
            OutboxMessage(
                id=int(row.id),
                topic=row.topic,
                key=row.msg_key,
                value=row.payload,
                created_at=row.created_at,
            )
            for row in rows
        ]

    async def mark_published(self, ids: Sequence[int]) -> None:
        unique_ids = sorted(set(ids))
        if not unique_ids:
            return
        async with self._write() as conn:
            now = self._now()
            for chunk in chunks(unique_ids, CHUNK):
                await conn.execute(
                    update(outbox)
                    .where(outbox.c.id.in_(chunk), outbox.c.published_at.is_(None))
                    .values(published_at=now)
                )

    async def outbox_backlog(self) -> int:
        """How many outbox messages wait for the relay (for monitoring and health checks)."""
        async with self._read() as conn:
            stmt = select(func.count()).select_from(outbox).where(outbox.c.published_at.is_(None))
            return int((await conn.execute(stmt)).scalar_one())

    @asynccontextmanager
    async def relay_lock(self) -> AsyncIterator[bool]:
        """Yield True while this process is the one relay allowed to publish the outbox.

        PostgreSQL: a session-level ``pg_try_advisory_lock`` on a dedicated connection kept
        for the context's lifetime (if the process dies, the server drops the lock with the
        session). SQLite: an exclusive ``flock`` on ``<db file>.relay.lock`` (SQLite is a
        single-machine database). Never blocks: False means another relay leads.
        """
        if self._engine.dialect.name == "postgresql":
            async with self._pg_relay_lock() as held:
                yield held
        else:
            async with self._file_relay_lock() as held:
                yield held

    @asynccontextmanager
    async def _pg_relay_lock(self) -> AsyncIterator[bool]:
        with translated_errors(self._url):
            conn = await self._engine.connect()
        try:
            with translated_errors(self._url):
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                held = bool(
                    (
                        await conn.execute(
                            text("SELECT pg_try_advisory_lock(:key)"), {"key": RELAY_LOCK_KEY}
                        )
                    ).scalar_one()
                )
            if held:
                self._relay_conn = conn
            try:
                yield held
            finally:
                self._relay_conn = None
                if held:
                    try:
                        with translated_errors(self._url):
                            await conn.execute(
                                text("SELECT pg_advisory_unlock(:key)"), {"key": RELAY_LOCK_KEY}
                            )
                    except Exception:
                        # Unsure the lock was released: drop the session, which releases it.
                        await conn.invalidate()
        finally:
            await conn.close()

    async def relay_lock_held(self) -> bool:
        """Whether the relay lock taken by ``relay_lock`` is still ours.

        A PostgreSQL advisory lock lives as long as its session: if the server restarted or
        the connection was cut, another relay may lead by now. A file lock cannot be lost.
        """
        if self._engine.dialect.name != "postgresql":
            return True
        conn = self._relay_conn
        if conn is None:
            return False
        try:
            await conn.execute(text("SELECT 1"))
        except Exception:  # the session is gone, and the lock with it
            return False
        return True

    @asynccontextmanager
    async def _file_relay_lock(self) -> AsyncIterator[bool]:
        path = sqlite_file(self._url)
        if path is None:  # in-memory database: only this process can see it
            held = not self._memory_relay_held
            self._memory_relay_held = True
            try:
                yield held
            finally:
                if held:
                    self._memory_relay_held = False
            return
        lock_path = Path(f"{path}.relay.lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = True
            except BlockingIOError:
                held = False
            try:
                yield held
            finally:
                if held:
                    fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
