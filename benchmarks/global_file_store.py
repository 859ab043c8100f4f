"""The global-file store's batch write while the event loop is busy with other work.

    .venv/bin/python benchmarks/global_file_store.py                 # both paths, 0/5/20 ms
    .venv/bin/python benchmarks/global_file_store.py --path loop --block-ms 5

In ``statement-router up`` the global-file builder shares its event loop with the router
and the adapters. This measures ``SqlGlobalFileStore.store`` of ``--rows`` statements
(about 1 KB each, as in ``end_to_end_latency.py``) on a SQLite file, ``--batches`` times,
while a task keeps the loop busy in blocks of ``--block-ms`` of pure-Python work between
yields (0: an idle loop). Two paths:

* ``thread``: as shipped, the transaction in one worker thread (``routing.store.threaded``);
* ``loop``: the transaction on the aiosqlite engine, each driver call handed back through
  the loop (the path before that module; forced here by disabling the worker-thread engine).

One JSON line per (path, block) with p50/p95/max of the batch's write time. A benchmark,
never a timed test.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from latency_stats import percentiles

from routing.ports import GlobalFileEntry
from routing.store import threaded
from routing.store.global_file import SqlGlobalFileStore
from routing.store.migrate import upgrade


def batch_of(batch: int, rows: int) -> list[GlobalFileEntry]:
    now = datetime.now(UTC)
    entries = []
    for i in range(rows):
        content = os.urandom(560)
        entries.append(GlobalFileEntry(
            statement_id=f"s{batch}-{i}", cabinet_id=f"cab-{i % 500}",
            iban=f"FR7630006000{batch:06d}{i:07d}", client_ref=f"client-{i}",
            format="cfonb120", period_start=date(2026, 1, 5), period_end=date(2026, 1, 5),
            received_at=now, source="store-bench", content=content,
            content_sha256=hashlib.sha256(content).hexdigest(), routed_at=now,
            routing={"decided_at": now.isoformat(), "rule": "global_file", "version": 1},
            kafka_topic="statements.global-file", kafka_partition=i % 6,
            kafka_offset=batch * rows + i,
        ))
    return entries


async def busy(stop: asyncio.Event, block_ms: float) -> None:
    """Other work on the loop: ``block_ms`` of pure Python (holding the GIL), then yield."""
    while not stop.is_set():
        until = time.perf_counter() + block_ms / 1000
        while time.perf_counter() < until:
            pass
        await asyncio.sleep(0)


async def run(path: str, block_ms: float, rows: int, batches: int) -> dict[str, Any]:
    url = f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp(prefix='gf-store-')) / 'state.db'}"
    await upgrade(url)
    if path == "loop":
        original = threaded.thread_engine
        threaded.thread_engine = lambda engine: None
    store = SqlGlobalFileStore.from_url(url)
    stop = asyncio.Event()
    other = asyncio.create_task(busy(stop, block_ms)) if block_ms > 0 else None
    times: list[float] = []
    try:
        await store.store(batch_of(-1, rows))  # warm: connections, compiled statements
        for batch in range(batches):
            entries = batch_of(batch, rows)
            started = time.perf_counter()
            await store.store(entries)
            times.append(time.perf_counter() - started)
    finally:
        stop.set()
        if other is not None:
            await other
        await store.close()
        if path == "loop":
            threaded.thread_engine = original
    return {"benchmark": "global_file_store", "path": path, "loop_block_ms": block_ms,
            "rows_per_batch": rows, **percentiles(times),
            "machine": f"{platform.machine()} {os.cpu_count()} cpu, "
                       f"Python {platform.python_version()}",
            "load_avg": [round(x, 2) for x in os.getloadavg()]}


async def main(args: argparse.Namespace) -> None:
    for block in args.block_ms:
        for path in args.path:
            print(json.dumps(await run(path, block, args.rows, args.batches)), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--path", nargs="+", choices=("thread", "loop"),
                        default=["loop", "thread"])
    parser.add_argument("--block-ms", nargs="+", type=float, default=[0.0, 5.0, 20.0])
    parser.add_argument("--rows", type=int, default=100, help="statements per batch")
    parser.add_argument("--batches", type=int, default=30)
    asyncio.run(main(parser.parse_args()))
