"""The router with ``TABLE_STORE=rocksdb://`` (the production store) on a real broker.

Its reads go to the IBAN's RocksDB partition and its state cache is keyed by version
(faust's RocksDB store decodes a new dict on every read): these tests check that routing
follows every state change, that the cache hits, and that a restarted router, which keeps
its RocksDB files and recovers only the changelog after them, routes by the latest states,
held statements included.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from config.catalogue import default_catalogue
from config.settings import Settings
from events.topics import Topics
from routing.broker import read_topic
from routing.broker.process import BrokerProcess
from routing.router import RouterApp, RouterTuning, create_router_app
from tests.eventually import eventually
from tests.unit.router.factories import make_iban, state, statement

TUNING = RouterTuning(session_timeout=6.0, heartbeat_interval=0.5, rebalance_timeout=6.0)
IBAN = make_iban(2001)
OTHER = make_iban(2002)


def rocksdb_router(broker: BrokerProcess, topics: Topics, data_dir: Path) -> RouterApp:
    return create_router_app(
        Settings(data_dir=data_dir, table_store="rocksdb://"),
        topics,
        default_catalogue(),
        bootstrap_servers=broker.bootstrap_servers,
        tuning=TUNING,
    )



async def ids(bootstrap: str, topic: str, count: int) -> list[str]:
    """The statement ids on ``topic`` once there are at least ``count``."""
    found: list[Any] = await eventually(
        lambda: read_topic(bootstrap, topic),
        f"{count} records on {topic}",
        within=60.0,
        interval=0.2,
        done=lambda records: len(records) >= count,
    )
    return [json.loads(r.value)["statement_id"] for r in found]


async def applied(router: RouterApp, iban: str, version: int) -> None:
    def holds() -> bool:
        value = router.tables.get_state(iban)
        return value is not None and value["version"] >= version

    await eventually(holds, f"state v{version} in the RocksDB Table")


async def test_the_rocksdb_router_follows_every_state_and_survives_a_restart(
    kafka_broker: BrokerProcess, topics: Topics, producer: AIOKafkaProducer, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap_servers

    async def send_state(iban: str, **fields: Any) -> None:
        await producer.send_and_wait(topics.iban_state, state(iban, **fields), key=iban.encode())

    async def send_statement(sid: str, iban: str = IBAN) -> None:
        await producer.send_and_wait(topics.received, statement(sid, iban), key=iban.encode())

    router = rocksdb_router(kafka_broker, topics, tmp_path)
    await router.start()
    try:
        assert router.app.conf.store.scheme == "rocksdb"
        await send_state(IBAN, version=1, connector_id="acd")
        await applied(router, IBAN, 1)
        for sid in ("a1", "a2", "a3"):
            await send_statement(sid)
        assert await ids(bootstrap, topics.partner("acd"), 3) == ["a1", "a2", "a3"]
        assert router.core._states.hits >= 1  # the same state, read anew from RocksDB

        # A new version: the next statements follow it, none is served the cached one.
        await send_state(IBAN, version=2, connector_id=None)
        await applied(router, IBAN, 2)
        await send_statement("g1")
        assert await ids(bootstrap, topics.global_file, 1) == ["g1"]

        # Held, then released in order by the approval.
        await send_state(IBAN, version=3, connector_id="cegid", mandate_status="pending")
        await applied(router, IBAN, 3)
        await send_statement("h1")
        await send_statement("h2")
        assert await ids(bootstrap, topics.held, 2) == ["h1", "h2"]
        await send_state(OTHER, version=1, connector_id="quadra", mandate_status="pending")
        await applied(router, OTHER, 1)
        await send_statement("o1", OTHER)
        assert await ids(bootstrap, topics.held, 3) == ["h1", "h2", "o1"]
        await send_state(IBAN, version=4, connector_id="cegid")
        assert await ids(bootstrap, topics.partner("cegid"), 2) == ["h1", "h2"]
    finally:
        await router.stop()

    # While it is down: OTHER's mandate is approved. The restarted router opens the same
    # RocksDB files, recovers the changelog tail, releases o1 and routes by version 4.
    await send_state(OTHER, version=2, connector_id="quadra")
    restarted = rocksdb_router(kafka_broker, topics, tmp_path)
    await restarted.start()
    try:
        assert await ids(bootstrap, topics.partner("quadra"), 1) == ["o1"]
        await send_statement("after")
        assert await ids(bootstrap, topics.partner("cegid"), 3) == ["h1", "h2", "after"]
        state_now = restarted.core.state_of(IBAN)
        assert state_now is not None and state_now.version == 4
        assert restarted.tables.held_ibans() == []
    finally:
        await restarted.stop()
