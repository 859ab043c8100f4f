"""The router's two faust Tables behind :class:`~routing.router.core.TableAccess`.

Reads and writes go to the Table's store directly, and each write also queues the
changelog record that faust's own setter (``Table.on_key_set``) would send, in faust's
format (JSON key and value; a null value deletes), with an *explicit* partition: the
partition of the record being processed. faust's setter takes the partition from the
current stream event, and the pump's inputs are not faust events. The queued
records are produced by the router's sink at the end of each step (after the step's
routed outputs are acknowledged when the step deletes: ``Stepper.issue`` says why), and
:meth:`changelog_persisted` then records the durable offset as faust's send would.

faust still owns the Tables: it creates the changelog topics, recovers the stores from
them on assignment, and applies standby replicas. Window expiry and per-key sensors,
which the setter would also drive, are not used by these Tables.

Reads go straight to the memory store's dict when the store is ``memory://``; any other
store (``rocksdb://``) is read through its Mapping interface, and written partition by
partition (``faust_glue.put_in_partition``). Every use of faust's internals goes through
:mod:`routing.router.faust_glue`.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from typing import Any, cast

from routing.broker.partitioner import default_partition
from routing.observability import metrics
from routing.router import faust_glue
from routing.router.codec import dumps
from routing.router.core import HeldEntry, HeldIndex, held_key
from routing.router.emit import Out


class FaustTables:
    """TableAccess over the ``iban-state`` and ``held`` faust Tables."""

    def __init__(self, state_table: Any, held_table: Any) -> None:
        self._state_table = state_table
        self._held_table = held_table
        self._state: MutableMapping[Any, Any] | None = None
        self._held: MutableMapping[Any, Any] | None = None
        self._index: HeldIndex | None = None
        self._pending: list[Out] = []
        self._partitions = int(state_table.partitions or 1)
        self._read_by_partition = False
        self._changelog_topics: dict[int, str] = {}  # by id() of the two Tables above

    @property
    def state_store(self) -> MutableMapping[Any, Any]:
        if self._state is None:
            self._state = faust_glue.store_of(self._state_table)
            self._read_by_partition = not isinstance(self._state, dict)
        return self._state

    @property
    def held_store(self) -> MutableMapping[Any, Any]:
        if self._held is None:
            self._held = faust_glue.store_of(self._held_table)
        return self._held

    @property
    def state_changelog_topic(self) -> str:
        """The ``iban-state`` Table's changelog: its active partitions are this worker's."""
        return self._changelog_topic(self._state_table)

    def _changelog_topic(self, table: Any) -> str:
        """A Table's changelog topic, asked of faust once: the name lookup cost 5 % of a
        hold when it ran for each changelog record."""
        topic = self._changelog_topics.get(id(table))
        if topic is None:
            topic = self._changelog_topics[id(table)] = faust_glue.changelog_topic(table)
        return topic

    @property
    def held_index(self) -> HeldIndex:
        """Each IBAN's held keys in release order, rebuilt from the store after recovery."""
        if self._index is None:
            self._index = HeldIndex.from_keys(self.held_store.keys())
        return self._index

    def reset_stores(self) -> None:
        """Forget the cached store objects and the held index (faust may replace the
        stores on a rebalance, and recovery changes what they hold)."""
        self._state = self._held = None
        self._index = None

    def take_changelog(self) -> list[Out]:
        """The changelog records queued since the last call, in write order."""
        pending, self._pending = self._pending, []
        return pending

    def changelog_persisted(self, acks: Iterable[Any]) -> None:
        """Tell the stores how far their changelog is durable (what faust's own send does).

        A RocksDB store keeps that offset beside its data, so a restart recovers only the
        changelog records after it. ``acks`` are the RecordMetadata of whole record
        batches, whose ``offset`` is the batch's *first* record: a lower bound, so a
        restart may re-apply a few records, which is harmless (each one sets a whole value
        or deletes it, in order). The memory store ignores it.
        """
        tables = {
            self._changelog_topic(self._state_table): self._state_table,
            self._changelog_topic(self._held_table): self._held_table,
        }
        for ack in acks:
            table = tables.get(ack.topic)
            if table is not None:
                faust_glue.set_persisted_offset(table, ack.topic_partition, ack.offset)

    def count_changelog(self, changelog: Iterable[Out]) -> None:
        """Count acknowledged changelog records per table (Prometheus)."""
        state_topic = self.state_changelog_topic
        states = sum(1 for out in changelog if out.topic == state_topic)
        held = sum(1 for out in changelog) - states
        if states:
            metrics.TABLE_CHANGELOG_RECORDS.labels("iban-state").inc(states)
        if held:
            metrics.TABLE_CHANGELOG_RECORDS.labels("held").inc(held)

    def _changelog(self, table: Any, partition: int, key: str, value: Any) -> None:
        topic = self._changelog_topic(table)
        raw = None if value is None else dumps(value)
        self._pending.append(Out(topic, dumps(key), raw, partition))

    def get_state(self, iban: str) -> dict[str, Any] | None:
        store = self.state_store
        if self._read_by_partition:
            # RocksDB: straight to the IBAN's partition (murmur2 of the key), where
            # the state was written (faust_glue.get_in_partition says why).
            partition = default_partition(iban.encode(), self._partitions)
            value = faust_glue.get_in_partition(store, iban, partition)
            return cast("dict[str, Any] | None", value)
        return cast("dict[str, Any] | None", store.get(iban))

    def put_state(self, iban: str, value: dict[str, Any], partition: int) -> None:
        faust_glue.put_in_partition(self.state_store, iban, value, partition)
        self._changelog(self._state_table, partition, iban, value)

    def delete_state(self, iban: str, partition: int) -> None:
        self.state_store.pop(iban, None)
        self._changelog(self._state_table, partition, iban, None)

    def get_held(self, iban: str, limit: int | None = None) -> list[HeldEntry] | None:
        store = self.held_store
        return [store[key] for key in self.held_index.keys_of(iban, limit)] or None

    def has_held(self, iban: str) -> bool:
        return self.held_index.has(iban)

    def is_held(self, iban: str, partition: int, offset: int) -> bool:
        return self.held_index.contains(iban, partition, offset)

    def put_held(self, iban: str, entry: HeldEntry, partition: int) -> None:
        key = held_key(iban, entry["partition"], entry["offset"])
        faust_glue.put_in_partition(self.held_store, key, entry, partition)
        self.held_index.add(iban, entry["partition"], entry["offset"], key)
        self._changelog(self._held_table, partition, key, entry)

    def delete_held(self, iban: str, partition: int, count: int | None = None) -> None:
        store = self.held_store
        for key in self.held_index.drop(iban, count):
            store.pop(key, None)
            self._changelog(self._held_table, partition, key, None)

    def held_ibans(self) -> Iterable[str]:
        return self.held_index.ibans()

    def state_count(self) -> int:
        return len(self.state_store)
