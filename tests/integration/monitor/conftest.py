"""Fixtures of the monitor's tests: the delivery ledger fed by its real consumer, a producer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from config.settings import Settings
from events.topics import Topics
from routing.broker import EmbeddedBroker
from routing.entrypoints.bootstrap import run_ledger
from routing.store.engine import create_store_engine
from routing.store.ledger import SqlDeliveryLedger
from routing.store.migrate import upgrade


@pytest.fixture
async def ledger(
    kafka_broker: EmbeddedBroker, topics: Topics, sqlite_url: str, tmp_path: Path
) -> AsyncIterator[SqlDeliveryLedger]:
    """The delivery ledger on SQLite, fed by its real consumer of deliveries.outcomes."""
    await upgrade(sqlite_url)
    engine = create_store_engine(sqlite_url)
    stop = asyncio.Event()
    task = asyncio.create_task(run_ledger(Settings(data_dir=tmp_path), topics, engine, stop,
                                          bootstrap_servers=kafka_broker.bootstrap_servers))
    try:
        yield SqlDeliveryLedger(engine)
    finally:
        stop.set()
        await task
        await engine.dispose()

