"""Router processes for the end-to-end tests: start, stop, seed, and read what they wrote.

A router runs as ``python -m routing.router`` (from the repository root) against the
session broker, its stdout and stderr appended to a log file. ``stop_process`` asks it to
stop (SIGTERM) and kills it if it has not within the timeout: call it in ``finally``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path

from aiokafka import AIOKafkaProducer

from events.topics import Topics
from routing.broker import EmbeddedBroker, read_topic
from tests.unit.router.factories import state

ROOT = Path(__file__).resolve().parents[2]

# Never inherited from the caller: the router must not reach for a state database.
DROPPED = frozenset({"DATABASE_URL", "TABLE_STORE"})

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def router_env(
    broker: EmbeddedBroker,
    topics: Topics,
    data_dir: Path,
    *,
    dropped: Collection[str] = DROPPED,
    **settings: str,
) -> dict[str, str]:
    """The caller's environment minus ``dropped``, set for ``topics`` on ``broker``, with
    ``data_dir``, ``LOG_LEVEL=INFO`` and any further ``settings``."""
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers,
        TOPIC_PREFIX=topics.prefix,
        TOPIC_PARTITIONS=str(topics.partitions),
        DATA_DIR=str(data_dir),
        LOG_LEVEL="INFO",
    )
    env.update(settings)
    return env


def start_router(
    broker: EmbeddedBroker,
    topics: Topics,
    data_dir: Path,
    log: Path,
    *,
    dropped: Collection[str] = DROPPED,
    **settings: str,
) -> subprocess.Popen[bytes]:
    """A router process (see ``router_env``), its output appended to ``log``."""
    env = router_env(broker, topics, data_dir, dropped=dropped, **settings)
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "routing.router"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )


def stop_process(
    proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 60
) -> None:
    """Send ``sig`` to a running process and wait; SIGKILL it after ``timeout`` seconds."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def log_text(log: Path, start: int = 0) -> str:
    """A process log from byte ``start``, without ANSI colour codes."""
    return _ANSI.sub("", log.read_bytes()[start:].decode(errors="replace"))


def exited(proc: subprocess.Popen[bytes], log: Path) -> None:
    """``eventually``'s guard: fail at once, with the log's tail, once the router has died."""
    assert proc.poll() is None, (
        f"the router exited with code {proc.returncode}:\n{log_text(log)[-3000:]}"
    )


def tails(*logs: Path) -> str:
    """The end of each log, for a failure message."""
    return "\n".join(f"--- {log.name} ---\n{log_text(log)[-2500:]}" for log in logs)


async def produce_states(
    producer: AIOKafkaProducer,
    topics: Topics,
    *,
    bound: Iterable[str],
    unbound: Iterable[str],
    pending: Iterable[str],
) -> None:
    """``iban.state`` (version 1) of IBANs bound to ``acd``, unbound ones, and ones bound
    to ``acd`` whose mandate is pending; flushed."""
    for iban in bound:
        await producer.send(topics.iban_state, state(iban, connector_id="acd"), key=iban.encode())
    for iban in unbound:
        await producer.send(topics.iban_state, state(iban), key=iban.encode())
    for iban in pending:
        await producer.send(
            topics.iban_state,
            state(iban, connector_id="acd", mandate_status="pending"),
            key=iban.encode(),
        )
    await producer.flush()


async def approve(producer: AIOKafkaProducer, topics: Topics, pending: Iterable[str]) -> None:
    """Version 2 of the pending IBANs' states: bound to ``acd``, mandate approved; flushed."""
    for iban in pending:
        await producer.send(
            topics.iban_state, state(iban, version=2, connector_id="acd"), key=iban.encode()
        )
    await producer.flush()


async def final_copies(
    bootstrap: str, topics: Topics, *, isolation_level: str = "read_uncommitted"
) -> dict[str, list[tuple[str, str]]]:
    """Every copy of every statement in a final destination, minus ``decided_at``
    (``read_committed``: only those of committed transactions)."""
    copies: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for topic in (topics.partner("acd"), topics.global_file):
        records = await read_topic(bootstrap, topic, timeout=60, isolation_level=isolation_level)
        for record in records:
            doc = json.loads(record.value)
            doc["routing"].pop("decided_at")
            copies[doc["statement_id"]].append((topic, json.dumps(doc, sort_keys=True)))
    return copies


def duplicate_count(copies: Mapping[str, list[tuple[str, str]]]) -> int:
    """How many copies there are beyond the first of each statement; fails unless all the
    copies of a statement are in one topic and identical, ``decided_at`` and
    ``released_from_held`` aside.

    Why the flag may differ: a statement held before a crash, whose input offset was not
    committed, is released by the restarted router when its approval comes first (flag set)
    and routed again from the re-read input (no flag, the IBAN is routable by then). Both
    copies have the same destination, content and state version.
    """
    duplicates = 0
    for sid, found in copies.items():
        topics_seen = {topic for topic, _ in found}
        assert len(topics_seen) == 1, f"{sid} went to {topics_seen}"
        first = _without_release_flag(found[0][1])
        for _, other in found[1:]:
            assert _without_release_flag(other) == first, (
                f"{sid}: duplicate copies differ:\n{found[0][1]}\n{other}")
        duplicates += len(found) - 1
    return duplicates


def _without_release_flag(copy: str) -> dict[str, object]:
    doc: dict[str, object] = json.loads(copy)
    doc.pop("released_from_held", None)
    return doc
