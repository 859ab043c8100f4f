"""Loud failures if faust changes under routing/router/faust_glue.py.

The router uses a few of faust's internals (the module's docstring lists them). These
tests check each one against the installed faust, and replay the changelog records the
router writes through faust's *own* decoding and ``apply_changelog_batch``, as its
recovery would: if faust's format or its stores change, a restarted router would lose
its Tables, and these tests fail first.
"""

from __future__ import annotations

import inspect
import re
import tomllib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import faust
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.consumer.group_coordinator import GroupCoordinator
from faust.stores.rocksdb import Store as RocksStore
from faust.tables.recovery import Recovery
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaDriverConsumer
from faust.types import TP
from faust.types.tuples import Message

from config.catalogue import default_catalogue
from config.settings import Settings
from events.topics import Topics
from routing.broker.partitioner import default_partition
from routing.router import RouterApp, create_router_app, faust_glue
from routing.router.tables import FaustTables

ROOT = Path(__file__).resolve().parents[3]
TOPICS = Topics("glue", 3)


def test_the_supported_range_is_the_one_pyproject_pins() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pin = next(d for d in deps if d.startswith("faust-streaming"))
    low, high = re.fullmatch(r"faust-streaming>=([\d.]+),<([\d.]+)", pin).groups()  # type: ignore[union-attr]
    as_tuple = lambda v: tuple(int(p) for p in v.split("."))  # noqa: E731
    assert faust_glue.SUPPORTED[0] == as_tuple(low)
    assert faust_glue.SUPPORTED[1][: len(as_tuple(high))] == as_tuple(high)
    faust_glue.check_faust()  # the installed one is in range


def test_another_faust_version_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faust, "__version__", "0.16.0")
    with pytest.raises(faust_glue.UnsupportedFaust, match=r"0\.16\.0 is not supported"):
        faust_glue.check_faust()


def test_the_internals_the_glue_uses_exist() -> None:
    for name in (
        "_db_for_partition",
        "_encode_key",
        "_encode_value",
        "set_persisted_offset",
        "apply_changelog_batch",
    ):
        assert callable(getattr(RocksStore, name, None)), f"rocksdb Store.{name} is gone"
    assert "_key_index" in inspect.getsource(RocksStore.__init__)
    assert "self._dbs = {}" in inspect.getsource(RocksStore.__init__)  # partition → DB
    assert inspect.iscoroutinefunction(AIOKafkaDriverConsumer.highwaters)
    # The membership the pump commits as: faust's thread's aiokafka consumer's coordinator.
    assert "self._consumer" in inspect.getsource(AIOKafkaConsumerThread)
    coordinator_init = inspect.getsource(GroupCoordinator.__init__)
    assert "self.generation" in coordinator_init and "self.member_id" in coordinator_init
    monitor = inspect.getattr_static(faust.App, "monitor")
    assert isinstance(monitor, property) and monitor.fset is not None
    # Exactly-once recovery: faust's worker consumer, built by the thread's factory, whose
    # isolation level aiokafka reads at start (from the attribute the glue sets).
    create = inspect.getsource(AIOKafkaConsumerThread._create_worker_consumer)
    assert "isolation_level=isolation_level" in create
    assert "self._create_worker_consumer(" in inspect.getsource(
        AIOKafkaConsumerThread._create_consumer
    )
    assert "isolation_level=self._isolation_level" in inspect.getsource(AIOKafkaConsumer.start)
    # faust's recovery waits for "highwater - 1" read through consumer.highwaters.
    assert "consumer.highwaters(" in inspect.getsource(Recovery._build_highwaters)


@pytest.fixture(params=["memory://", "rocksdb://"])
async def pair(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[RouterApp, RouterApp]]:
    """A router that writes, and a second one (same app id, other data) that recovers."""
    app_id = f"unit-glue-{uuid.uuid4().hex[:8]}"
    routers = []
    for side in ("writer", "reader"):
        settings = Settings(
            kafka_bootstrap_servers="127.0.0.1:1",
            table_store=request.param,
            data_dir=tmp_path / side,
        )
        router = create_router_app(settings, TOPICS, default_catalogue(), app_id=app_id,
                                   bootstrap_servers="127.0.0.1:1")
        actives = {
            TP(f"{app_id}-{n}-changelog", p)
            for n in ("iban-state", "held")
            for p in range(TOPICS.partitions)
        }
        monkeypatch.setattr(router.app.assignor, "assigned_actives", lambda a=actives: a)
        routers.append(router)
    assert faust_glue.active_partitions(
        routers[0].app, routers[0].tables.state_changelog_topic
    ) == frozenset(range(TOPICS.partitions))
    yield routers[0], routers[1]
    for router in routers:
        for table in (router.tables._state_table, router.tables._held_table):
            store: Any = table.data
            for db in list(getattr(store, "_dbs", {}).values()):
                db.close()


async def replay(tables: FaustTables, records: list[Any]) -> None:
    """Apply changelog records as faust's recovery does: its decoding, its batch apply."""
    by_topic = {faust_glue.changelog_topic(t): t for t in (tables._state_table, tables._held_table)}
    for offset, out in enumerate(records):
        table = by_topic[out.topic]
        message = Message(
            out.topic,
            out.partition,
            offset,
            0.0,
            0,
            [],
            out.key,
            out.value,
            None,
            tp=TP(out.topic, out.partition),
        )
        event = await table.changelog_topic.decode(message, propagate=True)
        table.apply_changelog_batch([event])


async def test_faust_recovery_reads_back_what_the_router_writes(
    pair: tuple[RouterApp, RouterApp],
) -> None:
    writer, reader = pair
    w, r = writer.tables, reader.tables
    entry = {"raw": "{}", "partition": 1, "offset": 0, "reason": "x", "held_at": "t"}
    w.put_state("FR1", {"version": 2, "cabinet_id": "c"}, partition=1)
    w.put_state("FR2", {"version": 1}, partition=0)
    w.put_held("FR1", entry, partition=1)
    w.put_held("FR1", {**entry, "offset": 5}, partition=1)
    w.put_held("FR2", {**entry, "partition": 0, "offset": 3}, partition=0)
    w.delete_held("FR2", partition=0)
    w.delete_state("FR2", partition=0)
    # In its key's partition, where the router's reads look first (get_in_partition).
    iban = "FR7630006000011234567890189"
    own = default_partition(iban.encode(), TOPICS.partitions)
    w.put_state(iban, {"version": 4, "connector_id": "acd", "n": None}, partition=own)
    await replay(r, w.take_changelog())
    r.reset_stores()
    assert r.get_state(iban) == {"version": 4, "connector_id": "acd", "n": None}
    assert r.get_state("FR1") == {"version": 2, "cabinet_id": "c"}
    assert r.get_state("FR2") is None
    assert [e["offset"] for e in r.get_held("FR1") or []] == [0, 5]
    assert r.get_held("FR2") is None and list(r.held_ibans()) == ["FR1"]
