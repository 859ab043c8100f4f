"""The router's Tables over plain dicts: the in-memory fake the core and pump tests run on.

It lived in ``routing.router.core`` although only tests use it; faust's Tables are the
production ``TableAccess`` (``routing.router.tables``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from events.topics import changelog
from routing.router.core import HeldEntry, HeldIndex, held_key
from routing.router.emit import Out


class DictTables:
    """TableAccess over plain dicts, for tests of the core and the pump without faust.

    ``held`` is the held Table as stored (``held_key`` → entry); ``writes`` logs every
    write, one per changelog record, with its partition. Each write also queues its
    changelog record, in the Faust Tables' format, on ``<name>-iban-state-changelog`` and
    ``<name>-held-changelog``, for :class:`~routing.router.step.Stepper`.
    """

    def __init__(self, name: str = "memory") -> None:
        self.states: dict[str, dict[str, Any]] = {}
        self.held: dict[str, HeldEntry] = {}
        self.writes: list[tuple[str, str, int]] = []
        self.state_changelog_topic = changelog(name, "iban-state")
        self.held_changelog_topic = changelog(name, "held")
        self.persisted: list[Any] = []
        self._pending: list[Out] = []
        self._index = HeldIndex()

    def _changelog(self, topic: str, key: str, value: Any, partition: int) -> None:
        raw = None if value is None else orjson.dumps(value)
        self._pending.append(Out(topic, orjson.dumps(key), raw, partition))

    def take_changelog(self) -> list[Out]:
        pending, self._pending = self._pending, []
        return pending

    def changelog_persisted(self, acks: Iterable[Any]) -> None:
        self.persisted.extend(acks)

    def count_changelog(self, changelog: Iterable[Out]) -> None:
        return None

    def reset_stores(self) -> None:
        """After a rebalance: rebuild the held index from the stored keys."""
        self.recover()

    def recover(self) -> None:
        """Rebuild the held index from the stored keys, as after a restart."""
        self._index = HeldIndex.from_keys(self.held)

    def get_state(self, iban: str) -> dict[str, Any] | None:
        return self.states.get(iban)

    def put_state(self, iban: str, value: dict[str, Any], partition: int) -> None:
        self.states[iban] = value
        self.writes.append(("state", iban, partition))
        self._changelog(self.state_changelog_topic, iban, value, partition)

    def delete_state(self, iban: str, partition: int) -> None:
        self.states.pop(iban, None)
        self.writes.append(("state-del", iban, partition))
        self._changelog(self.state_changelog_topic, iban, None, partition)

    def get_held(self, iban: str, limit: int | None = None) -> list[HeldEntry] | None:
        return [self.held[key] for key in self._index.keys_of(iban, limit)] or None

    def has_held(self, iban: str) -> bool:
        return self._index.has(iban)

    def is_held(self, iban: str, partition: int, offset: int) -> bool:
        return self._index.contains(iban, partition, offset)

    def put_held(self, iban: str, entry: HeldEntry, partition: int) -> None:
        key = held_key(iban, entry["partition"], entry["offset"])
        self.held[key] = entry
        self._index.add(iban, entry["partition"], entry["offset"], key)
        self.writes.append(("held", key, partition))
        self._changelog(self.held_changelog_topic, key, entry, partition)

    def delete_held(self, iban: str, partition: int, count: int | None = None) -> None:
        for key in self._index.drop(iban, count):
            self.held.pop(key, None)
            self.writes.append(("held-del", key, partition))
            self._changelog(self.held_changelog_topic, key, None, partition)

    def held_ibans(self) -> Iterable[str]:
        return self._index.ibans()


