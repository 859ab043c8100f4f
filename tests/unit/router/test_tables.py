"""FaustTables against both Table stores: the in-memory dict and RocksDB (rocksdict).

Batch-mode writes are not faust stream events, so the RocksDB store cannot take their
partition from "the current event" (``Store._set`` asserts one). These tests drive the
store with no event in context, as the pump does, and check that every write lands in the
partition it names, that deletes work, and that each write queues its changelog record.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from faust.types import TP

from config.catalogue import default_catalogue
from config.settings import Settings
from events.topics import Topics
from routing.broker.partitioner import default_partition
from routing.router import RouterApp, RouterTuning, create_router_app, faust_glue
from routing.router.core import Record
from routing.router.tables import FaustTables
from tests.unit.router.factories import state

TOPICS = Topics("unit", 3)


@pytest.fixture(params=["memory://", "rocksdb://"])
async def router(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[RouterApp]:
    settings = Settings(
        kafka_bootstrap_servers="127.0.0.1:1",
        table_store=request.param,
        data_dir=tmp_path,
    )
    router = create_router_app(
        settings,
        TOPICS,
        default_catalogue(),
        bootstrap_servers="127.0.0.1:1",
        app_id=f"unit-tables-{uuid.uuid4().hex[:8]}",
        tuning=RouterTuning(),
    )
    # A RocksDB store lists and counts only the partitions the group made active here;
    # this worker is given them all, as a lone router would be.
    app_id = router.app.conf.id
    actives = {
        TP(f"{app_id}-{name}-changelog", p)
        for name in ("iban-state", "held")
        for p in range(TOPICS.partitions)
    }
    monkeypatch.setattr(router.app.assignor, "assigned_actives", lambda: actives)
    yield router
    for table in (router.tables._state_table, router.tables._held_table):
        store: Any = table.data
        for db in list(getattr(store, "_dbs", {}).values()):
            db.close()


def tables_of(router: RouterApp) -> FaustTables:
    tables = router.tables
    assert isinstance(tables, FaustTables)
    return tables


def partitions_holding(table: Any, key: str) -> list[int]:
    """Where a RocksDB store keeps ``key`` (the memory store has no partitions)."""
    store = table.data
    dbs = getattr(store, "_dbs", None)
    if dbs is None:
        return []
    raw = store._encode_key(key)
    return sorted(p for p, db in dbs.items() if db.get(raw) is not None)


async def test_state_round_trip_and_delete(router: RouterApp) -> None:
    tables = tables_of(router)
    value = {"iban": "FR7630006000011234567890189", "version": 3, "connector_id": "acd"}
    tables.put_state("FR7630006000011234567890189", value, partition=2)
    assert tables.get_state("FR7630006000011234567890189") == value
    assert tables.state_count() == 1
    if router.app.conf.store.scheme == "rocksdb":
        assert partitions_holding(tables._state_table, "FR7630006000011234567890189") == [2]

    tables.delete_state("FR7630006000011234567890189", partition=2)
    assert tables.get_state("FR7630006000011234567890189") is None
    assert tables.state_count() == 0
    assert partitions_holding(tables._state_table, "FR7630006000011234567890189") == []


def entry(sid: str, partition: int, offset: int) -> dict[str, Any]:
    return {"raw": sid, "partition": partition, "offset": offset, "reason": "r", "held_at": "t"}


async def test_held_round_trip_delete_and_listing(router: RouterApp) -> None:
    tables = tables_of(router)
    tables.put_held("IBAN-A", entry("s1", 0, 4), partition=0)
    tables.put_held("IBAN-A", entry("s2", 0, 9), partition=0)
    tables.put_held("IBAN-B", entry("s3", 1, 2), partition=1)
    assert [e["raw"] for e in tables.get_held("IBAN-A") or []] == ["s1", "s2"]
    assert tables.is_held("IBAN-A", 0, 9) and not tables.is_held("IBAN-A", 0, 5)
    assert sorted(tables.held_ibans()) == ["IBAN-A", "IBAN-B"]
    if router.app.conf.store.scheme == "rocksdb":
        assert partitions_holding(tables._held_table, "IBAN-A|0|9") == [0]

    tables.delete_held("IBAN-A", partition=0)
    assert tables.get_held("IBAN-A") is None and not tables.has_held("IBAN-A")
    assert list(tables.held_ibans()) == ["IBAN-B"]
    # Deleting what is not there is harmless: a replayed release deletes twice.
    tables.delete_held("IBAN-A", partition=0)
    assert list(tables.held_ibans()) == ["IBAN-B"]


async def test_the_held_order_is_rebuilt_from_the_store_after_recovery(
    router: RouterApp,
) -> None:
    tables = tables_of(router)
    for offset in (12, 3, 100, 7):  # written out of order: the index sorts by offset
        tables.put_held("IBAN-A", entry(f"s{offset}", 2, offset), partition=2)
    tables.reset_stores()  # as after a rebalance: the index is rebuilt from the keys
    assert [e["offset"] for e in tables.get_held("IBAN-A") or []] == [3, 7, 12, 100]


async def test_each_write_queues_its_changelog_record_in_order(router: RouterApp) -> None:
    tables = tables_of(router)
    tables.put_state("IBAN-A", {"version": 1}, partition=1)
    tables.put_held("IBAN-A", entry("s1", 1, 5), partition=1)
    tables.put_held("IBAN-A", entry("s2", 1, 6), partition=1)
    tables.delete_held("IBAN-A", partition=1)
    tables.delete_state("IBAN-A", partition=1)

    records = tables.take_changelog()
    state_topic = f"{router.app.conf.id}-iban-state-changelog"
    held_topic = f"{router.app.conf.id}-held-changelog"
    assert [(r.topic, r.partition, json.loads(r.key)) for r in records] == [
        (state_topic, 1, "IBAN-A"),
        (held_topic, 1, "IBAN-A|1|5"),
        (held_topic, 1, "IBAN-A|1|6"),
        (held_topic, 1, "IBAN-A|1|5"),
        (held_topic, 1, "IBAN-A|1|6"),
        (state_topic, 1, "IBAN-A"),
    ]
    assert json.loads(records[0].value or b"") == {"version": 1}
    assert json.loads(records[1].value or b"")["raw"] == "s1"  # one statement per record
    assert [r.value for r in records[3:]] == [None, None, None]  # tombstones
    assert tables.take_changelog() == []


# --- the state cache over each store ----------------------------------------------------


def state_record(iban: str, partition: int, offset: int, **fields: Any) -> Record:
    return Record(TOPICS.iban_state, partition, offset, iban.encode(), state(iban, **fields))


async def test_the_state_cache_hits_on_each_store_and_follows_new_versions(
    router: RouterApp,
) -> None:
    # RocksDB decodes a new dict on each read; the cache is keyed by version, not identity.
    core, tables = router.core, tables_of(router)
    iban = "FR7630006000011234567890189"
    partition = default_partition(iban.encode(), TOPICS.partitions)
    core.on_state(state_record(iban, partition, 0, version=1, connector_id="acd"), "now")
    first = core.lookup(iban)
    second = core.lookup(iban)
    assert second[0] is first[0] and second[1].connector_id == "acd"
    assert core._states.hits >= 1

    core.on_state(state_record(iban, partition, 1, version=2, connector_id="cegid"), "now")
    assert core.lookup(iban)[1].connector_id == "cegid"  # the router's own write
    # A newer version written to the store without the core, as changelog recovery does.
    value = dict(tables.get_state(iban) or {}, version=3, connector_id="quadra")
    faust_glue.put_in_partition(tables.state_store, iban, value, partition)
    looked_up = core.lookup(iban)
    assert looked_up[0] is not None and looked_up[0].version == 3
    assert looked_up[1].connector_id == "quadra"


async def test_a_state_is_found_in_its_key_partition_and_anywhere_else(
    router: RouterApp,
) -> None:
    # RocksDB reads look in the IBAN's partition first; a state stored in another one (an
    # iban.state record produced off its key's partition) is still found, faust's way.
    tables = tables_of(router)
    iban = "FR7630006000011234567890189"
    own = default_partition(iban.encode(), TOPICS.partitions)
    other = (own + 1) % TOPICS.partitions
    assert tables.get_state(iban) is None
    tables.put_state(iban, {"version": 1, "where": "other"}, partition=other)
    assert tables.get_state(iban) == {"version": 1, "where": "other"}
    tables.delete_state(iban, partition=other)
    tables.put_state(iban, {"version": 2, "where": "own"}, partition=own)
    assert tables.get_state(iban) == {"version": 2, "where": "own"}
