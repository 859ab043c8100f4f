"""The router's per-IBAN cache of decoded states and their decisions, keyed by version.

Every statement looks its IBAN's state up in the ``iban-state`` Table, then builds the
domain snapshot (``state_from_table``) and runs ``decide()`` on it: about 25 µs per
statement, for a result that only changes when the state does. The cache keeps, per IBAN,
the *version* of the Table value it was built from, the snapshot and the decision.

Why the version and not the value object: the memory store hands back the same dict until
the state changes, but faust's RocksDB store decodes a new dict on every read, so an
identity check never hit there (the review of issue 18). A Table value with the version
the cache holds is the same state, because the router stores a state only when its
version is newer than the stored one (``RouterCore._apply_state``).

One case escapes the version: a state deleted (tombstone) and created again with a version
it had before. The router that applies both drops its entry at the delete; another router
may have applied them while it did not own the partition, so the owner drops the whole
cache when its partitions are revoked and again when they are assigned (its Tables are then
recovered from the changelog, ``BatchPump``). A change of the connector catalogue drops it
too: the decisions depend on it.

Bounded: when full it is emptied, a cache and never a second copy of the Table (with
RocksDB, the point is that the states do not all live in memory).
"""

from __future__ import annotations

from routing.domain.decide import Decision
from routing.domain.model import IbanState

DEFAULT_LIMIT = 200_000


class StateCache:
    """``iban → (version, snapshot, decision)``; a hit needs the same version."""

    __slots__ = ("_entries", "_limit", "hits", "misses")

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self._entries: dict[str, tuple[int, IbanState, Decision]] = {}
        self._limit = limit
        self.hits = 0
        self.misses = 0

    def get(self, iban: str, version: int) -> tuple[IbanState, Decision] | None:
        """The cached snapshot and decision for ``iban`` at ``version``, else None."""
        entry = self._entries.get(iban)
        if entry is not None and entry[0] == version:
            self.hits += 1
            return entry[1], entry[2]
        self.misses += 1
        return None

    def put(self, iban: str, state: IbanState, decision: Decision) -> None:
        if len(self._entries) >= self._limit and iban not in self._entries:
            self._entries.clear()
        self._entries[iban] = (state.version, state, decision)

    def drop(self, iban: str) -> None:
        """Forget ``iban`` (the router wrote or deleted its state)."""
        self._entries.pop(iban, None)

    def clear(self) -> None:
        """Forget everything (partitions revoked or assigned, catalogue changed)."""
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, iban: object) -> bool:
        return iban in self._entries
