"""Router throughput with 1 and with 2 router processes on the same broker and statements.

    .venv/bin/python benchmarks/scale_out.py                           # 100k IBANs, 200k stmts
    .venv/bin/python benchmarks/scale_out.py --ibans 10000 --statements 20000   # a smoke run

A benchmark, never a timed test (DESIGN §8). The script starts its own Tansu broker. For
each process count (1, then 2) it uses a fresh topic set (its own prefix, hence its own
router group and changelogs) and the same data (same seed): ``--ibans`` approved IBAN
states (half bound to one of the catalogue's connectors, half unbound) and ``--statements``
statements of about 1 KB. Each run:

1. starts the router processes (``python -m routing.router``, configured through their
   environment only, as a deployment would) and lets them load the states into their
   Tables (done when the ``iban-state`` changelog holds one record per IBAN); stops them;
2. produces every statement (a backlog, as after a deployment or an outage);
3. starts the same number of router processes again; they recover their Tables from the
   changelog and share the partitions; the rate is ``--statements`` divided by the time
   from the first commit of the routers' input group (``<prefix>.router``) to the
   commit of the last statement, polled every 0.1 s (so to within about 0.2 s). The
   router commits a statement only once its routed event is acknowledged. (Tansu's end
   offsets lag behind the last batch, so the output topics are not counted that way.)

Prints ONE JSON line: both rates and ``ratio`` (2 processes / 1). This machine has 2
cores, shared with the broker and this script: the ratio is bounded by that, not by the
partitioning (``--partitions`` caps the useful processes; 6 by default).
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
import random
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

REPO = Path(__file__).resolve().parents[1]


def make_states(n: int, rng: random.Random) -> list[tuple[bytes, bytes]]:
    connectors = list(default_catalogue())
    out = []
    for i in range(n):
        iban = iban_from_rib("30006", f"{i // 10**11 % 100_000:05d}", f"{i % 10**11:011d}")
        doc = {
            "schema": "iban.state/v1", "iban": iban, "cabinet_id": f"cab-{i % 5000}",
            "client_ref": f"client-{i}",
            "connector_id": rng.choice(connectors) if i % 2 == 0 else None,
            "connector_on_cabinet": True, "mandate_status": "approved", "version": 1,
            "updated_at": "2026-01-01T00:00:00+00:00",
        }
        out.append((iban.encode(), json.dumps(doc).encode()))
    return out


def make_statements(m: int, ibans: list[bytes], rng: random.Random) -> list[tuple[bytes, bytes]]:
    out = []
    for n in range(m):
        iban = rng.choice(ibans)
        content = rng.randbytes(560)
        doc = {
            "schema": "statement.received/v1", "statement_id": f"scale-{n:08d}",
            "iban": iban.decode(), "format": "cfonb120", "period_start": "2026-01-05",
            "period_end": "2026-01-05", "received_at": "2026-01-06T06:00:00+00:00",
            "content_b64": base64.b64encode(content).decode(), "source": "scale-bench",
            "content_sha256": hashlib.sha256(content).hexdigest(),
        }
        out.append((iban, json.dumps(doc).encode()))
    return out


async def produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = make_producer(ProducerParams(bootstrap, linger_ms=20, max_batch_size=512 * 1024))
    await producer.start()
    try:
        pending = []
        for key, value in records:
            pending.append(await producer.send(topic, value, key=key))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


class Offsets:
    """Sums of end offsets of some topics, read with one long-lived consumer."""

    def __init__(self, bootstrap: str) -> None:
        self._bootstrap = bootstrap
        self._consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)

    async def __aenter__(self) -> Offsets:
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def committed(self, group: str, topic: str, partitions: int) -> int:
        """The sum of ``group``'s committed offsets on ``topic`` (exact, unlike Tansu's
        end offsets): the router commits a statement once its routed event is acked."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, group_id=group,
                                    enable_auto_commit=False)
        await consumer.start()
        try:
            total = 0
            for p in range(partitions):
                offset = await consumer.committed(TopicPartition(topic, p))
                total += offset if offset is not None and offset > 0 else 0
            return total
        finally:
            await consumer.stop()

    async def total(self, topics: list[str], partitions: int) -> int:
        # Only existing topics: a metadata request for a missing one (a changelog faust
        # has not created yet) makes the broker auto-create it with the wrong count.
        if not set(topics) <= await self._consumer.topics():
            return 0
        parts = [TopicPartition(t, p) for t in topics for p in range(partitions)]
        self._consumer.assign(parts)
        deadline = asyncio.get_running_loop().time() + 30
        ends = await true_end_offsets(self._consumer, parts, deadline=deadline, what="the topics")
        return sum(ends.values())


async def start_routers(k: int, env: dict[str, str], logs: Path, tag: str
                        ) -> list[asyncio.subprocess.Process]:
    children = []
    for i in range(k):
        log = (logs / f"router-{tag}-{i}.log").open("wb")
        try:
            children.append(await asyncio.create_subprocess_exec(
                sys.executable, "-m", "routing.router", env=env, cwd=REPO,
                stdout=log, stderr=asyncio.subprocess.STDOUT))
        finally:
            log.close()  # the child holds its own descriptor
    return children


async def stop_routers(children: list[asyncio.subprocess.Process]) -> None:
    for child in children:
        if child.returncode is None:
            child.send_signal(signal.SIGTERM)
    for child in children:
        try:
            await asyncio.wait_for(child.wait(), 60)
        except TimeoutError:
            child.kill()
            await child.wait()


async def wait_total(offsets: Offsets, topics: list[str], partitions: int, n: int,
                     children: list[asyncio.subprocess.Process], within: float,
                     what: str, group: str | None = None) -> tuple[float | None, float]:
    """Poll until the topics hold ``n`` records (or, with ``group``, until the group has
    committed ``n`` records of ``topics[0]``); return (first seen > 0, reached n)."""
    first: float | None = None
    deadline = time.monotonic() + within
    while True:
        with contextlib.suppress(Exception):  # changelog topics appear with faust
            if group is None:
                total = await offsets.total(topics, partitions)
            else:
                total = await offsets.committed(group, topics[0], partitions)
            now = time.monotonic()
            if total > 0 and first is None:
                first = now
            if total >= n:
                return first, now
        if any(c.returncode is not None for c in children):
            raise SystemExit(f"a router process exited before {what}")
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def run(broker: EmbeddedBroker, k: int, args: argparse.Namespace, work: Path
              ) -> dict[str, Any]:
    bootstrap = broker.bootstrap_servers
    topics = Topics(prefix=f"scale{os.getpid()}x{k}", partitions=args.partitions)
    await ensure_topics(bootstrap, topics.specs(default_catalogue()))
    rng = random.Random(args.seed)  # the same data for every process count
    states = make_states(args.ibans, rng)
    statements = make_statements(args.statements, [key for key, _ in states], rng)
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "TOPIC_PREFIX": topics.prefix,
        "TOPIC_PARTITIONS": str(args.partitions), "TABLE_STORE": "memory://",
        "DATA_DIR": str(work / f"x{k}"), "LOG_LEVEL": "WARNING", "PYTHONPATH": str(REPO),
    }
    state_changelog = [changelog(topics.group("router"), "iban-state")]
    group = topics.group("router")  # the router's input offsets (routing.router.fencing)
    async with Offsets(bootstrap) as offsets:
        await produce(bootstrap, topics.iban_state, states)
        children = await start_routers(k, env, work, f"x{k}-load")
        try:
            await wait_total(offsets, state_changelog, args.partitions, args.ibans, children,
                             args.timeout, "the states to load")
        finally:
            await stop_routers(children)
        await produce(bootstrap, topics.received, statements)
        del statements
        started = time.monotonic()
        children = await start_routers(k, env, work, f"x{k}-route")
        try:
            first, last = await wait_total(offsets, [topics.received], args.partitions,
                                           args.statements, children, args.timeout,
                                           "every statement to be routed", group=group)
        finally:
            await stop_routers(children)
        committed = await offsets.committed(group, topics.received, args.partitions)
    assert first is not None
    seconds = last - first
    return {
        "per_s": round(args.statements / seconds) if seconds > 0 else None,
        "routing_s": round(seconds, 2),
        "start_to_first_routed_s": round(first - started, 1),
        "committed_statements": committed,
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="scale-out-"))
    broker = EmbeddedBroker(log_dir=work / "broker")
    await broker.astart()
    try:
        one = await run(broker, 1, args, work)
        two = await run(broker, 2, args, work)
    finally:
        await broker.astop()
        shutil.rmtree(work, ignore_errors=True)
    ratio = round(two["per_s"] / one["per_s"], 3) if one["per_s"] and two["per_s"] else None
    return {
        "benchmark": "scale_out",
        "one_process_per_s": one["per_s"],
        "two_processes_per_s": two["per_s"],
        "ratio": ratio,
        "one_process": one,
        "two_processes": two,
        "statements": args.statements,
        "ibans": args.ibans,
        "partitions": args.partitions,
        "router": "python -m routing.router (ROUTER_MODE default), TABLE_STORE=memory://",
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, "
                   f"Python {platform.python_version()}",
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ibans", type=int, default=100_000)
    parser.add_argument("--statements", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="seconds allowed for each wait (state load, routing)")
    parser.add_argument("--seed", type=int, default=7)
    return parser.parse_args(argv)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        print(json.dumps(asyncio.run(main(parse_args()))))
