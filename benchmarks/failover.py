"""Router failover: SIGKILL one of two routers sharing 1,000,000 IBAN states (issue 18, target 3).

    .venv/bin/python benchmarks/failover.py --broker kafka                 # every variant
    .venv/bin/python benchmarks/failover.py --broker kafka --variants rocksdb,rocksdb-session-10s
    .venv/bin/python benchmarks/failover.py --ibans 20000 --variants memory --cold-start no

A benchmark, never a timed test (DESIGN §8). It starts its own broker (``--broker``, as
the other benchmarks) and, for each variant of the router's group and Table settings
(:data:`VARIANTS`), on a fresh topic set (its own prefix, hence its own router group and
changelogs) with the same ``--ibans`` approved IBAN states (``scale_out.make_states``:
half bound to a connector, half unbound):

1. produces the states and starts two router processes (``python -m routing.router``,
   configured through their environment only, as a deployment would); they load the
   states into their Tables (done when the ``iban-state`` changelog holds one record per
   IBAN);
2. produces a steady trickle of statements (``--rate``/s, every tick one statement per
   partition) until both routers route (each logged a non-empty assignment, and a
   statement of every partition produced after that was routed), then lets them run
   ``--settle`` seconds more (the standby replicas catch up);
3. SIGKILLs the router that owns partition 0 and keeps producing. The failover time of
   each of the victim's partitions is the ``routing.decided_at`` of the first statement of
   that partition routed after the kill, minus the kill time (same clock: one machine).
   ``failover_s`` is the largest of them. ``survivor_stall_s`` is the longest gap, after
   the kill, between two routed statements of the survivor's own partitions: a
   rebalance pauses them too.

Then, once (``--cold-start``, on the last variant's topics): the survivor is stopped and
one router with an empty data directory is started, while the trickle goes on.
``cold_start_first_routed_s`` is the time from the process start to the
``decided_at`` of its first routed statement, and ``cold_start_all_partitions_s`` to one
routed statement of every partition (it recovers all the states from the changelogs).

Prints one JSON line per variant and one for the cold start. The routed events read are
those of the partner topics and the global file (every state is approved, so every
statement goes to one of them).

Variants set the router's environment. faust reads some of its own settings from the
environment (``TABLE_STANDBY_REPLICAS``, ``BROKER_SESSION_TIMEOUT``, ...) over the values
the router passes; the variants that are not the router's own settings use that, for the
measurement only (docs/performance.md, "Failover").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import random
import re
import shutil
import signal
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiokafka import AIOKafkaConsumer, TopicPartition
from brokers import add_broker_argument, broker_label, local_broker
from scale_out import (
    Offsets,
    make_statements,
    make_states,
    produce,
    start_routers,
    stop_routers,
    wait_total,
)

from config.catalogue import default_catalogue
from events.topics import Topics, changelog
from routing.broker import ProducerParams, ensure_topics, make_producer
from routing.broker.partitioner import default_partition

REPO = Path(__file__).resolve().parents[1]

SESSION_10S = {"BROKER_SESSION_TIMEOUT": "10", "BROKER_HEARTBEAT_INTERVAL": "1"}
ROCKSDB = {"TABLE_STORE": "rocksdb://"}
VARIANTS: dict[str, dict[str, str]] = {
    # The router as shipped: RouterTuning's 6 s session, one standby replica, memory://.
    "memory": {},
    # Before issue 18: a 10 s session (1 s heartbeat).
    "memory-session-10s": SESSION_10S,
    "memory-no-standby": {"TABLE_STANDBY_REPLICAS": "0"},
    # Static membership: each process gets its own group.instance.id (set per process).
    "memory-static": {"CONSUMER_GROUP_INSTANCE_ID": "{process}"},
    # The production store (docs/configuration.md).
    "rocksdb": ROCKSDB,
    "rocksdb-session-10s": {**ROCKSDB, **SESSION_10S},
    "rocksdb-no-standby": {**ROCKSDB, "TABLE_STANDBY_REPLICAS": "0"},
}

_ASSIGNED = re.compile(rb"router_partitions_assigned\s+partitions=\[([0-9, ]*)\]")
_ANSI = re.compile(rb"\x1b\[[0-9;]*m")


def last_assignment(log: Path) -> frozenset[int] | None:
    found = _ASSIGNED.findall(_ANSI.sub(b"", log.read_bytes()))
    if not found:
        return None
    return frozenset(int(p) for p in found[-1].split(b",") if p.strip())


class Trickle:
    """Statements at a steady rate, one per partition each tick, and when each was routed."""

    def __init__(self, bootstrap: str, topics: Topics, ibans: list[bytes], rate: float,
                 rng: random.Random) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.partitions = topics.partitions
        by_partition: dict[int, list[bytes]] = defaultdict(list)
        for iban in ibans:
            p = default_partition(iban, self.partitions)
            if len(by_partition[p]) < 200:
                by_partition[p].append(iban)
        self.by_partition = by_partition
        self.tick = self.partitions / rate
        self.rng = rng
        self.partition_of_id: dict[str, int] = {}
        self.routed: dict[str, float] = {}  # statement id -> decided_at (epoch seconds)
        self.sent = 0
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Trickle:
        self._tasks = [asyncio.create_task(self._produce()), asyncio.create_task(self._read())]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _produce(self) -> None:
        producer = make_producer(ProducerParams(self.bootstrap, linger_ms=0))
        await producer.start()
        try:
            n = 0
            next_tick = time.monotonic()
            while True:
                for p in range(self.partitions):
                    iban = self.rng.choice(self.by_partition[p])
                    ((key, value),) = make_statements(1, [iban], self.rng)
                    sid = f"fo-{n:08d}"
                    value = value.replace(b'"scale-00000000"', f'"{sid}"'.encode(), 1)
                    self.partition_of_id[sid] = p
                    await producer.send(self.topics.received, value, key=key, partition=p)
                    n += 1
                self.sent = n
                next_tick += self.tick
                await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
        finally:
            await producer.stop()

    async def _read(self) -> None:
        topics = self.topics
        names = [topics.global_file, *(topics.partner(c) for c in default_catalogue())]
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                    auto_offset_reset="earliest", fetch_max_wait_ms=50)
        await consumer.start()
        try:
            consumer.assign([TopicPartition(t, p) for t in names for p in range(self.partitions)])
            while True:
                batch = await consumer.getmany(timeout_ms=200)
                for records in batch.values():
                    for record in records:
                        doc = json.loads(record.value)
                        sid = doc.get("statement_id")
                        decided = doc.get("routing", {}).get("decided_at")
                        if sid and decided and sid not in self.routed:
                            self.routed[sid] = datetime.fromisoformat(decided).timestamp()
        finally:
            await consumer.stop()

    def routed_by_partition(self, since: float) -> dict[int, list[float]]:
        """Routing times (sorted) per partition of the statements routed at ``since`` or later."""
        out: dict[int, list[float]] = defaultdict(list)
        for sid, at in list(self.routed.items()):
            if at >= since:
                out[self.partition_of_id[sid]].append(at)
        for times in out.values():
            times.sort()
        return out

    async def wait_all_partitions(self, since: float, within: float, what: str,
                                  alive: list[asyncio.subprocess.Process]) -> dict[int, float]:
        """Wait until a statement of every partition was routed at ``since`` or later."""
        deadline = time.monotonic() + within
        while True:
            firsts = {p: times[0] for p, times in self.routed_by_partition(since).items()}
            if len(firsts) == self.partitions:
                return firsts
            if any(c.returncode is not None for c in alive):
                raise SystemExit(f"a router process exited before {what}")
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out waiting for {what}: routed partitions "
                                 f"{sorted(firsts)}")
            await asyncio.sleep(0.2)


def variant_env(base: dict[str, str], variant: str, process: str) -> dict[str, str]:
    env = dict(base)
    env.update({k: v.replace("{process}", process) for k, v in VARIANTS[variant].items()})
    return env


async def start_router(env: dict[str, str], logs: Path, name: str
                       ) -> asyncio.subprocess.Process:
    """One router process, logging to ``logs/router-<name>-0.log`` (``scale_out``'s naming)."""
    (child,) = await start_routers(1, env, logs, name)
    return child


def router_log(logs: Path, name: str) -> Path:
    return logs / f"router-{name}-0.log"


def rss_mib(pid: int) -> float | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return None


async def run_variant(bootstrap: str, variant: str, args: argparse.Namespace, work: Path,
                      last: bool) -> tuple[dict[str, Any], dict[str, Any] | None]:
    topics = Topics(prefix=f"fo{os.getpid()}{variant.replace('-', '')}",
                    partitions=args.partitions)
    await ensure_topics(bootstrap, topics.specs(default_catalogue()))
    rng = random.Random(args.seed)
    states = make_states(args.ibans, rng)
    ibans = [key for key, _ in states]
    started = time.monotonic()
    await produce(bootstrap, topics.iban_state, states)
    del states
    produced_s = time.monotonic() - started
    base = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "TOPIC_PREFIX": topics.prefix,
        "TOPIC_PARTITIONS": str(args.partitions), "TABLE_STORE": "memory://",
        "LOG_LEVEL": "INFO", "PYTHONPATH": str(REPO), "PATH": os.environ.get("PATH", ""),
    }
    logs = work / variant
    logs.mkdir(parents=True, exist_ok=True)
    children: list[asyncio.subprocess.Process] = []
    cold: dict[str, Any] | None = None
    async with Offsets(bootstrap) as offsets:
        try:
            for i in range(2):
                env = variant_env(base, variant, f"router-{i}")
                env["DATA_DIR"] = str(work / variant / f"data-{i}")
                children.append(await start_router(env, logs, str(i)))
            load_started = time.monotonic()
            state_changelog = [changelog(topics.group("router"), "iban-state")]
            await wait_total(offsets, state_changelog, args.partitions, args.ibans, children,
                             args.timeout, "the states to load")
            load_s = time.monotonic() - load_started
            async with Trickle(bootstrap, topics, ibans, args.rate, rng) as trickle:
                since = time.time()
                await trickle.wait_all_partitions(since, args.timeout, "both routers to route",
                                                  children)
                owners = await wait_split(logs, children, args.timeout)
                await asyncio.sleep(args.settle)
                victim = next(i for i, parts in enumerate(owners) if 0 in parts)
                survivor = 1 - victim
                rss_before = [rss_mib(c.pid) for c in children]
                killed_at = time.time()
                children[victim].send_signal(signal.SIGKILL)
                await children[victim].wait()
                mine = owners[victim]
                firsts = await trickle.wait_all_partitions(
                    killed_at, args.timeout, "the survivor to route every partition",
                    [children[survivor]])
                await asyncio.sleep(2)  # gaps are measured up to a little after the takeover
                after = trickle.routed_by_partition(killed_at)
                per_partition = {p: round(firsts[p] - killed_at, 2) for p in sorted(mine)}
                stall = 0.0
                for p in owners[survivor]:
                    times = [killed_at, *after.get(p, [])]
                    stall = max([stall, *(b - a for a, b in itertools.pairwise(times))])
                result = {
                    "benchmark": "failover", "variant": variant, "env": VARIANTS[variant],
                    "failover_s": max(per_partition.values()),
                    "failover_by_partition_s": per_partition,
                    "survivor_stall_s": round(stall, 2),
                    "victim_partitions": sorted(mine),
                    "survivor_partitions": sorted(owners[survivor]),
                    "rss_mib_before_kill": rss_before,
                    "survivor_rss_mib_after": rss_mib(children[survivor].pid),
                    "target_s": 10.0, "meets_target": max(per_partition.values()) < 10.0,
                    "state_produce_s": round(produced_s, 1), "state_load_s": round(load_s, 1),
                    "settle_s": args.settle, "rate_per_s": args.rate,
                }
                if last and args.cold_start == "yes":
                    await stop_routers([children[survivor]])
                    cold = await cold_start(base, work, trickle, children, args)
        finally:
            await stop_routers(children)
    return result, cold


async def wait_split(logs: Path, children: list[asyncio.subprocess.Process], within: float
                     ) -> list[frozenset[int]]:
    """Both routers' last assignments, once they are non-empty and disjoint."""
    deadline = time.monotonic() + within
    while True:
        owners = [last_assignment(router_log(logs, str(i))) or frozenset() for i in range(2)]
        if all(owners) and not owners[0] & owners[1]:
            return owners
        if any(c.returncode is not None for c in children):
            raise SystemExit("a router process exited before the split")
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for the split: {owners}")
        await asyncio.sleep(0.2)


async def cold_start(base: dict[str, str], work: Path, trickle: Trickle,
                     children: list[asyncio.subprocess.Process], args: argparse.Namespace
                     ) -> dict[str, Any]:
    """One router with an empty data directory: start to its first routed statement."""
    env = dict(base)
    env.update({k: v for k, v in VARIANTS[args.variants.split(",")[-1]].items()
                if k == "TABLE_STORE"})
    env["DATA_DIR"] = str(work / "cold")
    await asyncio.sleep(1)  # nothing of the stopped survivor is still in flight
    started = time.time()
    child = await start_router(env, work, "cold")
    children.append(child)
    firsts = await trickle.wait_all_partitions(started, args.timeout, "the cold router", [child])
    return {
        "benchmark": "failover_cold_start", "ibans": args.ibans,
        "cold_start_first_routed_s": round(min(firsts.values()) - started, 2),
        "cold_start_all_partitions_s": round(max(firsts.values()) - started, 2),
        "rss_mib": rss_mib(child.pid), "store": env["TABLE_STORE"],
    }


async def main(args: argparse.Namespace) -> None:
    variants = args.variants.split(",")
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variants {sorted(unknown)}; known: {sorted(VARIANTS)}")
    work = Path(tempfile.mkdtemp(prefix="failover-"))
    broker = local_broker(args.broker, work / "broker")
    await broker.astart()
    common = {
        "ibans": args.ibans, "partitions": args.partitions, "broker": broker_label(args.broker),
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, "
                   f"Python {platform.python_version()}",
    }
    try:
        for n, variant in enumerate(variants):
            result, cold = await run_variant(broker.bootstrap_servers, variant, args, work,
                                             last=n == len(variants) - 1)
            print(json.dumps({**result, **common}), flush=True)
            if cold is not None:
                print(json.dumps({**cold, **common}), flush=True)
    finally:
        await broker.astop()
        if args.keep:
            print(f"logs kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_broker_argument(parser)
    parser.add_argument("--ibans", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated, of: {', '.join(VARIANTS)}")
    parser.add_argument("--rate", type=float, default=60.0,
                        help="statements per second of the trickle (spread over partitions)")
    parser.add_argument("--settle", type=float, default=20.0,
                        help="seconds both routers route before the kill (the standby "
                             "replicas catch up: 90 s for 1,000,000 states on Kafka)")
    parser.add_argument("--cold-start", choices=("yes", "no"), default="yes")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds allowed for each wait")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the logs and data")
    return parser.parse_args(argv)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(parse_args()))
