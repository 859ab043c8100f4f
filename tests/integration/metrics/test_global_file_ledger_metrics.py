"""The global-file builder's and the ledger's metrics: stored / duplicates ignored,
recorded / duplicates ignored, invalid records, and the received-to-stored latency."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from config.settings import Settings
from events.topics import Topics
from routing.broker import EmbeddedBroker, ProducerParams, make_producer, read_topic
from routing.entrypoints.bootstrap import run_global_file_builder, run_ledger
from routing.store.migrate import upgrade
from tests.eventually import eventually
from tests.integration.global_file.factories import iban
from tests.integration.global_file.helpers import global_file_event

from .scrape import Scrape, moved, scrape


async def test_builder_and_ledger_count_new_duplicate_and_invalid_records(
    kafka_broker: EmbeddedBroker, topics: Topics, sqlite_url: str, tmp_path: Path,
    metrics_url: str,
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    await upgrade(sqlite_url)
    settings = Settings(data_dir=tmp_path)
    first = global_file_event("g-1", iban(1))
    received = first.received_at
    oldest_age = (datetime.now(UTC) - received).total_seconds()
    before = await scrape(metrics_url)
    stop = asyncio.Event()
    roles = [
        asyncio.create_task(run_global_file_builder(settings, topics, sqlite_url, stop,
                                                    bootstrap_servers=bootstrap)),
        asyncio.create_task(run_ledger(settings, topics, sqlite_url, stop,
                                       bootstrap_servers=bootstrap)),
    ]
    producer = make_producer(ProducerParams(bootstrap))
    await producer.start()
    try:
        async def outcomes(n: int) -> bool:
            return len(await read_topic(bootstrap, topics.outcomes)) >= n

        await producer.send_and_wait(topics.global_file, first.to_json(), key=b"cab-a")
        await producer.send_and_wait(
            topics.global_file, global_file_event("g-2", iban(1)).to_json(), key=b"cab-a")
        await producer.send_and_wait(topics.global_file, b"{not json", key=b"cab-a")
        await eventually(lambda: outcomes(2), "two stored_global_file outcomes")
        # A redelivery (the router re-sent after a crash): stored once, reported again.
        await producer.send_and_wait(topics.global_file, first.to_json(), key=b"cab-a")
        await eventually(lambda: outcomes(3), "the re-reported outcome")
        await producer.send_and_wait(topics.outcomes, b"not an outcome", key=b"x")

        async def ledger_done() -> bool:
            now = await scrape(metrics_url)
            read = sum(moved(before, now, "statement_router_ledger_outcomes_total", result=r)
                       for r in ("recorded", "duplicate"))
            # The ledger also reads statements.global-file (it derives "routed" there).
            return read >= 6 and moved(before, now, "statement_router_invalid_total",
                                       component="ledger") >= 2

        await eventually(ledger_done, "the ledger to read the outcomes")
        after: Scrape = await scrape(metrics_url)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*roles), 60)
        await producer.stop()

    files = "statement_router_global_file_statements_total"
    assert moved(before, after, files, result="stored") == 2
    assert moved(before, after, files, result="duplicate") == 1
    assert moved(before, after, "statement_router_invalid_total", component="global-file") == 1
    ledger = "statement_router_ledger_outcomes_total"
    # Two stored_global_file outcomes and two "routed" steps derived from the global-file
    # events; the re-sent event and its re-reported outcome are duplicates; "{not json" on
    # statements.global-file and the bad outcome are invalid for the ledger too.
    assert moved(before, after, ledger, result="recorded") == 4
    assert moved(before, after, ledger, result="duplicate") == 2
    assert moved(before, after, "statement_router_invalid_total", component="ledger") == 2
    # Latency from received_at, once per statement stored (not for the duplicate).
    latency = "statement_router_global_file_latency_seconds"
    assert moved(before, after, f"{latency}_count") == 2
    assert moved(before, after, f"{latency}_sum") >= 2 * oldest_age
