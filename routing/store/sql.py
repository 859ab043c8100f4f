"""``SqlStateStore``: the state store on SQL, composed of the stores split by concern.

One class on one engine implements ``routing.ports.StateStore`` (the union of
``CabinetStore``, ``UserStore`` and ``Outbox``): a cabinet mutation appends its
``iban.state`` outbox row in the same transaction, and callers that need one concern
depend on its port only (the relay on ``Outbox``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import datetime
from typing import Any

from routing.ports import StateStore
from routing.store.base import utcnow
from routing.store.cabinets import SqlCabinets
from routing.store.engine import create_store_engine
from routing.store.outbox import SqlOutbox
from routing.store.users import SqlUsers


class SqlStateStore(SqlCabinets, SqlUsers, SqlOutbox, StateStore):
    """The ``StateStore`` port on a SQL database (SQLite or PostgreSQL, async drivers).

    See ``routing.store.cabinets`` for how the FAQ rules stay true under concurrency and
    how versions and the outbox move together.
    """

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        catalogue: Collection[str] | None = None,
        clock: Callable[[], datetime] = utcnow,
        **engine_kwargs: Any,
    ) -> SqlStateStore:
        """A store with its own engine (see ``create_store_engine``); the schema must exist."""
        engine = create_store_engine(url, **engine_kwargs)
        return cls(engine, catalogue=catalogue, clock=clock)
