"""The embedded broker alone: produce → consume latency at a fixed rate, over time.

    .venv/bin/python benchmarks/broker_latency.py                 # 1,000 records/s, 90 s
    .venv/bin/python benchmarks/broker_latency.py --rate 500 --duration 60

A benchmark, never a timed test. No statement-router code runs on the path: one aiokafka
producer sends ``--rate`` records/s of ~1.4 KB (the size of a routed statement) to a
6-partition topic of a fresh embedded Tansu broker, and one aiokafka consumer tails it
with the pipeline's fetch wait (``KAFKA_FETCH_MAX_WAIT_MS``, 20 ms). Each record carries
its send time; the consumer's receive time minus it is the broker hop's latency.

It prints one JSON line per ``--window`` seconds (p50/p99 of that window, the broker
process's CPU share) and a last line with the whole run. It exists to separate the
broker's share of ``end_to_end_latency.py`` from the pipeline's: on this machine the
hop's latency grows with the data the in-memory Tansu holds (docs/performance.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiokafka import AIOKafkaConsumer
from brokers import add_broker_argument, broker_label, local_broker
from latency_stats import percentiles

from events.topics import TopicSpec
from routing.broker import ProducerParams, ensure_topics, make_producer

TOPIC = "broker-latency"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def main(args: argparse.Namespace) -> None:
    broker = local_broker(args.broker, Path(tempfile.mkdtemp(prefix="broker-latency-")))
    await broker.astart()
    try:
        bootstrap = broker.bootstrap_servers
        pid = broker.pid
        assert pid is not None
        await ensure_topics(bootstrap, [TopicSpec(TOPIC, 6, "delete", "n", "-", "bench")])
        producer = make_producer(
            ProducerParams(bootstrap, client_id="broker-latency", linger_ms=args.linger_ms)
        )
        consumer = AIOKafkaConsumer(TOPIC, bootstrap_servers=bootstrap, group_id=TOPIC,
                                    fetch_max_wait_ms=args.fetch_max_wait_ms,
                                    auto_offset_reset="earliest")
        await producer.start()
        await consumer.start()
        window: list[float] = []
        everything: list[float] = []
        stopping = asyncio.Event()

        async def tail() -> None:
            while not stopping.is_set():
                batches = await consumer.getmany(timeout_ms=200)
                now = time.time()
                for records in batches.values():
                    for record in records:
                        assert record.value is not None
                        window.append(now - float(record.value[:20]))

        tailing = asyncio.ensure_future(tail())
        padding = b"x" * 1400
        started = time.monotonic()
        window_start, cpu_start = started, cpu_seconds(pid)
        sent = 0
        try:
            while time.monotonic() - started < args.duration:
                delay = started + sent / args.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                stamp = f"{time.time():<20.6f}".encode()
                await producer.send(TOPIC, stamp + padding, key=str(sent % 5000).encode())
                sent += 1
                if time.monotonic() - window_start >= args.window:
                    now, cpu = time.monotonic(), cpu_seconds(pid)
                    print(json.dumps({
                        "benchmark": "broker_latency", "at_s": round(now - started),
                        "records_held": sent,
                        "broker_cpu_pct": round(100 * (cpu - cpu_start) / (now - window_start),
                                                1),
                        **percentiles(window)}), flush=True)
                    everything += window
                    window.clear()
                    window_start, cpu_start = now, cpu
        finally:
            stopping.set()
            await tailing
            everything += window
            await consumer.stop()
            await producer.stop()
        print(json.dumps({
            "benchmark": "broker_latency", "rate_per_s": args.rate,
            "duration_s": args.duration, "fetch_max_wait_ms": args.fetch_max_wait_ms,
            "linger_ms": args.linger_ms,
            "broker": broker_label(args.broker), **percentiles(everything),
            "machine": f"{platform.machine()} {os.cpu_count()} cpu, "
                       f"Python {platform.python_version()}"}))
    finally:
        await broker.astop()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_broker_argument(parser)
    parser.add_argument("--rate", type=float, default=1000.0, help="records per second")
    parser.add_argument("--duration", type=float, default=90.0, help="seconds")
    parser.add_argument("--window", type=float, default=10.0, help="seconds per line")
    parser.add_argument("--fetch-max-wait-ms", type=int, default=20)
    parser.add_argument("--linger-ms", type=int, default=5,
                        help="the producer's linger (the pipeline's default: 5)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
