"""The router's state cache (``routing.router.state_cache``), alone and under RouterCore.

The cache holds, per IBAN, the snapshot and decision built from one *version* of its Table
value. These tests check that it hits, and that it never serves a state that changed: a
write by the router, a newer version written under it (as changelog recovery does), a
partition revoked while another owner deleted and re-created the state at the same
version, and a catalogue change. The RocksDB store, whose reads decode a new dict each
time, is covered in tests/unit/router/test_tables.py.
"""

from __future__ import annotations

from typing import Any

from config.catalogue import default_catalogue
from events.topics import Topics
from routing.broker.partitioner import default_partition
from routing.domain.decide import Destination
from routing.router.codec import state_from_table
from routing.router.core import Record, RouterCore
from routing.router.pump import BatchPump
from routing.router.sink import MemorySink
from routing.router.state_cache import StateCache
from tests.unit.router.dict_tables import DictTables
from tests.unit.router.factories import IBAN_A, IBAN_B, state
from tests.unit.router.test_pump import FakeConsumer, FakeHost

TOPICS = Topics("cache", 3)
P = default_partition(IBAN_A.encode(), TOPICS.partitions)
NOW = "2026-01-01T00:00:00+00:00"


def table_value(version: int, connector_id: str | None = "acd") -> dict[str, object]:
    return {
        "cabinet_id": "cab-1",
        "client_ref": "client-1",
        "connector_id": connector_id,
        "connector_on_cabinet": True,
        "mandate_status": "approved",
        "version": version,
        "updated_at": NOW,
    }


def core_over(tables: DictTables) -> RouterCore:
    return RouterCore(topics=TOPICS, catalogue=default_catalogue(), tables=tables)


def apply_state(core: RouterCore, offset: int, **fields: object) -> None:
    rec = Record(TOPICS.iban_state, P, offset, IBAN_A.encode(), state(IBAN_A, **fields))
    core.on_state(rec, NOW)


# --- the cache alone --------------------------------------------------------------------


def test_a_hit_needs_the_same_version() -> None:
    cache = StateCache()
    snapshot = state_from_table(IBAN_A, table_value(3))
    decision = core_over(DictTables())._decide(IBAN_A, snapshot)
    cache.put(IBAN_A, snapshot, decision)
    assert cache.get(IBAN_A, 3) == (snapshot, decision)
    assert cache.get(IBAN_A, 4) is None  # a newer state in the Table: rebuilt
    assert cache.get(IBAN_B, 3) is None
    assert (cache.hits, cache.misses) == (1, 2)
    cache.drop(IBAN_A)
    assert cache.get(IBAN_A, 3) is None and len(cache) == 0


def test_a_full_cache_is_emptied_not_grown() -> None:
    cache = StateCache(limit=2)
    decision = core_over(DictTables())._decide(IBAN_A, None)
    for n, iban in enumerate((IBAN_A, IBAN_B, "FR7630006000000000000000097")):
        cache.put(iban, state_from_table(iban, table_value(n)), decision)
    assert len(cache) == 1 and "FR7630006000000000000000097" in cache


# --- under RouterCore -------------------------------------------------------------------


class CopyingTables(DictTables):
    """Hands out a new dict on every read, as faust's RocksDB store does."""

    def get_state(self, iban: str) -> dict[str, Any] | None:
        value = self.states.get(iban)
        return None if value is None else dict(value)


def test_lookups_hit_for_a_value_read_anew_each_time() -> None:
    tables = CopyingTables()
    tables.states[IBAN_A] = table_value(1)
    assert tables.get_state(IBAN_A) is not tables.get_state(IBAN_A)
    core = core_over(tables)
    first = core.lookup(IBAN_A)
    second = core.lookup(IBAN_A)
    assert second[0] is first[0] and second[1] is first[1]
    assert (core._states.hits, core._states.misses) == (1, 1)


def test_a_state_written_by_the_router_is_never_served_stale() -> None:
    core = core_over(DictTables())
    apply_state(core, 0, version=1, connector_id="acd")
    assert core.lookup(IBAN_A)[1].connector_id == "acd"
    apply_state(core, 1, version=2, connector_id="cegid")
    assert IBAN_A not in core._states  # dropped at the write
    assert core.lookup(IBAN_A)[1].connector_id == "cegid"
    apply_state(core, 2, version=3, connector_id=None, mandate_status="pending")
    assert core.lookup(IBAN_A)[1].destination is Destination.HELD
    core.on_state(Record(TOPICS.iban_state, P, 3, IBAN_A.encode(), None), NOW)  # tombstone
    assert IBAN_A not in core._states and core.lookup(IBAN_A)[0] is None


def test_a_newer_version_written_under_the_cache_is_seen() -> None:
    # Changelog recovery writes the store without the core: the version tells.
    tables = DictTables()
    core = core_over(tables)
    tables.states[IBAN_A] = table_value(1, "acd")
    assert core.lookup(IBAN_A)[1].connector_id == "acd"
    tables.states[IBAN_A] = table_value(2, "cegid")
    state_now, decision = core.lookup(IBAN_A)
    assert state_now is not None and state_now.version == 2
    assert decision.connector_id == "cegid"


async def test_a_revoked_partition_does_not_keep_its_cached_states() -> None:
    # While another router owned the partition it deleted the state and created it again
    # at the same version, bound elsewhere: the version cannot tell, the revoke must.
    host = FakeHost(MemorySink(), topics=TOPICS)
    tables, core = host.tables, host.core
    pump = BatchPump(host, FakeConsumer(), poll_timeout_ms=5)
    tables.states[IBAN_A] = table_value(1, "acd")
    assert core.lookup(IBAN_A)[1].connector_id == "acd"
    assert IBAN_A in core._states
    host.active = frozenset({P})
    await pump.on_partitions_revoked(None)
    assert len(core._states) == 0
    tables.states[IBAN_A] = table_value(1, "cegid")  # recovered from the changelog
    await pump.on_rebalance_complete(None)
    assert core.lookup(IBAN_A)[1].connector_id == "cegid"
    await pump.stop()


def test_a_catalogue_change_drops_the_cached_decisions() -> None:
    tables = DictTables()
    core = core_over(tables)
    tables.states[IBAN_A] = table_value(1, "sage")
    assert core.lookup(IBAN_A)[1].destination is Destination.HELD  # not in the catalogue
    core.catalogue = frozenset({*core.catalogue, "sage"})
    core.forget_cached_states()
    assert core.lookup(IBAN_A)[1].destination is Destination.PARTNER
