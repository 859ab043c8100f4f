"""What every SQL store shares: the engine, its transactions and the clock.

The stores are split by concern (``routing.store.cabinets``: the FAQ's use cases,
``routing.store.users``: users and tokens, ``routing.store.outbox``: the outbox and the relay's
leadership); ``routing.store.sql.SqlStateStore`` composes them on one engine, so a mutation
and its outbox row still commit in one transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from config.catalogue import Catalogue, default_catalogue
from routing.domain.ids import ensure_valid_id
from routing.store.engine import EngineStore
from routing.store.tables import cabinets

#: Rows per ``IN (...)`` list, under every driver's bound-parameter limit.
CHUNK = 1000
_T = TypeVar("_T")


def utcnow() -> datetime:
    """The default clock of the stores."""
    return datetime.now(UTC)


def chunks(values: Sequence[_T], size: int) -> Iterable[Sequence[_T]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


class SqlStoreBase(EngineStore):
    """The engine (SQLite or PostgreSQL, async drivers), its transactions and the clock.

    ``catalogue`` is the set of connector ids a cabinet may add (default: the built-in
    catalogue). ``clock`` returns the current aware time; tests may freeze it. The store
    disposes of its engine in ``close`` unless ``owns_engine=False`` (engine shared with
    other components).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        catalogue: Collection[str] | None = None,
        clock: Callable[[], datetime] = utcnow,
        owns_engine: bool = True,
    ) -> None:
        super().__init__(engine, owns_engine=owns_engine)
        self._url = engine.url
        # A live ``Catalogue`` is kept as is (it validated its ids and follows its file, so
        # a connector added to the file can be bound without a restart); others are frozen.
        self._catalogue: Collection[str] = (
            catalogue if isinstance(catalogue, Catalogue) else frozenset(
                ensure_valid_id("connector", c)
                for c in (default_catalogue() if catalogue is None else catalogue)
            )
        )
        self._clock = clock

    @property
    def catalogue(self) -> frozenset[str]:
        return frozenset(self._catalogue)

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("the store's clock must return aware datetimes")
        return now.astimezone(UTC)

    @staticmethod
    async def _cabinet_exists(conn: AsyncConnection, cabinet_id: str) -> bool:
        stmt = select(cabinets.c.id).where(cabinets.c.id == cabinet_id)
        return (await conn.execute(stmt)).first() is not None
