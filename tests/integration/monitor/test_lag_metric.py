"""``statement_router_consumer_lag`` on the API process's /metrics, as serve.py wires it."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from config.settings import Settings
from events.topics import Topics
from routing.broker import EmbeddedBroker
from routing.entrypoints.bootstrap import api_app
from routing.observability.metrics import unregister_collector
from routing.observability.monitor.collector import LAG_COLLECTOR_KEY
from routing.store.migrate import upgrade
from routing.store.sql import SqlStateStore
from tests.eventually import eventually

from .helpers import commit, produce_to_partitions


@pytest.fixture
async def metrics_client(
    kafka_broker: EmbeddedBroker, topics: Topics, sqlite_url: str, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    await upgrade(sqlite_url)
    store = SqlStateStore.from_url(sqlite_url)
    before = set(asyncio.all_tasks())
    settings = Settings(data_dir=tmp_path, database_url=sqlite_url,
                        kafka_bootstrap_servers=kafka_broker.bootstrap_servers,
                        topic_prefix=topics.prefix, topic_partitions=topics.partitions)
    try:
        app = api_app(store, settings, bootstrap_servers=kafka_broker.bootstrap_servers)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client
    finally:
        # Let a refresh a scrape scheduled finish (bounded by the monitor's timeout).
        current = asyncio.current_task()
        pending = [t for t in asyncio.all_tasks() if t not in before and t is not current]
        await asyncio.gather(*pending, return_exceptions=True)
        unregister_collector(LAG_COLLECTOR_KEY)
        await store.close()


def lag_samples(text: str) -> dict[tuple[str, str, str], float]:
    pattern = re.compile(
        r'^statement_router_consumer_lag\{group="([^"]+)",partition="(\d+)",topic="([^"]+)"\} '
        r"(\S+)$", re.MULTILINE)
    return {(g, t, p): float(v) for g, p, t, v in pattern.findall(text)}


async def test_consumer_lag_metric_reports_the_brokers_figures(
    metrics_client: httpx.AsyncClient, kafka_broker: EmbeddedBroker, topics: Topics
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    await produce_to_partitions(bootstrap, topics.outcomes, {0: 7, 2: 2})
    ledger = f"{topics.prefix}.ledger"
    await commit(bootstrap, ledger, {(topics.outcomes, 0): 5, (topics.outcomes, 2): 2})

    # The first scrape only schedules a sample (a scrape never waits on the broker).
    async def scrape() -> httpx.Response:
        response = await metrics_client.get("/metrics")
        assert response.status_code == 200
        return response

    response = await eventually(scrape, "the lag metric", interval=0.1,
                                done=lambda r: bool(lag_samples(r.text)))
    samples = lag_samples(response.text)

    assert samples[(ledger, topics.outcomes, "0")] == 2
    assert samples[(ledger, topics.outcomes, "1")] == 0
    assert samples[(ledger, topics.outcomes, "2")] == 0
    assert samples[(f"{topics.prefix}.adapter.acd", topics.partner("acd"), "0")] == 0
    assert "statement_router_monitor_up 1.0" in response.text
    assert not any("FR76" in line for line in response.text.splitlines())
