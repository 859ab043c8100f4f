"""End-to-end latency at a fixed rate: ``received_at`` to the partner's webhook and the global file.

    .venv/bin/python benchmarks/end_to_end_latency.py                     # 1,000/s for 60 s
    .venv/bin/python benchmarks/end_to_end_latency.py --rate 200 --duration 10   # a smoke run
    .venv/bin/python benchmarks/end_to_end_latency.py --broker kafka --duration 60 \
        --rates 1000,2000,3000,4000   # the highest rate at which p99 stays under 250 ms

A benchmark, never a timed test (DESIGN §8; target: p99 < 250 ms at 1,000 statements/s).

Topology. The script starts its own Tansu broker and creates the topics. By default
(``--topology up``) the pipeline runs in ONE child process the way ``statement-router up``
runs it (the same role functions in one event loop: ``run_router``, ``run_adapters``,
``run_global_file_builder``, ``run_ledger``, sharing one state-store engine; the relay and
the API are left out, as nothing changes IBAN states and nobody calls the API during the
run). ``--topology processes`` runs the roles one OS process each, as the compose
deployment does, but for the global-file builder and the ledger, which share one process:
on SQLite they must, since they share the file and its in-process writer lock.
``--topology compose`` splits those two as well, exactly as ``docker-compose.yml``; it
needs ``--database-url`` on PostgreSQL, as compose does. The load generator and the
partner's webhook receiver (aiohttp on 127.0.0.1) run in this, the parent, process, so
they do not share the pipeline's event loop. All of it shares the machine's cores.

IBAN states (``--ibans``, half bound to connector ``acd``, half unbound, all approved) are
published to ``iban.state`` before the pipeline starts. A probe statement per destination
must arrive before anything is measured; then statements are produced at ``--rate`` per
second for ``--warmup`` seconds (not measured) and ``--duration`` seconds (measured), each
stamped ``received_at`` = the wall-clock time it is handed to the producer. Latency is:

* webhook: the receiver's wall-clock time when the POST arrives minus ``received_at``
  (the first receipt of a statement; at-least-once duplicates are counted, not timed);
* global file: the stored row's ``stored_at`` (the builder's clock when it first wrote
  the statement, in the state store) minus ``received_at``.

Both clocks are this machine's. The adapters use the settings' retry schedule with a base
of ``--retry-base`` seconds (the receiver always answers 200, so a retry would only come
from a fault, and is reported). Prints ONE JSON line with p50/p95/p99/max per destination
and overall, ``meets_target`` (overall p99 < 250 ms and nothing missing), ``meets_goal``
(the same under 100 ms), the rates, and the machine's load average before and after.
With ``--rates`` it makes one such run per rate (see :func:`highest_rate`) and ends with
a summary line naming the highest rate that met the target.

Each run works in a temporary directory (the broker's data, the state store, the
pipeline's ``pipeline.log``), removed at the end unless ``--keep`` is given.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import math
import os
import platform
import random
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiohttp import web
from brokers import add_broker_argument, broker_label, local_broker
from latency_stats import percentiles
from pydantic import SecretStr
from sqlalchemy import func, select

from config.catalogue import default_catalogue
from config.settings import Settings
from events.topics import Topics
from routing.broker import ProducerParams, ensure_topics, make_producer
from routing.domain.iban import iban_from_rib
from routing.store.engine import create_store_engine
from routing.store.migrate import upgrade
from routing.store.tables import global_file_statements

CONNECTOR = "acd"
TARGET_P99_MS = 250.0
GOAL_P99_MS = 100.0  # issue 18's goal, beside DESIGN §8's target
#: A rate the load generator fell short of by more than this is not a rate that was run.
RATE_SHORTFALL = 0.03


# --------------------------------------------------------------------- the pipeline (child)


ALL_ROLES = ("router", "adapters", "global-file", "ledger")
TOPOLOGIES: dict[str, list[tuple[str, ...]]] = {
    "up": [ALL_ROLES],
    "processes": [("router",), ("adapters",), ("global-file", "ledger")],
    "compose": [("router",), ("adapters",), ("global-file",), ("ledger",)],
}


async def run_pipeline(cfg: dict[str, Any]) -> None:
    """``cfg["roles"]`` of ``statement-router up`` (never relay or API) until SIGTERM."""
    from adapters.delivery import WebhookEndpoint
    from adapters.worker import ConnectorStats, run_adapters
    from routing.entrypoints.bootstrap import (
        open_store,
        run_adapters_role,
        run_global_file_builder,
        run_ledger,
        run_router,
    )
    from routing.entrypoints.runtime import stop_on_signals, tune_gc
    from routing.observability.logs import configure_logging
    from routing.services.backoff import RetrySchedule

    tune_gc()  # as the CLI does for `up` and every role

    settings = Settings(
        data_dir=Path(cfg["data_dir"]),
        database_url=cfg["database_url"],
        kafka_bootstrap_servers=cfg["bootstrap"],
        topic_prefix=cfg["prefix"],
        topic_partitions=cfg["partitions"],
        log_format="json",
        log_level=cfg["log_level"],
        delivery_retry_base_seconds=cfg["retry_base"],
        kafka_linger_ms=cfg["linger_ms"],
    )
    configure_logging(settings.log_format, settings.log_level)
    topics = Topics(settings.topic_prefix, settings.topic_partitions)
    stop = stop_on_signals()
    bootstrap = cfg["bootstrap"]
    endpoint = WebhookEndpoint(url=cfg["webhook_url"], secrets=(SecretStr(cfg["secret"]),))
    adapter_stats: dict[str, ConnectorStats] = {}
    started = {role: asyncio.Event() for role in cfg["roles"]}
    results: dict[str, Any] = {}
    async with open_store(settings, migrate=cfg["migrate"]) as store:
        factories: dict[str, Callable[[], Awaitable[Any]]] = {
            "router": lambda: run_router(settings, topics, default_catalogue(), stop,
                                         bootstrap_servers=bootstrap,
                                         started=started["router"]),
            "adapters": lambda: run_adapters_role(
                settings, bootstrap, lambda producer: run_adapters(
                    settings, topics, {CONNECTOR: endpoint}, stop, producer=producer,
                    bootstrap_servers=bootstrap, stats=adapter_stats,
                    started=started["adapters"],
                    schedule=RetrySchedule.from_settings(settings))),
            "global-file": lambda: run_global_file_builder(settings, topics, store.engine,
                                                           stop, bootstrap_servers=bootstrap,
                                                           started=started["global-file"]),
            "ledger": lambda: run_ledger(settings, topics, store.engine, stop,
                                         bootstrap_servers=bootstrap,
                                         started=started["ledger"]),
        }
        tasks: dict[str, asyncio.Future[Any]] = {
            name: asyncio.ensure_future(factories[name]()) for name in cfg["roles"]}
        ready: asyncio.Future[Any] = asyncio.ensure_future(
            asyncio.gather(*(event.wait() for event in started.values())))
        await asyncio.wait([ready, *tasks.values()], return_when=asyncio.FIRST_COMPLETED)
        if ready.done():
            write_text(cfg["ready_file"], "ready")
        else:
            ready.cancel()
            stop.set()
        await asyncio.wait([asyncio.ensure_future(stop.wait()), *tasks.values()],
                           return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        done = await asyncio.gather(*tasks.values(), return_exceptions=True)
        with contextlib.suppress(asyncio.CancelledError):
            await ready
        for name, result in zip(tasks, done, strict=True):
            if isinstance(result, BaseException):
                results[name] = {"error": repr(result)}
            elif isinstance(result, dict):
                results[name] = {k: (v.as_dict() if hasattr(v, "as_dict") else v)
                                 for k, v in result.items()}
    write_text(cfg["stats_file"], json.dumps(results, default=str))


def write_text(path: str, text: str) -> None:
    Path(path).write_text(text)


def read_json(path: str) -> Any:
    """The file's JSON, or None if the file is not there."""
    file = Path(path)
    return json.loads(file.read_text()) if file.exists() else None


# ------------------------------------------------------------------- the driver (parent)


@dataclass
class Receiver:
    """The partner: records the first receipt time of each statement, answers 200."""

    received: dict[str, float] = field(default_factory=dict)  # statement_id -> latency s
    routed: dict[str, float] = field(default_factory=dict)  # statement_id -> decided - sent
    sent: dict[str, float] = field(default_factory=dict)  # statement_id -> received_at (epoch s)
    duplicates: int = 0
    runner: web.AppRunner | None = None
    url: str = ""

    async def _handle(self, request: web.Request) -> web.Response:
        arrived = time.time()
        doc = json.loads(await request.read())
        sid = doc["statement_id"]
        if sid in self.received:
            self.duplicates += 1
        else:
            sent = datetime.fromisoformat(doc["received_at"]).timestamp()
            self.received[sid] = arrived - sent
            self.sent[sid] = sent
            decided = datetime.fromisoformat(doc["routing"]["decided_at"]).timestamp()
            self.routed[sid] = decided - sent
        return web.Response(status=200)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/statements", self._handle)
        self.runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/statements"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def make_states(n: int) -> tuple[list[tuple[bytes, bytes]], list[str], list[str]]:
    """n approved IBAN states: even ones bound to ``acd``, odd ones unbound."""
    records: list[tuple[bytes, bytes]] = []
    bound: list[str] = []
    unbound: list[str] = []
    for i in range(n):
        iban = iban_from_rib("30006", f"{i // 10**11 % 100_000:05d}", f"{i % 10**11:011d}")
        connector = CONNECTOR if i % 2 == 0 else None
        (bound if connector else unbound).append(iban)
        doc = {
            "schema": "iban.state/v1", "iban": iban, "cabinet_id": f"cab-{i % 500}",
            "client_ref": f"client-{i}", "connector_id": connector,
            "connector_on_cabinet": True, "mandate_status": "approved", "version": 1,
            "updated_at": "2026-01-01T00:00:00+00:00",
        }
        records.append((iban.encode(), json.dumps(doc).encode()))
    return records, bound, unbound


class Load:
    """Statements of about 1 KB (560 random bytes, base64) stamped when produced."""

    def __init__(self, rng: random.Random) -> None:
        self._contents = []
        for _ in range(64):
            raw = rng.randbytes(560)
            self._contents.append((base64.b64encode(raw).decode(),
                                   hashlib.sha256(raw).hexdigest()))
        self._rng = rng

    def statement(self, sid: str, iban: str) -> bytes:
        content, sha = self._rng.choice(self._contents)
        return json.dumps({
            "schema": "statement.received/v1", "statement_id": sid, "iban": iban,
            "format": "cfonb120", "period_start": "2026-01-05", "period_end": "2026-01-05",
            "received_at": datetime.now(UTC).isoformat(), "content_b64": content,
            "source": "latency-bench", "content_sha256": sha,
        }).encode()


async def produce_all(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = make_producer(ProducerParams(bootstrap, linger_ms=20, max_batch_size=512 * 1024))
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def stored_latencies(url: str, prefix: str) -> dict[str, tuple[float, float, float]]:
    """statement_id -> (stored_at - received_at, routed_at - received_at, received_at as
    epoch seconds), for the global-file rows of ``prefix``."""
    engine = create_store_engine(url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                select(global_file_statements.c.statement_id,
                       global_file_statements.c.received_at,
                       global_file_statements.c.stored_at,
                       global_file_statements.c.routed_at)
                .where(global_file_statements.c.statement_id.like(f"{prefix}%")))
            return {sid: ((stored - received).total_seconds(),
                          (routed - received).total_seconds(),
                          _aware(received).timestamp())
                    for sid, received, stored, routed in rows}
    finally:
        await engine.dispose()


def _aware(moment: datetime) -> datetime:
    """SQLite hands back naive UTC datetimes; PostgreSQL aware ones."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def per_minute(samples: list[tuple[float, float]], duration_s: float) -> list[dict[str, Any]]:
    """p99 per minute of the run, by the minute each statement was produced in, to show
    whether latency grows as the broker fills (``samples``: (received_at epoch s, latency s)).

    A statement sent on the run's last boundary (second 600 of 600) belongs to the last
    minute, not to a minute of its own with one statement in it."""
    if not samples:
        return []
    start = min(at for at, _ in samples)
    last = max(0, math.ceil(duration_s / 60) - 1)
    buckets: dict[int, list[float]] = {}
    for at, latency in samples:
        buckets.setdefault(min(int((at - start) // 60), last), []).append(latency)
    return [{"minute": minute + 1, **percentiles(buckets[minute])}
            for minute in sorted(buckets)]


async def stored_count(url: str, prefix: str) -> int:
    engine = create_store_engine(url)
    try:
        async with engine.connect() as conn:
            count = await conn.scalar(
                select(func.count()).select_from(global_file_statements)
                .where(global_file_statements.c.statement_id.like(f"{prefix}%")))
            return int(count or 0)
    finally:
        await engine.dispose()


async def wait_for(predicate: Any, within: float, what: str,
                   children: list[asyncio.subprocess.Process], interval: float = 0.2) -> None:
    deadline = time.monotonic() + within
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        for child in children:
            if child.returncode is not None:
                raise SystemExit(
                    f"a pipeline process exited ({child.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {within:.0f} s waiting for {what}")
        await asyncio.sleep(interval)


async def produce_at_rate(bootstrap: str, topic: str, load: Load, rng: random.Random,
                          ibans: list[str], prefix: str, rate: float, seconds: float
                          ) -> tuple[list[str], float]:
    """Produce ``rate`` statements/s for ``seconds``; return their ids and achieved rate."""
    producer = make_producer(ProducerParams(bootstrap, client_id="latency-bench-feed"))
    await producer.start()
    ids: list[str] = []
    pending: list[asyncio.Future[Any]] = []
    try:
        total = round(rate * seconds)
        started = time.monotonic()
        for n in range(total):
            target = started + n / rate
            delay = target - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            iban = rng.choice(ibans)
            sid = f"{prefix}{n:08d}"
            pending.append(await producer.send(topic, load.statement(sid, iban),
                                               key=iban.encode()))
            ids.append(sid)
            if len(pending) >= 500:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        elapsed = time.monotonic() - started
    finally:
        await producer.stop()
    return ids, total / elapsed if elapsed > 0 else float("nan")


async def stop_child(child: asyncio.subprocess.Process) -> None:
    """SIGTERM (the roles finish their batch and commit), SIGKILL after 60 s; reaped."""
    if child.returncode is None:
        child.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(child.wait(), 60)
        except TimeoutError:
            child.kill()
            await child.wait()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    load_before = os.getloadavg()
    rng = random.Random(args.seed)
    data_dir = Path(tempfile.mkdtemp(prefix="latency-bench-"))
    database_url = args.database_url or f"sqlite+aiosqlite:///{data_dir / 'state.db'}"
    broker = local_broker(args.broker, data_dir / "broker")
    receiver = Receiver()
    children: list[asyncio.subprocess.Process] = []
    child_log = (data_dir / "pipeline.log").open("wb")
    stats_files: list[Path] = []
    try:
        await broker.astart()
        bootstrap = broker.bootstrap_servers
        topics = Topics(prefix=f"lat{os.getpid()}", partitions=args.partitions)
        await ensure_topics(bootstrap, topics.specs(default_catalogue()))
        states, bound, unbound = make_states(args.ibans)
        await produce_all(bootstrap, topics.iban_state, states)
        await receiver.start()

        cfg = {
            "data_dir": str(data_dir), "database_url": database_url, "bootstrap": bootstrap,
            "prefix": topics.prefix, "partitions": args.partitions,
            "webhook_url": receiver.url, "secret": "whsec_" + base64.b64encode(
                rng.randbytes(32)).decode(),
            "retry_base": args.retry_base, "log_level": args.log_level,
            "linger_ms": args.linger_ms,
            "migrate": False,
        }
        await upgrade(database_url)  # once, before the role processes (compose's migrate)
        ready_files: list[Path] = []
        for n, roles in enumerate(TOPOLOGIES[args.topology]):
            ready_files.append(data_dir / f"ready-{n}")
            stats_files.append(data_dir / f"stats-{n}.json")
            child_cfg = {**cfg, "roles": list(roles), "ready_file": str(ready_files[-1]),
                         "stats_file": str(stats_files[-1])}
            children.append(await asyncio.create_subprocess_exec(
                sys.executable, __file__, "--pipeline", json.dumps(child_cfg),
                stdout=child_log, stderr=asyncio.subprocess.STDOUT))
        await wait_for(lambda: all(f.exists() for f in ready_files), 180, "the pipeline",
                       children)

        # One statement per destination must arrive before anything is measured (the
        # router's first assignment and Table recovery happen after it started).
        load = Load(rng)
        probes = 0
        # This run's statement ids: a database given with --database-url outlives the run
        # (--rates makes several runs in it), and the global file keeps a statement id
        # once, so a second run must not reuse the first one's ids.
        run = f"r{secrets.token_hex(4)}-"
        measured = f"{run}m-"

        async def probe() -> bool:
            nonlocal probes
            probes += 1
            await produce_all(bootstrap, topics.received, [
                (bound[0].encode(), load.statement(f"{run}probe-b{probes}", bound[0])),
                (unbound[0].encode(), load.statement(f"{run}probe-u{probes}", unbound[0]))])
            await asyncio.sleep(1.0)
            return (any(s.startswith(f"{run}probe-b") for s in receiver.received)
                    and await stored_count(database_url, f"{run}probe-u") > 0)

        await wait_for(probe, 180, "the first deliveries", children, interval=0.0)
        ibans = bound + unbound
        if args.warmup > 0:
            await produce_at_rate(bootstrap, topics.received, load, rng, ibans, f"{run}warm-",
                                  args.rate, args.warmup)
        ids, achieved = await produce_at_rate(bootstrap, topics.received, load, rng, ibans,
                                              measured, args.rate, args.duration)
        produced_at = time.monotonic()
        # Every measured statement arrives exactly once at one of the two destinations.
        expected = len(ids)

        async def drained() -> bool:
            webhook = sum(1 for s in receiver.received if s.startswith(measured))
            return webhook + await stored_count(database_url, measured) >= expected

        with contextlib.suppress(SystemExit):
            await wait_for(drained, args.drain_timeout, "the last deliveries", children)
        drain_s = time.monotonic() - produced_at
        await asyncio.gather(*(stop_child(child) for child in children))
        webhook_lat = [v for s, v in receiver.received.items() if s.startswith(measured)]
        webhook_routed = [v for s, v in receiver.routed.items() if s.startswith(measured)]
        webhook_after = [v - receiver.routed[s] for s, v in receiver.received.items()
                         if s.startswith(measured)]
        stored = list((await stored_latencies(database_url, measured)).values())
        stored_lat = [total for total, _, _ in stored]
        stored_routed = [routed for _, routed, _ in stored]
        stored_after = [total - routed for total, routed, _ in stored]
        timeline = ([(receiver.sent[s], v) for s, v in receiver.received.items()
                     if s.startswith(measured)]
                    + [(at, total) for total, _, at in stored])
    finally:
        await asyncio.gather(*(stop_child(child) for child in children))
        child_log.close()
        await receiver.stop()
        await broker.astop()
        pipeline_stats: dict[str, Any] = {}
        for stats_file in stats_files:
            pipeline_stats.update(read_json(str(stats_file)) or {})
        # A 10-minute run leaves about a gigabyte of broker log behind.
        if args.keep:
            print(f"logs and data kept in {data_dir}", file=sys.stderr)
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
    overall = percentiles(webhook_lat + stored_lat)
    missing = expected - len(webhook_lat) - len(stored_lat)
    retries = None
    if pipeline_stats and isinstance(pipeline_stats.get("adapters"), dict):
        retries = pipeline_stats["adapters"].get(CONNECTOR, {}).get("retries")
    p99 = overall["p99_ms"]
    return {
        "benchmark": "end_to_end_latency",
        "broker": broker_label(args.broker),
        "rate_per_s": args.rate,
        "achieved_rate_per_s": round(achieved, 1),
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "statements": expected,
        "overall": overall,
        "webhook": percentiles(webhook_lat),
        "global_file": percentiles(stored_lat),
        # Where the time goes: received_at to the router's decision (feed producer, broker,
        # router), and the decision to the delivery (router's produce, broker, consumer).
        "stages": {
            "to_router_decision": percentiles(webhook_routed + stored_routed),
            "decision_to_webhook": percentiles(webhook_after),
            "decision_to_global_file": percentiles(stored_after),
        },
        "per_minute": per_minute(timeline, args.duration),
        "p99_ms": p99,
        "target_p99_ms": TARGET_P99_MS,
        "meets_target": p99 is not None and p99 < TARGET_P99_MS and missing == 0,
        "goal_p99_ms": GOAL_P99_MS,
        "meets_goal": p99 is not None and p99 < GOAL_P99_MS and missing == 0,
        "missing": missing,
        "webhook_duplicates": receiver.duplicates,
        "adapter_retries": retries,
        "drain_after_last_produce_s": round(drain_s, 1),
        "ibans": args.ibans,
        "partitions": args.partitions,
        "database": database_url.split(":", 1)[0],
        "pipeline_log_level": args.log_level,
        "linger_ms": args.linger_ms,
        "topology": args.topology,
        "pipeline_processes": [list(roles) for roles in TOPOLOGIES[args.topology]],
        "pipeline_errors": {k: v["error"] for k, v in (pipeline_stats or {}).items()
                            if isinstance(v, dict) and "error" in v},
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, "
                   f"Python {platform.python_version()}",
    }


async def highest_rate(args: argparse.Namespace, rates: list[float]) -> dict[str, Any]:
    """One full run (fresh broker, topics and pipeline) per rate, in ascending order; each
    run's JSON line is printed as it ends. Stops after the first rate that misses the
    target (p99, nothing missing, and the load generator within 3 % of the rate), since a
    higher rate on the same machine would not pass either. Returns the summary line."""
    runs: list[dict[str, Any]] = []
    for rate in sorted(rates):
        result = await main(argparse.Namespace(**{**vars(args), "rate": rate}))
        print(json.dumps(result), flush=True)
        sustained = result["achieved_rate_per_s"] >= rate * (1 - RATE_SHORTFALL)
        runs.append({"rate_per_s": rate, "achieved_rate_per_s": result["achieved_rate_per_s"],
                     "p99_ms": result["p99_ms"], "missing": result["missing"],
                     "meets_target": result["meets_target"] and sustained,
                     "meets_goal": result["meets_goal"] and sustained,
                     "load_avg_before": result["load_avg_before"],
                     "load_avg_after": result["load_avg_after"]})
        if not runs[-1]["meets_target"]:
            break
    passing = [run["rate_per_s"] for run in runs if run["meets_target"]]
    goal = [run["rate_per_s"] for run in runs if run["meets_goal"]]
    return {
        "benchmark": "end_to_end_latency_highest_rate",
        "broker": broker_label(args.broker),
        "duration_s": args.duration,
        "target_p99_ms": TARGET_P99_MS,
        "runs": runs,
        # Between the last passing rate and the first failing one: not measured.
        "highest_rate_under_target_per_s": max(passing) if passing else None,
        "highest_rate_under_goal_per_s": max(goal) if goal else None,
        "first_rate_over_target_per_s": (runs[-1]["rate_per_s"]
                                         if not runs[-1]["meets_target"] else None),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_broker_argument(parser)
    parser.add_argument("--rate", type=float, default=1000.0, help="statements per second")
    parser.add_argument("--duration", type=float, default=60.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=5.0,
                        help="seconds at the same rate before measuring (not measured)")
    parser.add_argument("--ibans", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--database-url", default="",
                        help="state store URL (default: a SQLite file, as embedded)")
    parser.add_argument("--retry-base", type=float, default=0.05,
                        help="adapters' first retry wait, seconds (DELIVERY_RETRY_BASE_SECONDS)")
    parser.add_argument("--log-level", default="INFO",
                        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="the pipeline's log level (JSON lines to its log file)")
    parser.add_argument("--topology", choices=sorted(TOPOLOGIES), default="up",
                        help="up: every role in one process, as `statement-router up`; "
                             "processes: one process per role, the global-file builder "
                             "and the ledger together (SQLite's writer lock); compose: "
                             "all four apart, as docker compose (PostgreSQL only)")
    parser.add_argument("--linger-ms", type=int, default=Settings().kafka_linger_ms,
                        help="the pipeline producers' linger (KAFKA_LINGER_MS)")
    parser.add_argument("--rates", default="",
                        help="comma-separated rates (e.g. 1000,2000,3000): one run of "
                             "--duration per rate, ascending, until one misses the 250 ms "
                             "target; prints each run's line, then the highest passing rate")
    parser.add_argument("--drain-timeout", type=float, default=120.0)
    parser.add_argument("--keep", action="store_true",
                        help="keep the run's directory (pipeline.log, broker data, state)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--pipeline", help=argparse.SUPPRESS)  # internal: the child
    args = parser.parse_args(argv)
    if args.topology == "compose" and not args.database_url.startswith("postgresql"):
        parser.error(
            "--topology compose needs --database-url postgresql+asyncpg://… (compose's "
            "database): on SQLite the global-file builder and the ledger share one process "
            "and its writer lock, which is --topology processes"
        )
    return args


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.pipeline:
        asyncio.run(run_pipeline(json.loads(arguments.pipeline)))
    else:
        with contextlib.suppress(KeyboardInterrupt):
            if arguments.rates:
                rates = [float(rate) for rate in arguments.rates.split(",") if rate.strip()]
                print(json.dumps(asyncio.run(highest_rate(arguments, rates))))
            else:
                print(json.dumps(asyncio.run(main(arguments))))
