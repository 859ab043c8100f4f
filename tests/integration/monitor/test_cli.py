"""``statement-router monitor`` as an operator runs it: a separate process, the real broker."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
from pathlib import Path

from events.topics import Topics
from routing.broker import EmbeddedBroker
from routing.store.engine import sqlite_file
from routing.store.migrate import upgrade

from .helpers import commit, dead_letters_on, produce_to_partitions, record_replay
from .test_ops_api import closed_port

ROOT = Path(__file__).resolve().parents[3]
ARGV = [sys.executable, "-c", "from routing.entrypoints.cli.main import main; main()", "monitor"]


def env_for(bootstrap: str, topics: Topics, **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k not in {"CONNECTORS_FILE"}}
    return {**base, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "TOPIC_PREFIX": topics.prefix,
            "TOPIC_PARTITIONS": str(topics.partitions), **extra}


async def monitor_cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *ARGV, *args, env=env, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_json_prints_offsets_lag_and_counts(
    kafka_broker: EmbeddedBroker, topics: Topics
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    await produce_to_partitions(bootstrap, topics.global_file, {1: 6})
    await commit(bootstrap, f"{topics.prefix}.global-file", {(topics.global_file, 1): 4})
    env = env_for(bootstrap, topics)

    code, out, err = await monitor_cli("--json", "--interval", "0.2", env=env)
    assert code == 0, err
    doc = json.loads(out)
    by_topic = {t["topic"]: t for t in doc["topics"]}
    assert [p["end_offset"] for p in by_topic[topics.global_file]["partitions"]] == [0, 6, 0]
    assert doc["rate_window_seconds"] > 0  # two samples: rates are numbers
    assert by_topic[topics.global_file]["rate"] == 0
    groups = {g["group"]: g for g in doc["groups"]}
    builder = groups[f"{topics.prefix}.global-file"]
    assert (builder["role"], builder["lag"]) == ("global-file", 2)
    assert builder["partitions"][1] == {"topic": topics.global_file, "partition": 1,
                                        "committed_offset": 4, "end_offset": 6, "lag": 2}
    # The ledger reads the global-file topic too (it derives "routed" from it) and has
    # committed nothing yet: all six records are its lag.
    ledger = groups[f"{topics.prefix}.ledger"]
    assert (ledger["role"], ledger["lag"]) == ("ledger", 6)
    assert doc["total_lag"] == 2 + 6
    assert doc["invalid"] == 0
    assert {c["connector_id"] for c in doc["connectors"]} == {"acd", "cegid", "quadra",
                                                              "pennylane"}

    code, out, err = await monitor_cli("--json", "--interval", "0", env=env)
    assert code == 0, err
    single = json.loads(out)
    assert single["rate_window_seconds"] is None
    assert all(t["rate"] is None for t in single["topics"])


async def test_tables_once_and_broker_down(kafka_broker: EmbeddedBroker, topics: Topics) -> None:
    env = env_for(kafka_broker.bootstrap_servers, topics, NO_COLOR="1", COLUMNS="200")
    code, out, err = await monitor_cli("--interval", "0", env=env)
    assert code == 0, err
    for title in ("Topics", "Consumer groups", "Per connector"):
        assert title in out
    assert f"{topics.prefix}.adapter.acd" in out and "statements.received" in out

    down = env_for(closed_port(), topics)
    code, out, err = await monitor_cli("--json", "--interval", "0", env=down)
    assert code == 8
    assert out == ""
    assert "broker is unavailable" in err and "cannot reach Kafka" in err


async def test_watch_refreshes_until_interrupted(
    kafka_broker: EmbeddedBroker, topics: Topics
) -> None:
    env = env_for(kafka_broker.bootstrap_servers, topics, TTY_COMPATIBLE="1", NO_COLOR="1",
                  COLUMNS="200")
    proc = await asyncio.create_subprocess_exec(
        *ARGV, "--watch", "--full", "--interval", "0.3", env=env, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    seen = ""

    async def read_until(text: str, *, on_line_with: str | None = None) -> None:
        nonlocal seen
        deadline = asyncio.get_running_loop().time() + 60
        while True:
            left = deadline - asyncio.get_running_loop().time()
            assert left > 0, f"never saw {text!r}; the watch printed: {seen[-3000:]}"
            # type: ignore[union-attr]
            chunk = await asyncio.wait_for(proc.stdout.read(65536), left)
            assert chunk, f"the watch ended early; it printed: {seen[-2000:]}"
            seen += chunk.decode(errors="replace")
            lines = seen.splitlines()
            if on_line_with is None and text in seen:
                return
            if on_line_with is not None and any(
                    on_line_with in line and text in line for line in lines):
                return

    try:
        await read_until("Topics (")  # "no rates yet", or already rates after a retry (Kafka)
        await produce_to_partitions(kafka_broker.bootstrap_servers, topics.invalid, {0: 37})
        await read_until(" 37 ", on_line_with="statements.invalid")
        assert "rates over" in seen
    finally:
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0


async def test_json_counts_open_dead_letters_in_the_configured_ledger(
    kafka_broker: EmbeddedBroker, topics: Topics, sqlite_url: str
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    places = await dead_letters_on(bootstrap, topics, "acd", 3)
    await upgrade(sqlite_url)
    await record_replay(sqlite_url, topics, "acd", places[1])

    code, out, err = await monitor_cli(
        "--json", "--interval", "0", env=env_for(bootstrap, topics, DATABASE_URL=sqlite_url))
    assert code == 0, err
    acd = next(c for c in json.loads(out)["connectors"] if c["connector_id"] == "acd")
    assert (acd["dead_letters"], acd["dead_letters_open"]) == (3, 2)

    # No database at that path: the open count is unknown, the rest is shown, and the
    # monitor, which only reads, leaves no empty database file behind.
    missing = sqlite_url.replace("statement-router.db", "missing.db")
    code, out, err = await monitor_cli(
        "--json", "--interval", "0", env=env_for(bootstrap, topics, DATABASE_URL=missing))
    assert code == 0, err
    acd = next(c for c in json.loads(out)["connectors"] if c["connector_id"] == "acd")
    assert (acd["dead_letters"], acd["dead_letters_open"]) == (3, None)
    missing_file = sqlite_file(missing)
    assert missing_file is not None and not missing_file.exists()

    # A database without the schema: the same.
    empty = sqlite_url.replace("statement-router.db", "empty.db")
    sqlite3.connect(sqlite_file(empty) or "").close()
    code, out, err = await monitor_cli(
        "--json", "--interval", "0", env=env_for(bootstrap, topics, DATABASE_URL=empty))
    assert code == 0, err
    acd = next(c for c in json.loads(out)["connectors"] if c["connector_id"] == "acd")
    assert (acd["dead_letters"], acd["dead_letters_open"]) == (3, None)
