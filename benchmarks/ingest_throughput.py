"""Ingest throughput: one large CFONB 120 file, parsed, built and published to Tansu.

    .venv/bin/python benchmarks/ingest_throughput.py            # a ~100 MB file
    .venv/bin/python benchmarks/ingest_throughput.py --mb 10    # a smaller one

A benchmark, never a timed test (DESIGN §8). It writes a deterministic CFONB 120 file of
about ``--mb`` megabytes (``--accounts`` accounts, one statement per account and day, 0
to 8 movements each, some with ``05`` complements), starts its own embedded broker,
creates the topics, and times ``publish_file`` on it: the same code path as
``statement-router ingest``, producer settings included. The file is generated with a
small writer of its own (the layout of ``tests/unit/ingest/cfonb_writer.py``), so the
parser is measured against input it did not write.

Prints ONE JSON line:

* ``seconds``: ``publish_file`` from start to the last acknowledgement;
* ``parse_seconds``: reading, parsing, building and validating every event and
  serialising it (all of it happens before the first send: all-or-nothing);
* ``publish_seconds``: from the first send to the last acknowledgement;
* ``mb_per_s`` and ``statements_per_s``: over ``seconds``;
* ``peak_rss_mb``: the process's peak resident memory, because a file is held whole.

The statements' count on the topic is checked against the report before printing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters.ingest.producer import INGEST_BATCH_BYTES, publish_file
from events.topics import Topics
from routing.broker import EmbeddedBroker, ProducerParams, end_offsets, ensure_topics, make_producer
from routing.observability.logs import configure_logging

_POSITIVE = "{ABCDEFGHI"
_NEGATIVE = "}JKLMNOPQR"
_LABELS = (
    "VIR SEPA RECU /DE CLIENT",
    "PRLV SEPA EDF",
    "CB CARBURANT STATION",
    "REMISE CHEQUES",
    "COMMISSION TENUE DE COMPTE",
    "VIR SEPA EMIS /A FOURNISSEUR",
    "PRLV SEPA URSSAF",
)


def _amount(units: int) -> str:
    digits = f"{abs(units):014d}"
    return digits[:13] + (_NEGATIVE if units < 0 else _POSITIVE)[int(digits[13])]


def _ddmmyy(day: date) -> str:
    return f"{day.day:02d}{day.month:02d}{day.year % 100:02d}"


def _statement(
    account: tuple[str, str, str], old: date, new: date, opening: int, rng: random.Random
) -> tuple[list[str], int]:
    bank, guichet, number = account
    head = f"{bank}    {guichet}EUR2 {number}  "
    move_head = f"{bank}0510{guichet}EUR2 {number}05"
    records = [f"01{head}{_ddmmyy(old)}{' ' * 50}{_amount(opening)}{' ' * 16}"]
    balance = opening
    for n in range(rng.randint(0, 8)):
        units = rng.randint(-250_000, 250_000)
        balance += units
        label = f"{rng.choice(_LABELS)} {n:02d}"[:31]
        records.append(
            f"04{move_head}{_ddmmyy(new)}  {_ddmmyy(new)}{label:<31}{' ' * 11}"
            f"{_amount(units)}{f'REF{rng.randrange(10**12):012d}':<16}"
        )
        if rng.random() < 0.3:
            text = f"FACTURE {rng.randrange(10**6):06d} DU {new.isoformat()}"
            records.append(f"05{move_head}{_ddmmyy(new)}     LIB{text:<70}  ")
    records.append(f"07{head}{_ddmmyy(new)}{' ' * 50}{_amount(balance)}{' ' * 16}")
    return records, balance


def generate(target_bytes: int, accounts: int, seed: int = 42) -> bytes:
    """A CFONB 120 file of at least ``target_bytes``: every account, day after day."""
    rng = random.Random(seed)
    ribs = [("30006", f"{1 + i // 100_000:05d}", f"{i:011d}") for i in range(accounts)]
    balances = [rng.randint(-100_000, 5_000_000) for _ in ribs]
    lines: list[str] = []
    size = 0
    day = date(2025, 1, 2)
    while size < target_bytes:
        for index, rib in enumerate(ribs):
            records, balances[index] = _statement(
                rib, day - timedelta(days=1), day, balances[index], rng
            )
            for record in records:
                assert len(record) == 120, record
            lines.extend(records)
            size += 122 * len(records)
            if size >= target_bytes:
                break
        day += timedelta(days=1)
    return ("\r\n".join(lines) + "\r\n").encode("latin-1")


async def bench(path: Path, partitions: int) -> dict[str, object]:
    async with EmbeddedBroker() as broker:
        bootstrap = broker.bootstrap_servers
        topics = Topics(prefix="bench-ingest", partitions=partitions)
        await ensure_topics(bootstrap, topics.specs([]))
        params = ProducerParams(
            bootstrap, client_id="bench-ingest", max_batch_size=INGEST_BATCH_BYTES
        )  # what `statement-router ingest` uses (adapters.ingest.producer.producer_params)
        producer = make_producer(params)
        await producer.start()
        try:
            started = time.perf_counter()
            report = await publish_file(producer, topics, path, source="benchmark")
            seconds = time.perf_counter() - started
        finally:
            await producer.stop()
        assert report.ok, report.refusal
        on_topic = sum((await end_offsets(bootstrap, [topics.received])).values())
        assert on_topic == len(report.statements), (on_topic, len(report.statements))
    file_mb = report.size / 1_000_000
    statements = len(report.statements)
    return {
        "benchmark": "ingest_throughput",
        "file_mb": round(file_mb, 1),
        "statements": statements,
        "seconds": round(seconds, 2),
        "mb_per_s": round(file_mb / seconds, 2),
        "statements_per_s": round(statements / seconds),
        "parse_seconds": round(report.prepare_seconds, 2),
        "publish_seconds": round(report.publish_seconds, 2),
        "accounts": len({s.iban for s in report.statements}),
        "partitions": partitions,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--mb", type=float, default=100.0, help="file size in MB (10^6 bytes)")
    parser.add_argument("--accounts", type=int, default=20_000, help="accounts in the file")
    parser.add_argument("--partitions", type=int, default=6, help="statements.received partitions")
    args = parser.parse_args()
    configure_logging("console", "WARNING")  # logs on stderr: stdout is the JSON line
    data = generate(int(args.mb * 1_000_000), args.accounts)
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as folder:
        path = Path(folder) / "bench-cfonb120.txt"
        path.write_bytes(data)
        del data
        result = asyncio.run(bench(path, args.partitions))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
