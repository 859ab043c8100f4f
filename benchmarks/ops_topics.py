"""``GET /ops/topics`` (and ``/ops/lag``) response time after 1,000,000 outcomes and 100
dead letters: operator reads must not grow with the topics (issue 18, target < 200 ms).

    .venv/bin/python benchmarks/ops_topics.py                    # Tansu, 1,000,000 outcomes
    .venv/bin/python benchmarks/ops_topics.py --broker kafka
    .venv/bin/python benchmarks/ops_topics.py --outcomes 10000   # a smoke run

A benchmark, never a timed test. The script starts its own broker (``--broker``), creates
the pipeline's topics and the router's two Table changelogs, and fills them the fastest
honest way:

* ``deliveries.outcomes``: ``--outcomes`` valid ``delivery.outcome/v1`` records (routed then
  delivered, two per statement; ``--dead-letters`` of them dead_lettered and ``--replayed``
  replayed), produced in batches;
* the delivery ledger: the same outcomes, recorded through ``SqlDeliveryLedger.record`` in
  chunks (what the ledger consumer does per batch, without the consumer), on a migrated
  SQLite database (``--database-url`` for another);
* ``statements.partner.acd.dlq``: ``--dead-letters`` dead letters; the replayed outcomes
  name the places of the first ``--replayed`` of them, so ``dead_letters_open`` is the
  difference;
* the held changelog (``--held`` held statements) and the IBAN-state changelog
  (``--states`` IBANs);
* the ledger's consumer group, committed at the end of the outcomes (a ledger caught up).

Then the real API app (``create_app`` with ``ops_router``) is served by uvicorn on
127.0.0.1, and ``--requests`` ``GET /ops/topics`` are sent over HTTP one after the other,
each taking a fresh sample (the monitor's 5-second cache is off: ``max_age=0``), while a
producer keeps writing ``--write-rate`` outcomes per second, so the topics move between
requests as in production. The first request (``cold_ms``: it folds the two changelogs) is
reported apart. Prints one JSON line per route: p50, p95 and max in milliseconds, and
whether the p95 is under the target.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import uvicorn
from aiokafka import AIOKafkaConsumer
from brokers import add_broker_argument, broker_label, local_broker

from config.catalogue import default_catalogue
from events.dead_letters import replay_detail
from events.schemas import (
    DeliveryAttempt,
    RoutingTrace,
    StatementDeadLetter,
    StatementPartnerDelivery,
)
from events.topics import Topics, TopicSpec
from routing.broker import ProducerParams, end_offsets, ensure_topics, make_producer
from routing.domain.iban import iban_from_rib
from routing.entrypoints.api.app import create_app
from routing.entrypoints.api.ops import new_operator_token, ops_router
from routing.observability.monitor.service import monitor_service
from routing.ports import OutcomeRecord
from routing.store.ledger import SqlDeliveryLedger
from routing.store.migrate import upgrade
from routing.store.sql import SqlStateStore

TARGET_MS = 200.0
CHUNK = 20_000
T0 = datetime(2026, 12, 1, tzinfo=UTC)


def iban_of(i: int) -> str:
    return iban_from_rib("30006", f"{i // 10**11 % 100_000:05d}", f"{i % 10**11:011d}")


def outcomes(first: int, count: int, dead: int) -> list[OutcomeRecord]:
    """Outcome ``first .. first+count-1``: statement n//2, routed then its delivery step
    (dead_lettered for the first ``dead`` statements, delivered for the others)."""
    found = []
    for n in range(first, first + count):
        statement, step = divmod(n, 2)
        if step == 0:
            kind, detail, attempt = "routed", "partner:acd", None
        elif statement < dead:
            kind, detail, attempt = "dead_lettered", "HTTP 400 from the partner", 1
        else:
            kind, detail, attempt = "delivered", "HTTP 200", 1
        found.append(OutcomeRecord(
            statement_id=f"st-{statement:08d}", outcome=kind,
            at=T0 + timedelta(milliseconds=n), iban=iban_of(statement % 50_000),
            cabinet_id=f"cab-{statement % 2_000}", connector_id="acd", attempt=attempt,
            detail=detail, content_sha256=hashlib.sha256(str(statement).encode()).hexdigest(),
        ))
    return found


def wire(record: OutcomeRecord) -> tuple[bytes, bytes]:
    doc = {"schema": "delivery.outcome/v1", "statement_id": record.statement_id,
           "outcome": record.outcome, "at": record.at.isoformat(), "iban": record.iban,
           "cabinet_id": record.cabinet_id, "connector_id": record.connector_id,
           "attempt": record.attempt, "detail": record.detail,
           "content_sha256": record.content_sha256}
    return record.statement_id.encode(), json.dumps(doc).encode()


async def produce(producer: Any, topic: str, records: list[tuple[bytes, bytes | None]],
                  partition: int | None = None) -> list[Any]:
    futures = [await producer.send(topic, value, key=key, partition=partition)
               for key, value in records]
    return list(await asyncio.gather(*futures))


CONTENT = b"0130006    00001EUR2 12345678901  010126" + b" " * 80 + b"\r\n"


def dead_letter(i: int) -> StatementDeadLetter:
    delivery = StatementPartnerDelivery(
        statement_id=f"st-{i:08d}", iban=iban_of(i % 50_000), format="cfonb120",
        period_start=date(2026, 11, 30), period_end=date(2026, 11, 30), received_at=T0,
        content_b64=base64.b64encode(CONTENT).decode(), source="bench",
        content_sha256=hashlib.sha256(CONTENT).hexdigest(), connector_id="acd",
        cabinet_id=f"cab-{i % 2_000}", client_ref=None,
        routing=RoutingTrace(destination="partner", reason="bound", checks=(),
                             state_version=1, decided_at=T0),
    )
    return StatementDeadLetter(
        connector_id="acd", statement_id=delivery.statement_id,
        reason="HTTP 400 from the partner",
        attempts=(DeliveryAttempt(attempt=1, at=T0, error="HTTP 400", status_code=400),),
        dead_lettered_at=T0, delivery=delivery,
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def fill(args: argparse.Namespace, bootstrap: str, topics: Topics,
               ledger: SqlDeliveryLedger, changelogs: tuple[str, str]) -> dict[str, float]:
    held_changelog, state_changelog = changelogs
    producer = make_producer(ProducerParams(bootstrap, linger_ms=20, max_batch_size=512 * 1024))
    await producer.start()
    timings: dict[str, float] = {}
    try:
        started = time.perf_counter()
        dlq = topics.partner_dlq("acd")
        metas = await produce(producer, dlq, [
            (iban_of(i % 50_000).encode(), dead_letter(i).to_json())
            for i in range(args.dead_letters)])
        # The first --replayed dead letters were replayed: one outcome each, naming its place.
        replays = [
            OutcomeRecord(
                statement_id=f"st-{i:08d}", outcome="replayed",
                at=T0 + timedelta(days=1, seconds=i),
                iban=iban_of(i % 50_000), cabinet_id=f"cab-{i % 2_000}", connector_id="acd",
                detail=replay_detail(dlq, [(m.partition, m.offset)]),
                content_sha256=hashlib.sha256(CONTENT).hexdigest())
            for i, m in enumerate(metas[: args.replayed])
        ]
        produce_s = sql_s = 0.0
        total = args.outcomes - len(replays)
        for first in range(0, total, CHUNK):
            chunk = outcomes(first, min(CHUNK, total - first), args.dead_letters)
            if first + CHUNK >= total:
                chunk += replays
            t = time.perf_counter()
            await produce(producer, topics.outcomes, [wire(r) for r in chunk])
            produce_s += time.perf_counter() - t
            t = time.perf_counter()
            await ledger.record(chunk)
            sql_s += time.perf_counter() - t
        timings.update(outcomes_produce_s=round(produce_s, 1), ledger_insert_s=round(sql_s, 1))
        await produce(producer, state_changelog, [
            (json.dumps(iban_of(i)).encode(), json.dumps(
                {"iban": iban_of(i), "connector_id": "acd" if i % 2 else None,
                 "version": 1}).encode())
            for i in range(args.states)])
        await produce(producer, held_changelog, [
            (json.dumps(f"{iban_of(i % 1000)}|0|{i}").encode(), json.dumps(
                {"raw": "{}", "partition": 0, "offset": i, "held_at": T0.isoformat(),
                 "reason": "unknown_iban" if i % 3 else "mandate_pending"}).encode())
            for i in range(args.held)], partition=0)
        await caught_up(bootstrap, f"{topics.prefix}.ledger", topics.outcomes)
        timings["fill_s"] = round(time.perf_counter() - started, 1)
    finally:
        await producer.stop()
    return timings


async def caught_up(bootstrap: str, group_id: str, topic: str) -> None:
    """Commit the ledger's group at the end of the outcomes, as a running ledger that has
    recorded them all would have, so that the timed reads see a pipeline that keeps up."""
    ends = await end_offsets(bootstrap, [topic])
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group_id,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(ends))
        await consumer.commit(dict(ends))
    finally:
        await consumer.stop()


async def keep_writing(bootstrap: str, topic: str, rate: float, stop: asyncio.Event) -> int:
    """Outcomes at ``rate`` per second until ``stop``: the topics move between requests."""
    if rate <= 0:
        return 0
    producer = make_producer(ProducerParams(bootstrap))
    await producer.start()
    sent = 0
    try:
        while not stop.is_set():
            key, value = wire(outcomes(10**9 + sent, 1, 0)[0])
            await producer.send(topic, value, key=key)
            sent += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1 / rate)
        await producer.flush()
    finally:
        await producer.stop()
    return sent


async def timed_requests(client: httpx.AsyncClient, url: str, headers: dict[str, str],
                         count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        response = await client.get(url, headers=headers)
        times.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise SystemExit(f"GET {url}: {response.status_code} {response.text}")
    return times


async def main(args: argparse.Namespace) -> list[dict[str, Any]]:
    data_dir = Path(tempfile.mkdtemp(prefix="ops-topics-bench-"))
    broker = local_broker(args.broker, data_dir / "broker")
    await broker.astart()
    try:
        bootstrap = broker.bootstrap_servers
        topics = Topics(prefix=f"bench{os.getpid()}", partitions=args.partitions)
        catalogue = default_catalogue()
        router_app = f"{topics.prefix}.router"
        changelogs = (f"{router_app}-held-changelog", f"{router_app}-iban-state-changelog")
        await ensure_topics(bootstrap, [
            *topics.specs(catalogue),
            *(TopicSpec(name, args.partitions, "compact", "-", "-", "-") for name in changelogs),
        ])
        url = args.database_url or f"sqlite+aiosqlite:///{data_dir / 'statement-router.db'}"
        await upgrade(url)
        store = SqlStateStore.from_url(url)
        try:
            ledger = SqlDeliveryLedger(store.engine)
            timings = await fill(args, bootstrap, topics, ledger, changelogs)
            token, digest = new_operator_token()
            monitor = monitor_service(bootstrap, topics, list(catalogue), ledger=ledger,
                                      max_age=0.0)
            app = create_app(store, catalogue, ops=ops_router(
                topics, catalogue, bootstrap_servers=bootstrap, operator_token_sha256=digest,
                monitor=monitor))
            port = free_port()
            server = uvicorn.Server(uvicorn.Config(
                app, host="127.0.0.1", port=port, log_config=None, access_log=False,
                lifespan="off"))
            serving = asyncio.create_task(server.serve())
            while not server.started:  # noqa: ASYNC110 - uvicorn offers no event
                await asyncio.sleep(0.05)
            stop = asyncio.Event()
            writer = asyncio.create_task(
                keep_writing(bootstrap, topics.outcomes, args.write_rate, stop))
            headers = {"Authorization": f"Bearer {token}"}
            results = []
            try:
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}",
                                             timeout=60) as client:
                    cold = await timed_requests(client, "/ops/topics", headers, 1)
                    body = (await client.get("/ops/topics", headers=headers)).json()
                    acd = next(c for c in body["connectors"] if c["connector_id"] == "acd")
                    for route in ("/ops/topics", "/ops/lag"):
                        times = await timed_requests(client, route, headers, args.requests)
                        p95 = percentile(times, 0.95)
                        results.append({
                            "benchmark": "ops_topics", "route": route,
                            "broker": broker_label(args.broker),
                            "database": store.engine.dialect.name,
                            "outcomes": args.outcomes, "dead_letters": acd["dead_letters"],
                            "dead_letters_open": acd["dead_letters_open"],
                            "held": body["held"]["current"], "states": args.states,
                            "partitions": args.partitions, "requests": args.requests,
                            "write_rate": args.write_rate,
                            "cold_ms": round(cold[0], 1) if route == "/ops/topics" else None,
                            "p50_ms": round(statistics.median(times), 1),
                            "p95_ms": round(p95, 1), "max_ms": round(max(times), 1),
                            "target_ms": TARGET_MS, "meets_target": p95 < TARGET_MS,
                            **timings,
                            "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared)",
                        })
            finally:
                stop.set()
                written = await writer
                server.should_exit = True
                await serving
            for result in results:
                result["written_during_run"] = written
            return results
        finally:
            await store.close()
    finally:
        await broker.astop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_broker_argument(parser)
    parser.add_argument("--outcomes", type=int, default=1_000_000)
    parser.add_argument("--dead-letters", type=int, default=100)
    parser.add_argument("--replayed", type=int, default=10)
    parser.add_argument("--held", type=int, default=1_000)
    parser.add_argument("--states", type=int, default=20_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--write-rate", type=float, default=100.0,
                        help="outcomes per second written while measuring")
    parser.add_argument("--database-url", default=None)
    for line in asyncio.run(main(parser.parse_args())):
        print(json.dumps(line))
