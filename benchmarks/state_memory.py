"""Resident memory of a router holding N IBAN states, with the memory and the RocksDB store.

    .venv/bin/python benchmarks/state_memory.py                       # 1,000,000 states, both
    .venv/bin/python benchmarks/state_memory.py --ibans 100000 --store memory   # a smoke run
    .venv/bin/python benchmarks/state_memory.py --load direct         # data structure only

A benchmark, never a timed test (DESIGN §8; target: 1,000,000 states within 1 GiB of
resident memory per router, or on RocksDB).

``--load broker`` (the default) measures the real thing: the script starts its own Tansu
broker and, per store, a real router process (``python -m routing.router``, configured
through its environment: ``TABLE_STORE=memory://`` or ``rocksdb://``, ``DATA_DIR`` in a
temporary directory). It publishes ``--ibans`` ``iban.state/v1`` snapshots to the broker;
the router consumes them into its Table like any production update, writing each to the
Table's changelog. The load is complete when the changelog holds one record per IBAN
(read from the broker's end offsets, not from the router). The router's ``VmRSS`` and
``VmHWM`` (peak) are then read from ``/proc/<pid>/status``, and for RocksDB the size of
its data directory. ``baseline_rss_mib`` is the same router's RSS with one state loaded.

``--load direct`` measures the data structure alone, in a fresh process per store: the
Table values the router stores (``state_to_table``) put straight into a dict
(``memory://`` keeps them so) or a ``rocksdict.Rdict`` (JSON bytes, as faust's RocksDB
store does), without broker, faust or router. Use it when the broker path is too slow;
it says nothing of the router's own overhead, and the JSON line says which mode ran.

Prints ONE JSON line with one result per store and ``meets_target`` (RSS < 1 GiB).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiokafka import AIOKafkaConsumer, TopicPartition

from config.catalogue import default_catalogue
from events.topics import Topics, changelog
from routing.broker import EmbeddedBroker, ProducerParams, ensure_topics, make_producer
from routing.broker.topic_reader import true_end_offsets
from routing.domain.iban import iban_from_rib

GIB = 1024**3
STORES = {"memory": "memory://", "rocksdb": "rocksdb://"}
REPO = Path(__file__).resolve().parents[1]


def iban_of(i: int) -> str:
    return iban_from_rib("30006", f"{i // 10**11 % 100_000:05d}", f"{i % 10**11:011d}")


def state_doc(i: int, iban: str) -> dict[str, Any]:
    return {
        "schema": "iban.state/v1", "iban": iban, "cabinet_id": f"cab-{i % 20_000}",
        "client_ref": f"client-{i:07d}", "connector_id": "acd" if i % 2 else None,
        "connector_on_cabinet": True, "mandate_status": "approved", "version": 1,
        "updated_at": "2026-01-01T00:00:00+00:00",
    }


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid`` in bytes, from /proc (psutil is not a dependency)."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(rest.split()[0]) * 1024
    return found


def disk_usage(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def mib(n: int) -> float:
    return round(n / 1024**2, 1)


# ------------------------------------------------------------------ --load broker


async def produce_states(bootstrap: str, topic: str, start: int, stop: int) -> None:
    producer = make_producer(ProducerParams(bootstrap, linger_ms=20, max_batch_size=512 * 1024))
    await producer.start()
    try:
        pending = []
        for i in range(start, stop):
            iban = iban_of(i)
            pending.append(await producer.send(
                topic, json.dumps(state_doc(i, iban)).encode(), key=iban.encode()))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def changelog_records(bootstrap: str, topic: str, partitions: int) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        # Ask for a topic's offsets only once faust created it: a metadata request for a
        # missing topic makes the broker auto-create it, with the wrong partition count.
        if topic not in await consumer.topics():
            return 0
        parts = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(parts)
        deadline = asyncio.get_running_loop().time() + 30
        ends = await true_end_offsets(consumer, parts, deadline=deadline, what=topic)
        return sum(ends.values())
    finally:
        await consumer.stop()


async def wait_records(bootstrap: str, topic: str, partitions: int, n: int,
                       child: asyncio.subprocess.Process, within: float) -> None:
    deadline = time.monotonic() + within
    while True:
        with contextlib.suppress(Exception):  # the changelog topic appears with faust
            if await changelog_records(bootstrap, topic, partitions) >= n:
                return
        if child.returncode is not None:
            raise SystemExit(f"the router exited ({child.returncode}) before loading {n}")
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out: the router did not load {n} states in {within} s")
        await asyncio.sleep(1.0)


async def stop_child(child: asyncio.subprocess.Process) -> None:
    if child.returncode is None:
        child.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(child.wait(), 60)
        except TimeoutError:
            child.kill()
            await child.wait()


async def measure_router(broker: EmbeddedBroker, store: str, args: argparse.Namespace,
                         work: Path) -> dict[str, Any]:
    bootstrap = broker.bootstrap_servers
    topics = Topics(prefix=f"mem{os.getpid()}{store}", partitions=args.partitions)
    await ensure_topics(bootstrap, topics.specs(default_catalogue()))
    data_dir = work / store
    # The router's whole configuration, given explicitly (nothing inherited).
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "TOPIC_PREFIX": topics.prefix,
        "TOPIC_PARTITIONS": str(args.partitions), "TABLE_STORE": STORES[store],
        "DATA_DIR": str(data_dir), "LOG_LEVEL": "WARNING", "PYTHONPATH": str(REPO),
    }
    state_changelog = changelog(topics.group("router"), "iban-state")
    log = (work / f"router-{store}.log").open("wb")
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "routing.router", env=env, cwd=REPO,
        stdout=log, stderr=asyncio.subprocess.STDOUT)
    try:
        await produce_states(bootstrap, topics.iban_state, 0, 1)
        await wait_records(bootstrap, state_changelog, args.partitions, 1, child, 600)
        baseline = proc_status(child.pid)["VmRSS"]
        started = time.monotonic()
        await produce_states(bootstrap, topics.iban_state, 1, args.ibans)
        await wait_records(bootstrap, state_changelog, args.partitions, args.ibans, child,
                           args.load_timeout)
        load_s = time.monotonic() - started
        await asyncio.sleep(args.settle)  # let the last batches' buffers go
        status = proc_status(child.pid)
        router_dir = data_dir / "router"
        disk = disk_usage(router_dir) if store == "rocksdb" and router_dir.exists() else None
    finally:
        await stop_child(child)
        log.close()
    return {
        "store": STORES[store],
        "rss_mib": mib(status["VmRSS"]),
        "peak_rss_mib": mib(status["VmHWM"]),
        "baseline_rss_mib": mib(baseline),
        "rss_per_state_bytes": round((status["VmRSS"] - baseline) / max(1, args.ibans - 1)),
        "disk_mib": None if disk is None else mib(disk),
        "load_s": round(load_s, 1),
        "states_per_s": round((args.ibans - 1) / load_s) if load_s > 0 else None,
        "meets_target": status["VmRSS"] < GIB,
    }


async def broker_mode(args: argparse.Namespace, stores: list[str]) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="state-memory-"))
    broker = EmbeddedBroker(log_dir=work / "broker")
    await broker.astart()
    results = {}
    try:
        for store in stores:
            results[store] = await measure_router(broker, store, args, work)
    except BaseException:
        print(f"failed; the router and broker logs are kept in {work}", file=sys.stderr)
        raise
    else:
        shutil.rmtree(work, ignore_errors=True)
    finally:
        await broker.astop()
    return results


# ------------------------------------------------------------------ --load direct


def direct_child(store: str, n: int, directory: str) -> dict[str, Any]:
    """In a fresh process: fill the store the way the router's Table holds the states."""
    from routing.router.codec import parse_state, state_to_table

    baseline = proc_status(os.getpid())["VmRSS"]
    started = time.monotonic()
    disk = None
    if store == "memory":
        table: dict[str, Any] = {}
        for i in range(n):
            iban = iban_of(i)
            table[iban] = state_to_table(parse_state(json.dumps(state_doc(i, iban)).encode()))
    else:
        from rocksdict import Rdict

        path = Path(directory) / "states.rocksdb"
        db = Rdict(str(path))
        try:
            for i in range(n):
                iban = iban_of(i)
                value = state_to_table(parse_state(json.dumps(state_doc(i, iban)).encode()))
                db[iban.encode()] = json.dumps(value).encode()
            db.flush()
            status_open = proc_status(os.getpid())
        finally:
            db.close()
        disk = disk_usage(path)
    load_s = time.monotonic() - started
    status = proc_status(os.getpid()) if store == "memory" else status_open
    return {
        "store": STORES[store], "rss_mib": mib(status["VmRSS"]),
        "peak_rss_mib": mib(status["VmHWM"]), "baseline_rss_mib": mib(baseline),
        "rss_per_state_bytes": round((status["VmRSS"] - baseline) / max(1, n)),
        "disk_mib": None if disk is None else mib(disk), "load_s": round(load_s, 1),
        "states_per_s": round(n / load_s) if load_s > 0 else None,
        "meets_target": status["VmRSS"] < GIB,
    }


async def direct_mode(args: argparse.Namespace, stores: list[str]) -> dict[str, Any]:
    results = {}
    for store in stores:
        work = Path(tempfile.mkdtemp(prefix="state-memory-direct-"))
        try:
            child = await asyncio.create_subprocess_exec(
                sys.executable, __file__, "--direct-child", store, "--ibans", str(args.ibans),
                "--work", str(work), stdout=asyncio.subprocess.PIPE)
            out, _ = await child.communicate()
            if child.returncode != 0:
                raise SystemExit(f"the direct {store} load failed ({child.returncode})")
            results[store] = json.loads(out)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return results


async def main(args: argparse.Namespace) -> dict[str, Any]:
    stores = list(STORES) if args.store == "both" else [args.store]
    if args.load == "broker":
        results = await broker_mode(args, stores)
        how = ("iban.state events on the embedded broker consumed by a real router "
               "process (python -m routing.router); RSS of that process")
    else:
        results = await direct_mode(args, stores)
        how = ("direct: the Table values in a dict / rocksdict in a bare process; no "
               "broker, faust or router overhead")
    return {
        "benchmark": "state_memory",
        "ibans": args.ibans,
        "load": args.load,
        "measures": how,
        "partitions": args.partitions,
        **{store: result for store, result in results.items()},
        "target_rss_mib": 1024,
        "meets_target": all(r["meets_target"] for r in results.values()),
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, "
                   f"Python {platform.python_version()}",
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ibans", type=int, default=1_000_000)
    parser.add_argument("--store", choices=("memory", "rocksdb", "both"), default="both")
    parser.add_argument("--load", choices=("broker", "direct"), default="broker",
                        help="broker: the real router process (default); direct: the data "
                             "structure alone")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--load-timeout", type=float, default=1800.0)
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds between the last state loaded and the RSS reading")
    parser.add_argument("--direct-child", choices=tuple(STORES), help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.direct_child:
        print(json.dumps(direct_child(arguments.direct_child, arguments.ibans, arguments.work)))
    else:
        with contextlib.suppress(KeyboardInterrupt):
            print(json.dumps(asyncio.run(main(arguments))))
