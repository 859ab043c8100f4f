"""What operators read from the CLI: ``topics tail`` and ``trace --operator``."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from events.topics import Topics
from routing.broker import EmbeddedBroker, ProducerParams, make_producer
from routing.domain.iban import mask_iban
from routing.ports import OutcomeRecord
from routing.store.ledger import SqlDeliveryLedger
from routing.store.sql import SqlStateStore
from tests.e2e.up_process import SCRIPT, cli, ok, up_environment
from tests.eventually import eventually

A = "FR7630006000011234567890189"
B = "FR7630004008250001234567886"
UNKNOWN = "FR7611315000010800123456714"
EXIT_NOT_FOUND = 5


@pytest.fixture
def env(kafka_broker: EmbeddedBroker, topics: Topics, tmp_path: Path) -> dict[str, str]:
    return up_environment(
        tmp_path / "var",
        KAFKA_BOOTSTRAP_SERVERS=kafka_broker.bootstrap_servers,
        TOPIC_PREFIX=topics.prefix,
        TOPIC_PARTITIONS=str(topics.partitions),
    )


async def produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = make_producer(ProducerParams(bootstrap, client_id="test"))
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


def held(iban: str, statement_id: str) -> tuple[bytes, bytes]:
    return iban.encode(), json.dumps({"statement_id": statement_id, "iban": iban}).encode()


async def test_topics_tail_prints_masked_records_filtered_by_key(
    kafka_broker: EmbeddedBroker, topics: Topics, env: dict[str, str]
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    await produce(bootstrap, topics.held, [held(A, "s-a"), held(B, "s-b")])
    everything = ok(await asyncio.to_thread(cli, env, "topics", "tail", "statements.held"))
    assert len(everything.splitlines()) == 2
    assert A not in everything and B not in everything
    assert mask_iban(A) in everything
    only_a = ok(await asyncio.to_thread(cli, env, "topics", "tail", topics.held, "--key", A))
    (line,) = only_a.splitlines()
    assert '"s-a"' in line

    with subprocess.Popen(  # noqa: ASYNC220 - a child we stop ourselves
        [str(SCRIPT), "topics", "tail", "statements.held", "-f", "--key", B],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as follower:
        lines: list[str] = []
        reader = asyncio.ensure_future(asyncio.to_thread(_read_lines, follower, lines))
        try:
            await eventually(
                lambda: _now(lines),
                "the old record",
                done=lambda seen: len(seen) == 1,
            )
            await produce(bootstrap, topics.held, [held(A, "s-a2"), held(B, "s-b2")])
            await eventually(
                lambda: _now(lines),
                "the new record",
                done=lambda seen: len(seen) == 2,
            )
            assert '"s-b2"' in lines[1]
            follower.send_signal(signal.SIGINT)
            assert await asyncio.to_thread(follower.wait, 30) == 0
        finally:
            if follower.poll() is None:
                follower.kill()
            await reader


def _read_lines(proc: subprocess.Popen[str], lines: list[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)


async def _now(lines: list[str]) -> list[str]:
    return list(lines)


async def test_operators_trace_held_unknown_and_invalid_statements(
    kafka_broker: EmbeddedBroker, topics: Topics, env: dict[str, str], tmp_path: Path
) -> None:
    ok(await asyncio.to_thread(cli, env, "cabinet", "create", "cab-o", "--name", "O"))
    store = SqlStateStore.from_url(
        f"sqlite+aiosqlite:///{tmp_path / 'var' / 'statement-router.db'}"
    )
    try:
        at = datetime(2026, 3, 1, 12, tzinfo=UTC)
        await SqlDeliveryLedger(store.engine).record(
            [OutcomeRecord("mt940-held-unknown-1", "held", at, iban=UNKNOWN, detail="unknown_iban")]
        )
    finally:
        await store.close()
    invalid = {
        "schema": "statement.invalid/v1",
        "reason": "iban: Invalid checksum digits",
        "raw_b64": "",
        "statement_id": "demo-bad-iban",
        "detected_at": at.isoformat(),
        "detected_by": "router",
    }
    await produce(
        kafka_broker.bootstrap_servers, topics.invalid, [(b"", json.dumps(invalid).encode())]
    )

    held_trace = await asyncio.to_thread(cli, env, "trace", "mt940-held-unk", "--operator")
    assert "mt940-held-unknown-1" in ok(held_trace) and "held" in held_trace.stdout
    assert "cabinet=(none)" in held_trace.stdout  # why no user can trace it
    invalid_trace = ok(await asyncio.to_thread(cli, env, "trace", "demo-bad", "--operator"))
    assert "demo-bad-iban" in invalid_trace and "Invalid checksum digits" in invalid_trace
    missing = await asyncio.to_thread(cli, env, "trace", "nothing-like-it", "--operator")
    assert missing.returncode == EXIT_NOT_FOUND, missing.stderr


async def test_monitor_filters_by_topic_and_group(topics: Topics, env: dict[str, str]) -> None:
    result = await asyncio.to_thread(
        cli,
        env,
        "monitor",
        "--interval",
        "0",
        "--json",
        "--topic",
        "statements.held",
        "--group",
        "router",
    )
    document = json.loads(ok(result))
    assert [t["topic"] for t in document["topics"]] == [topics.held]
    assert all(g["role"] == "router" for g in document["groups"])
