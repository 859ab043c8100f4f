"""Router throughput on the embedded broker, against two baselines measured in the same run.

    .venv/bin/python benchmarks/router_throughput.py                  # 100k IBANs, 200k stmts
    .venv/bin/python benchmarks/router_throughput.py --ibans 20000 --statements 40000
    .venv/bin/python benchmarks/router_throughput.py --broker kafka --exactly-once
    .venv/bin/python benchmarks/router_throughput.py --router-only --table-store rocksdb

A benchmark, never a timed test (DESIGN §8). One process starts its own Tansu broker,
loads ``--ibans`` IBAN states (40 % bound to a connector, 40 % unbound, 20 % with a pending
mandate, so their statements are held) and produces ``--statements`` statements of about
1 KB spread over those IBANs. It then measures, on the same records:

1. ``aiokafka``: a raw aiokafka consume → ``json.loads`` → ``json.dumps`` → produce
   pass-through (batches from ``getmany``, one ``send`` per record, commit per batch),
   once before the router and once after it, in fresh groups; the rate is the mean of
   the two, because the in-memory Tansu slows down as it fills and a baseline taken only
   first would be measured on an emptier broker than the router;
2. ``faust_minimal``: a minimal faust agent forwarding each event with one ``send``
   (over the first ``--faust-statements`` records: at faust's ~2,000 events/s, all 200k
   would take minutes and measure the same rate);
3. ``router``: the router (its batch pump),
   statements/s from its first read of a statement to the acknowledged commit of the
   last one. The router first runs once to load the states into its Table, then is
   restarted after the statements were produced, so the measured run recovers the Table
   from its changelog and routes a backlog, as after a deployment.

``--table-store rocksdb`` runs both routers on ``TABLE_STORE=rocksdb://``; their data
directory is the same, so the measured run reopens the RocksDB files of the loading run and
recovers only the changelog after them, as a restarted production router does
(``--wipe-tables`` deletes them first: a new disk). The JSON line then also gives the
process's resident memory before and after the measured run (the router runs in this
process) and the state cache's hits and misses.

Prints ONE JSON line: the three rates, ``router_vs_aiokafka`` and
``router_vs_faust_minimal`` (targets: router ≥ 10,000/s, and router_vs_aiokafka ≥ 0.8 since
issue 18), and the machine's load average before and after the run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import hashlib
import json
import os
import platform
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import faust
from aiokafka import AIOKafkaConsumer
from brokers import add_broker_argument, broker_label, local_broker

from config.catalogue import default_catalogue
from config.settings import Settings
from events.topics import Topics, TopicSpec
from routing.broker import ProducerParams, ensure_topics, make_producer
from routing.domain.iban import iban_from_rib
from routing.entrypoints.runtime import tune_gc
from routing.router import RouterApp, RouterTuning, create_router_app

TABLE_STORES = {"memory": "memory://", "rocksdb": "rocksdb://"}
ROUTER_RUN: dict[str, Any] = {}
"""What ``bench_router`` measured besides the rate: the process's resident memory before
and after the measured run, the state cache's hits and the states in the Table."""

TUNING = RouterTuning(session_timeout=6.0, heartbeat_interval=0.5, rebalance_timeout=6.0)
CONNECTORS = ("acd", "cegid", "quadra", "pennylane")


def make_states(n: int, rng: random.Random) -> list[tuple[str, bytes]]:
    out = []
    for i in range(n):
        iban = iban_from_rib("30006", f"{i // 10**11 % 100_000:05d}", f"{i % 10**11:011d}")
        kind = rng.random()
        connector = rng.choice(CONNECTORS) if kind < 0.4 or kind >= 0.8 else None
        doc = {
            "schema": "iban.state/v1",
            "iban": iban,
            "cabinet_id": f"cab-{i % 5000}",
            "client_ref": f"client-{i}",
            "connector_id": connector,
            "connector_on_cabinet": True,
            "mandate_status": "pending" if kind >= 0.8 else "approved",
            "version": 1,
            "updated_at": "2026-01-01T00:00:00+00:00",
        }
        out.append((iban, json.dumps(doc).encode()))
    return out


def make_statements(m: int, ibans: list[str], rng: random.Random) -> list[tuple[bytes, bytes]]:
    out = []
    for n in range(m):
        iban = rng.choice(ibans)
        content = rng.randbytes(560)
        doc = {
            "schema": "statement.received/v1",
            "statement_id": f"bench-{n:08d}",
            "iban": iban,
            "format": "cfonb120",
            "period_start": "2026-01-05",
            "period_end": "2026-01-05",
            "received_at": "2026-01-06T06:00:00+00:00",
            "content_b64": base64.b64encode(content).decode(),
            "source": "bench-feed",
            "content_sha256": hashlib.sha256(content).hexdigest(),
        }
        out.append((iban.encode(), json.dumps(doc).encode()))
    return out


async def produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = make_producer(
        ProducerParams(bootstrap, linger_ms=20, max_batch_size=512 * 1024)
    )
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def bench_aiokafka(bootstrap: str, source: str, sink: str, m: int) -> float:
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        group_id=f"{sink}-group",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    producer = make_producer(ProducerParams(bootstrap, max_batch_size=256 * 1024))
    await consumer.start()
    await producer.start()
    try:
        seen = 0
        first: float | None = None
        while seen < m:
            batch = await consumer.getmany(timeout_ms=200, max_records=2000)
            if not batch:
                continue
            if first is None:
                first = time.perf_counter()
            futures = []
            for records in batch.values():
                for r in records:
                    doc = json.loads(r.value)
                    futures.append(await producer.send(sink, json.dumps(doc).encode(), key=r.key))
                    seen += 1
            await asyncio.gather(*futures)
            await consumer.commit()
        assert first is not None
        return m / (time.perf_counter() - first)
    finally:
        await producer.stop()
        await consumer.stop()


async def bench_faust(bootstrap: str, source: str, sink: str, limit: int, data_dir: Path) -> float:
    app = faust.App(
        f"{source}-faust-minimal",
        broker=f"kafka://{bootstrap}",
        store="memory://",
        datadir=str(data_dir),
        web_enabled=False,
        autodiscover=False,
        broker_session_timeout=6.0,
        broker_heartbeat_interval=0.5,
        broker_rebalance_timeout=6.0,
    )
    raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes,
                           "key_serializer": "raw", "value_serializer": "raw"}
    src = app.topic(source, **raw)
    dst = app.topic(sink, **raw)
    done = asyncio.Event()
    state = {"count": 0, "first": 0.0}

    async def forward(stream: Any) -> None:
        async for event in stream.events():
            if state["count"] == 0:
                state["first"] = time.perf_counter()
            await dst.send(key=event.message.key, value=event.message.value)
            state["count"] += 1
            if state["count"] == limit:
                done.set()

    app.agent(src, name="forward", concurrency=1)(forward)
    await app.start()
    try:
        await asyncio.wait_for(done.wait(), timeout=limit / 200 + 120)
        await app.producer.flush()
        return limit / (time.perf_counter() - state["first"])
    finally:
        await app.stop()


def router_for(
    bootstrap: str, topics: Topics, data_dir: Path, exactly_once: bool = False
) -> RouterApp:
    return create_router_app(
        Settings(data_dir=data_dir, kafka_exactly_once=exactly_once),
        topics,
        default_catalogue(),
        bootstrap_servers=bootstrap,
        tuning=TUNING,
    )


async def load_states(router: RouterApp, n: int) -> float:
    started = time.perf_counter()
    await router.start()
    # The router's counter, not the Table's size: counting a RocksDB store reads every key.
    while router.core.stats["states_applied"] < n:  # noqa: ASYNC110 (polling a counter)
        await asyncio.sleep(0.2)
    return time.perf_counter() - started


async def bench_router(
    router: RouterApp, m: int, n: int, profile: str | None = None
) -> tuple[float, float]:
    """Statements/s from the first read to the last commit, and the Table recovery time.

    Recovery is from the start to the pump's first read: the pump reads only once faust
    has recovered the Tables (``on_rebalance_complete``), and the statements wait in the
    backlog. (It was the time until the Table counted ``n`` states; counting a RocksDB
    store reads every key, and both end within one poll of each other on memory://.)
    The profiler, if any, covers the routing only: it starts at the pump's first read.
    """
    gc.collect()
    rss_before = vm_rss()
    started = asyncio.get_running_loop().time()  # the pump's clock
    await router.start()
    profiler = None
    try:
        while True:
            pump = router.pump
            if pump is None:
                raise SystemExit("the router stopped before it routed")
            if profiler is None and pump.first_read is not None:
                profiler = start_profiler(profile)
            if pump.records >= m:
                assert pump.first_read is not None and pump.last_ack is not None
                cache = router.core._states
                ROUTER_RUN.update(
                    rss_before_router_mib=rss_before // 2**20,
                    rss_after_router_mib=vm_rss() // 2**20,
                    state_cache_hits=cache.hits,
                    state_cache_misses=cache.misses,
                    states_in_table=router.tables.state_count(),  # after the measure
                )
                return m / (pump.last_ack - pump.first_read), pump.first_read - started
            await asyncio.sleep(0.05)
    finally:
        stop_profiler(profiler, profile)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    # The collector settings of every statement-router process (the CLI applies them);
    # the baselines run under them too.
    tune_gc()
    load_before = [round(x, 2) for x in os.getloadavg()]
    # The router's Settings read TABLE_STORE from the environment, as the router process's
    # do: the option sets it, so that a variable left in the shell cannot choose the store.
    os.environ["TABLE_STORE"] = TABLE_STORES[args.table_store]
    rng = random.Random(args.seed)
    data_dir = Path(tempfile.mkdtemp(prefix="router-bench-"))
    broker = local_broker(args.broker, data_dir / "broker")
    await broker.astart()
    try:
        bootstrap = broker.bootstrap_servers
        topics = Topics(prefix=f"bench{os.getpid()}", partitions=args.partitions)
        extra = [
            TopicSpec(f"{topics.prefix}.{name}", args.partitions, "delete", "IBAN", "-", "-")
            for name in ("passthrough-before", "faust-sink", "passthrough-after")
        ]
        await ensure_topics(bootstrap, [*topics.specs(default_catalogue()), *extra])
        states = make_states(args.ibans, rng)
        await produce(bootstrap, topics.iban_state, [(i.encode(), v) for i, v in states])

        router = router_for(bootstrap, topics, data_dir, args.exactly_once)
        try:
            load_s = await load_states(router, args.ibans)
        finally:
            await router.stop()

        statements = make_statements(args.statements, [i for i, _ in states], rng)
        await produce(bootstrap, topics.received, statements)
        del statements
        if args.wipe_tables:  # a router with an empty disk: the whole changelog is read
            shutil.rmtree(data_dir / "router", ignore_errors=True)

        faust_n = min(args.faust_statements, args.statements)
        aiokafka_after = float("nan")
        if args.router_only:  # for profiling runs
            aiokafka_before = faust_rate = float("nan")
        else:
            aiokafka_before = await bench_aiokafka(
                bootstrap, topics.received, extra[0].name, args.statements
            )
            faust_rate = await bench_faust(
                bootstrap, topics.received, extra[1].name, faust_n, data_dir / "faust"
            )
        router = router_for(bootstrap, topics, data_dir, args.exactly_once)
        try:
            router_rate, recovery_s = await bench_router(
                router, args.statements, args.ibans, args.profile
            )
            stats = dict(router.core.stats)
            exactly_once = router.exactly_once
        finally:
            await router.stop()
        if not args.router_only:
            aiokafka_after = await bench_aiokafka(
                bootstrap, topics.received, extra[2].name, args.statements
            )
    finally:
        broker.stop()
    # Tansu slows down as it fills (docs/performance.md), so a baseline taken only before
    # the router flatters the baseline: it is taken before and after, and averaged.
    aiokafka_rate = (aiokafka_before + aiokafka_after) / 2
    return {
        "router_per_s": round(router_rate),
        "aiokafka_passthrough_per_s": rate(aiokafka_rate),
        "aiokafka_before_router_per_s": rate(aiokafka_before),
        "aiokafka_after_router_per_s": rate(aiokafka_after),
        "faust_minimal_per_s": rate(faust_rate),
        "router_vs_aiokafka": ratio(router_rate, aiokafka_rate),
        "router_vs_faust_minimal": ratio(router_rate, faust_rate),
        "statements": args.statements,
        "ibans": args.ibans,
        "faust_statements": faust_n,
        "partitions": args.partitions,
        "exactly_once": exactly_once,
        "state_load_s": round(load_s, 1),
        "table_recovery_s": round(recovery_s, 1),
        "routed": {k: v for k, v in stats.items() if k in
                   ("partner", "global-file", "held", "invalid", "released")},
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
        "table_store": TABLE_STORES[args.table_store],
        "tables_wiped_before_run": args.wipe_tables,
        **ROUTER_RUN,
        "broker": broker_label(args.broker),
        "load_avg_before": load_before,
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, Python {platform.python_version()}",
    }


def vm_rss() -> int:
    """This process's resident memory now, in bytes (the router runs in it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def rate(value: float) -> int | None:
    return None if value != value else round(value)  # NaN: not measured


def ratio(a: float, b: float) -> float | None:
    return None if b != b else round(a / b, 3)


def start_profiler(path: str | None) -> Any:
    """Profile the measured router run: py-spy (``FILE.spy``: raw stacks of every busy
    thread; ``FILE.gil.spy``: of the thread holding the GIL; ``FILE.idle.spy``: of every
    thread, idle or not, to see where the pump waits) or pyinstrument (any other name: a
    call tree)."""
    if path is None:
        return None
    if path.endswith(".spy"):
        import subprocess

        spy = Path(sys.executable).with_name("py-spy")
        gil = ["--gil"] if path.endswith(".gil.spy") else []
        gil += ["--idle"] if path.endswith(".idle.spy") else []
        return subprocess.Popen(
            [str(spy), "record", "--pid", str(os.getpid()), *gil, "-r", "250",
             "-f", "raw", "-o", path],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0005, async_mode="disabled")
    profiler.start()
    return profiler


def stop_profiler(profiler: Any, path: str | None) -> None:
    if profiler is None or path is None:
        return
    if path.endswith(".spy"):
        import signal

        profiler.send_signal(signal.SIGINT)
        profiler.wait(timeout=60)
        return
    profiler.stop()
    Path(path).write_text(profiler.output_text(unicode=False, color=False, show_all=True))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_broker_argument(parser)
    parser.add_argument("--ibans", type=int, default=100_000)
    parser.add_argument("--statements", type=int, default=200_000)
    parser.add_argument("--faust-statements", type=int, default=30_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--exactly-once", action="store_true",
                        help="KAFKA_EXACTLY_ONCE for the router (Kafka only: one transaction "
                        "per input partition and batch; on Tansu it stays at-least-once)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--router-only", action="store_true",
                        help="skip the two baselines (profiling runs)")
    parser.add_argument("--profile", metavar="FILE",
                        help="write a pyinstrument profile of the router run to FILE")
    parser.add_argument("--table-store", choices=tuple(TABLE_STORES), default="memory",
                        help="the router's TABLE_STORE (rocksdb: rocksdict, Tables on disk "
                        "under the run's data directory, kept between the two router runs)")
    parser.add_argument("--wipe-tables", action="store_true",
                        help="delete the router's local Table stores before the measured "
                        "run, so that it recovers the whole changelog (a new disk)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        print(json.dumps(asyncio.run(main(parse_args()))))
