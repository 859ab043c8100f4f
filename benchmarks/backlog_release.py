"""Releasing a backlog: one IBAN's held statements released while its partition keeps routing.

    .venv/bin/python benchmarks/backlog_release.py                  # Tansu, 10,000 held
    .venv/bin/python benchmarks/backlog_release.py --broker kafka
    .venv/bin/python benchmarks/backlog_release.py --held 2000 --before 5 --after 3

A benchmark, never a timed test (DESIGN §8). One process starts its own broker and one
router (batch pump, in process). One IBAN has a pending mandate (FAQ: its statements are
held until the mandate is approved, ``mandate_pending``); ``--held`` statements of ~1 KB
are produced for it and held. Then ``--neighbours`` other IBANs *of the same partition*
(active, unbound: they go to the global file) receive statements at ``--rate`` per second,
for ``--before`` seconds, then the mandate is approved: the ``iban.state/v1`` snapshot
with ``mandate_status: approved`` and the next version, which is what the outbox relay
publishes when a cabinet approves a mandate (``routing.services.relay``). The neighbours
keep receiving statements until ``--after`` seconds after the last released one.

It measures, from the routed topics read back at the end:

* the release: from the approval's send to the last released statement's record (its
  timestamp is set when the router issues it), ``release_per_s`` = held / that time;
  ``in_order``: the released statements appear on the partner topic in arrival order,
  none missing, none twice; ``held_forgotten_s``: to the last tombstone of the held
  Table's changelog, the end of the release's work;
* the routing latency of the neighbours' statements, from their send to the issue of
  their routed record: p50/p95/p99/max for those sent *before* the approval, *during*
  the release (sent between the approval and the last tombstone) and *after*.

Prints ONE JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from brokers import add_broker_argument, broker_label, local_broker
from latency_stats import percentiles
from router_throughput import produce, router_for

from config.catalogue import default_catalogue
from events.topics import Topics, changelog
from routing.broker import ProducerParams, ensure_topics, make_producer, read_topic
from routing.broker.partitioner import default_partition
from routing.entrypoints.runtime import tune_gc
from routing.router import RouterApp
from tests.unit.router.factories import make_iban, state, statement

CONNECTOR = "acd"
CONTENT = b"0" * 700  # a statement.received value of ~1.1 KB, as in router_throughput


def same_partition_ibans(count: int, partitions: int) -> tuple[str, list[str]]:
    """The pending IBAN and ``count`` other IBANs whose key lands on its partition."""
    pending = make_iban(1)
    partition = default_partition(pending.encode(), partitions)
    others = (make_iban(n) for n in range(2, 10**7))
    return pending, [
        iban for iban, _ in zip(
            (i for i in others if default_partition(i.encode(), partitions) == partition),
            range(count),
            strict=False,
        )
    ]


async def wait_until(predicate: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {within:g}s waiting for {what}")
        await asyncio.sleep(0.05)


class Neighbours:
    """Sends statements to the neighbour IBANs at a steady rate; remembers each send time."""

    def __init__(self, bootstrap: str, topic: str, ibans: list[str], rate: float) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.ibans = ibans
        self.rate = rate
        self.sent_at: dict[str, float] = {}
        self.stop = asyncio.Event()

    async def run(self) -> None:
        producer = make_producer(ProducerParams(self.bootstrap, linger_ms=0))
        await producer.start()
        try:
            started = time.time()
            n = 0
            while not self.stop.is_set():
                due = started + n / self.rate
                delay = due - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                iban = self.ibans[n % len(self.ibans)]
                sid = f"n{n:08d}"
                value = statement(sid, iban, content=CONTENT)
                self.sent_at[sid] = time.time()
                await producer.send(self.topic, value, key=iban.encode())
                n += 1
            await producer.flush()
        finally:
            await producer.stop()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    tune_gc()
    load_start = os.getloadavg()
    data_dir = Path(tempfile.mkdtemp(prefix="backlog-release-"))
    broker = local_broker(args.broker, data_dir / "broker")
    await broker.astart()
    router: RouterApp | None = None
    try:
        bootstrap = broker.bootstrap_servers
        topics = Topics(prefix=f"backlog{os.getpid()}", partitions=args.partitions)
        await ensure_topics(bootstrap, topics.specs(default_catalogue()))
        pending, others = same_partition_ibans(args.neighbours, args.partitions)
        await produce(bootstrap, topics.iban_state, [
            (pending.encode(), state(pending, connector_id=CONNECTOR, mandate_status="pending")),
            *((iban.encode(), state(iban)) for iban in others),
        ])
        await produce(bootstrap, topics.received, [
            (pending.encode(), statement(f"p{n:06d}", pending, content=CONTENT))
            for n in range(args.held)
        ])
        router = router_for(bootstrap, topics, data_dir, outcomes=True)
        core = router.core
        if args.release_chunk is not None:
            core.release_chunk = args.release_chunk
        await router.start()
        await wait_until(lambda: core.held_by_reason().get("mandate_pending") == args.held,
                         600, f"{args.held} statements held")

        neighbours = Neighbours(bootstrap, topics.received, others, args.rate)
        sending = asyncio.create_task(neighbours.run())
        await asyncio.sleep(args.before)
        approval = state(pending, version=2, connector_id=CONNECTOR)
        producer = make_producer(ProducerParams(bootstrap, linger_ms=0))
        await producer.start()
        try:
            approved_at = time.time()
            await producer.send_and_wait(topics.iban_state, approval, key=pending.encode())
        finally:
            await producer.stop()
        await wait_until(lambda: core.stats["released"] >= args.held, 600, "the release")
        await asyncio.sleep(args.after)
        neighbours.stop.set()
        await sending
        sent = len(neighbours.sent_at)
        await wait_until(lambda: core.stats["global-file"] >= sent, 120, "the neighbours routed")
        stats = dict(core.stats)
        pump = router.pump
        batches = pump.batches if pump is not None else None
        await router.stop()
        router = None

        released = [r for r in await read_topic(bootstrap, topics.partner(CONNECTOR), timeout=120)
                    if json.loads(r.value)["statement_id"].startswith("p")]
        routed = await read_topic(bootstrap, topics.global_file, timeout=120)
        held_changelog = await read_topic(
            bootstrap, changelog(topics.group("router"), "held"), timeout=120)
    finally:
        if router is not None:
            await router.stop()
        broker.stop()

    ids = [json.loads(r.value)["statement_id"] for r in released]
    expected = [f"p{n:06d}" for n in range(args.held)]
    first_released = min(r.timestamp for r in released) / 1000
    last_released = max(r.timestamp for r in released) / 1000
    # The release ends with the last tombstone of the held Table (issued once the released
    # statements are acknowledged): until then the router is still busy with it.
    forgotten = max(r.timestamp for r in held_changelog if r.value is None) / 1000
    windows: dict[str, list[float]] = {"before": [], "during": [], "after": []}
    seen: set[str] = set()
    for record in routed:
        sid = json.loads(record.value)["statement_id"]
        if sid in seen:
            continue
        seen.add(sid)
        sent_at = neighbours.sent_at[sid]
        latency = record.timestamp / 1000 - sent_at
        window = ("before" if sent_at < approved_at
                  else "during" if sent_at <= forgotten else "after")
        windows[window].append(latency)
    release_s = last_released - approved_at
    return {
        "benchmark": "backlog_release",
        "broker": broker_label(args.broker),
        "held": args.held,
        "released": len(ids),
        "in_order": ids == expected,
        "release_s": round(release_s, 2),
        "release_per_s": round(args.held / release_s),
        "first_released_after_ms": round((first_released - approved_at) * 1000, 1),
        "held_forgotten_s": round(forgotten - approved_at, 2),
        "neighbours": args.neighbours,
        "neighbour_rate_per_s": args.rate,
        "neighbour_statements": len(neighbours.sent_at),
        "neighbours_routed": len(seen),
        "neighbour_latency_ms": {name: percentiles(values) for name, values in windows.items()},
        "release_chunk": getattr(core, "release_chunk", None),
        "router_batches": batches,
        "routed": {k: v for k, v in stats.items() if k in
                   ("partner", "global-file", "held", "invalid", "released")},
        "partitions": args.partitions,
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
        "loadavg_start": [round(x, 2) for x in load_start],
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, Python {platform.python_version()}",
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_broker_argument(parser)
    parser.add_argument("--held", type=int, default=10_000,
                        help="statements held for the pending IBAN, then released")
    parser.add_argument("--neighbours", type=int, default=50,
                        help="other IBANs of the same partition, receiving statements")
    parser.add_argument("--rate", type=float, default=200.0,
                        help="statements/s sent to the neighbours, all along")
    parser.add_argument("--before", type=float, default=10.0,
                        help="seconds of neighbour traffic before the approval")
    parser.add_argument("--after", type=float, default=5.0,
                        help="seconds of neighbour traffic after the last released statement")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--release-chunk", type=int, default=None,
                        help="held statements released per routing step (default: the "
                        "router's RELEASE_CHUNK)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        print(json.dumps(asyncio.run(main(parse_args()))))
