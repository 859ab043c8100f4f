"""The router's two faust Tables behind :class:`~routing.router.core.TableAccess`.

Writes go to the store and to the changelog with an *explicit* partition (the partition
of the record being processed) instead of ``table[key] = value``: faust's setter takes the
partition from the current stream event, and in ``batch`` mode statements are not faust
events. The effect is what faust's own setter does (``Table.on_key_set``), minus window
expiry (unused here) and the per-key sensors.

Reads go straight to the memory store's dict when the store is ``memory://``; any other
store (``rocksdb://``) is read through its Mapping interface.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from typing import Any, cast

from routing.router.core import HeldEntry


def _raw_dict(table: Any) -> MutableMapping[Any, Any]:
    store = table.data
    inner = getattr(store, "data", None)
    if isinstance(inner, dict):
        return inner
    return cast(MutableMapping[Any, Any], store)


class FaustTables:
    """TableAccess over the ``iban-state`` and ``held`` faust Tables."""

    def __init__(self, state_table: Any, held_table: Any) -> None:
        self._state_table = state_table
        self._held_table = held_table

    def get_state(self, iban: str) -> dict[str, Any] | None:
        return cast("dict[str, Any] | None", _raw_dict(self._state_table).get(iban))

    def put_state(self, iban: str, value: dict[str, Any], partition: int) -> None:
        _raw_dict(self._state_table)[iban] = value
        self._state_table.send_changelog(partition, iban, value)

    def delete_state(self, iban: str, partition: int) -> None:
        _raw_dict(self._state_table).pop(iban, None)
        self._state_table.send_changelog(partition, iban, None, value_serializer="raw")

    def get_held(self, iban: str) -> list[HeldEntry] | None:
        return cast("list[HeldEntry] | None", _raw_dict(self._held_table).get(iban))

    def put_held(self, iban: str, entries: list[HeldEntry], partition: int) -> None:
        _raw_dict(self._held_table)[iban] = entries
        self._held_table.send_changelog(partition, iban, entries)

    def delete_held(self, iban: str, partition: int) -> None:
        _raw_dict(self._held_table).pop(iban, None)
        self._held_table.send_changelog(partition, iban, None, value_serializer="raw")

    def held_ibans(self) -> Iterable[str]:
        return list(_raw_dict(self._held_table).keys())

    def state_count(self) -> int:
        return len(_raw_dict(self._state_table))
