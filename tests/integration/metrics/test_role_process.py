"""A role run as its own OS process (`statement-router relay`, as compose runs it) serves
its metrics on METRICS_HOST:METRICS_PORT, and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import httpx

from events.topics import Topics
from routing.broker import EmbeddedBroker
from routing.store.migrate import upgrade
from routing.store.sql import SqlStateStore
from tests.eventually import eventually

from .scrape import Scrape, parse

ROOT = Path(__file__).resolve().parents[3]
IBANS = ("FR7630006000011234567890189", "FR7630004008250001234567886")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_the_relay_process_serves_its_metrics(
    kafka_broker: EmbeddedBroker, topics: Topics, sqlite_url: str, tmp_path: Path
) -> None:
    await upgrade(sqlite_url)
    store = SqlStateStore.from_url(sqlite_url)
    try:
        await store.create_cabinet("cab-p", "P")
        for iban in IBANS:
            await store.add_iban(iban, "cab-p", None)  # two outbox rows
    finally:
        await store.close()
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k not in {"METRICS_HOST", "METRICS_PORT"}},
        "DATABASE_URL": sqlite_url,
        "DATA_DIR": str(tmp_path),
        "KAFKA_BOOTSTRAP_SERVERS": kafka_broker.bootstrap_servers,
        "TOPIC_PREFIX": topics.prefix,
        "TOPIC_PARTITIONS": str(topics.partitions),
        "METRICS_PORT": str(port),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from routing.entrypoints.cli.main import main; main()", "relay",
        cwd=ROOT, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        async with httpx.AsyncClient(timeout=5) as client:

            async def scraped() -> Scrape | None:
                try:
                    return parse((await client.get(f"http://127.0.0.1:{port}/metrics")).text)
                except httpx.TransportError:
                    return None  # not listening yet

            def published(metrics: Scrape | None) -> bool:
                # A fresh process: its counters start at zero, so 2 is exactly its own.
                return (metrics is not None
                        and metrics.value("statement_router_outbox_published_total") == 2
                        and metrics.value("statement_router_outbox_backlog") == 0)

            def alive() -> None:
                assert proc.returncode is None, "the relay exited"

            await eventually(scraped, "metrics showing the 2 rows", interval=0.2,
                             done=published, guard=alive)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, stderr.decode()[-2000:]
