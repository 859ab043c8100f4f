"""``statement-router ingest``, run as the installed console script against the session broker.

The subprocess gets the broker through ``KAFKA_BOOTSTRAP_SERVERS`` (or ``--bootstrap``) and
this test's topics through ``TOPIC_PREFIX``/``TOPIC_PARTITIONS``; the topics are pre-created
by the ``topics`` fixture, as ``statement-router topics create`` would.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from events.schemas import StatementReceived
from events.topics import Topics
from routing.broker import EmbeddedBroker, read_topic
from routing.domain.iban import mask_iban
from tests.eventually import eventually

SAMPLES = Path(__file__).resolve().parents[2] / "examples" / "bank-files"
SCRIPT = Path(sys.executable).with_name("statement-router")
IBANS = {
    "FR7630006000011234567890189",
    "FR7630004008250001234567886",
    "FR6010278060760001234F50152",
}

Cli = Callable[..., Coroutine[Any, Any, subprocess.CompletedProcess[str]]]


def environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"KAFKA_BOOTSTRAP_SERVERS", "TOPIC_PREFIX", "TOPIC_PARTITIONS"}
    }
    env.update(DATA_DIR=str(tmp_path / "var"), LOG_FORMAT="json", **extra)
    return env


@pytest.fixture
def cli(kafka_broker: EmbeddedBroker, topics: Topics, tmp_path: Path) -> Cli:
    env = environment(
        tmp_path,
        KAFKA_BOOTSTRAP_SERVERS=kafka_broker.bootstrap_servers,
        TOPIC_PREFIX=topics.prefix,
        TOPIC_PARTITIONS=str(topics.partitions),
    )

    async def run(*args: str, env: dict[str, str] = env) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(
            subprocess.run,
            [str(SCRIPT), "ingest", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    return run


def drop(name: str, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(SAMPLES / name, folder / name))


async def events(broker: EmbeddedBroker, topics: Topics) -> list[tuple[bytes, StatementReceived]]:
    records = await read_topic(broker.bootstrap_servers, topics.received)
    return [(r.key, StatementReceived.model_validate_json(r.value)) for r in records]


async def test_a_good_file_exits_0_and_publishes_its_statements(
    cli: Cli, kafka_broker: EmbeddedBroker, topics: Topics, tmp_path: Path
) -> None:
    path = drop("cfonb120-multi.txt", tmp_path / "in")

    result = await cli(str(path), "--source", "sobank-sftp", "--json")

    assert result.returncode == 0, result.stderr
    [outcome] = json.loads(result.stdout)
    assert outcome["ok"] is True
    assert outcome["format"] == "cfonb120"
    assert outcome["topic"] == topics.received
    assert outcome["moved_to"] is None and path.exists()  # FILEs stay without --done
    published = await events(kafka_broker, topics)
    assert len(published) == 6
    assert {key.decode() for key, _ in published} == IBANS
    assert all(key == event.iban.encode() for key, event in published)
    assert {event.source for _, event in published} == {"sobank-sftp"}
    assert sorted(event.statement_id for _, event in published) == sorted(
        s["statement_id"] for s in outcome["statements"]
    )
    assert sorted(s["iban"] for s in outcome["statements"]) == sorted(
        mask_iban(event.iban) for _, event in published
    )
    assert not any(iban in result.stdout for iban in IBANS)


async def test_a_broken_file_exits_non_zero_naming_the_line_and_is_quarantined(
    cli: Cli, kafka_broker: EmbeddedBroker, topics: Topics, tmp_path: Path
) -> None:
    good = drop("mt940-multi.sta", tmp_path / "in")
    broken = drop("cfonb120-balance-mismatch.txt", tmp_path / "in")

    result = await cli(str(broken), str(good), "--done", str(tmp_path / "done"))

    assert result.returncode == 7, result.stderr
    assert "error: cfonb120-balance-mismatch.txt: line 6: balances do not add up" in result.stderr
    assert "nothing was published" in result.stderr
    assert "published 2 statements from mt940-multi.sta (mt940)" in result.stdout
    quarantined = tmp_path / "in" / "quarantine" / broken.name
    assert quarantined.exists() and not broken.exists()
    error = json.loads(quarantined.with_name(f"{broken.name}.error.json").read_text())
    assert (error["line"], error["code"], error["format"]) == (6, "balance_mismatch", "cfonb120")
    assert (tmp_path / "done" / good.name).exists()
    published = await events(kafka_broker, topics)
    assert {event.format for _, event in published} == {"mt940"}  # nothing of the CFONB file
    assert len(published) == 2


async def test_bootstrap_can_be_given_on_the_command_line_and_is_required(
    cli: Cli, kafka_broker: EmbeddedBroker, topics: Topics, tmp_path: Path
) -> None:
    path = drop("camt053-multi.xml", tmp_path / "in")
    no_broker = environment(
        tmp_path, TOPIC_PREFIX=topics.prefix, TOPIC_PARTITIONS=str(topics.partitions)
    )

    refused = await cli(str(path), env=no_broker)
    assert refused.returncode == 8
    assert "KAFKA_BOOTSTRAP_SERVERS is not set" in refused.stderr
    assert "--bootstrap" in refused.stderr

    result = await cli(str(path), "--bootstrap", kafka_broker.bootstrap_servers, env=no_broker)
    assert result.returncode == 0, result.stderr
    assert len(await events(kafka_broker, topics)) == 3


async def test_a_missing_topic_is_refused_before_anything_is_sent(
    cli: Cli, kafka_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    env = environment(
        tmp_path,
        KAFKA_BOOTSTRAP_SERVERS=kafka_broker.bootstrap_servers,
        TOPIC_PREFIX="never-created",
        TOPIC_PARTITIONS="3",
    )
    result = await cli(str(drop("mt940-multi.sta", tmp_path)), env=env)

    assert result.returncode == 8
    assert "topic never-created.statements.received does not exist" in result.stderr
    assert (tmp_path / "mt940-multi.sta").exists()


def start_watcher(folder: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [str(SCRIPT), "ingest", "--watch", str(folder), "--poll-interval", "0.1"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def test_watch_ingests_dropped_files_and_stops_on_sigterm(
    kafka_broker: EmbeddedBroker, topics: Topics, tmp_path: Path
) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    env = environment(
        tmp_path,
        KAFKA_BOOTSTRAP_SERVERS=kafka_broker.bootstrap_servers,
        TOPIC_PREFIX=topics.prefix,
        TOPIC_PARTITIONS=str(topics.partitions),
    )
    log = tmp_path / "watch.log"
    proc = start_watcher(folder, env, log)
    try:
        drop("camt053-multi.xml", folder)
        drop("cfonb120-truncated.txt", folder)

        def alive() -> None:
            assert proc.poll() is None, log.read_text()

        await eventually(
            lambda: (folder / "done" / "camt053-multi.xml").exists()
            and (folder / "quarantine" / "cfonb120-truncated.txt.error.json").exists()
            and (folder / "quarantine" / "cfonb120-truncated.txt").exists(),
            f"the good file done, the bad one quarantined (watcher log: {log})",
            interval=0.1,
            guard=alive,
        )

        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    output = log.read_text()
    assert "published 3 statements from camt053-multi.xml" in output
    assert "error: cfonb120-truncated.txt: line 4:" in output
    published = await events(kafka_broker, topics)
    assert {event.format for _, event in published} == {"camt053"}
    assert len(published) == 3


def dry_run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``ingest --dry-run`` with no broker anywhere in the environment."""
    return subprocess.run(
        [str(SCRIPT), "ingest", "--dry-run", *args],
        env=environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_dry_run_prints_each_statement_or_the_refusal_without_a_broker(tmp_path: Path) -> None:
    good = drop("mt940-multi.sta", tmp_path / "in")
    short = Path(shutil.copy(SAMPLES / "rules" / "cfonb120-short-records.txt", tmp_path / "in"))
    broken = drop("cfonb120-truncated.txt", tmp_path / "in")

    result = dry_run(tmp_path, str(good), str(short), str(broken))

    assert result.returncode == 7, result.stderr
    assert result.stdout.splitlines() == [
        "mt940-multi.sta: mt940, 2 statements (dry run: nothing published)",
        "  line 2: FR33 **** **** **** **** ***1 Z25  2025-03-03..2025-03-03  EUR  "
        "opening 2750.00  closing 1429.55  3 movements",
        "  line 17: FR76 **** **** **** **** ***6 714  2025-03-03..2025-03-03  EUR  "
        "opening -75.30  closing 0.00  1 movement",
        "cfonb120-short-records.txt: cfonb120, 1 statement (dry run: nothing published)",
        "  line 1: FR76 **** **** **** **** ***0 189  2025-03-03..2025-03-03  EUR  "
        "opening 1000.00  closing 1094.50  2 movements",
    ]
    assert result.stderr.strip() == (
        "error: cfonb120-truncated.txt: line 4: record '04' is 87 characters long, expected "
        "120: truncated record, its amount (positions 91-104) is cut (only fields that may be "
        "blank can be missing at the end of a record) [malformed_record]"
    )
    assert broken.exists() and not (tmp_path / "in" / "quarantine").exists()


def test_dry_run_json_gives_the_same_for_scripts(tmp_path: Path) -> None:
    good = Path(shutil.copy(SAMPLES / "rules" / "camt053-booking-23h-utc.xml", tmp_path))
    refused = Path(shutil.copy(SAMPLES / "rules" / "mt940-lone-dash-continuation.sta", tmp_path))

    result = dry_run(tmp_path, "--json", str(good), str(refused))

    assert result.returncode == 7, result.stderr
    accepted, rejected = json.loads(result.stdout)
    assert accepted == {
        "file": str(good),
        "ok": True,
        "format": "camt053",
        "statements": [
            {
                "iban": "FR76 **** **** **** **** ***0 189",
                "period_start": "2025-03-04",
                "period_end": "2025-03-04",
                "currency": "EUR",
                "opening_balance": "1000.00",
                "closing_balance": "1120.00",
                "movements": 1,
                "first_line": 5,
            }
        ],
        "error": None,
    }
    assert (rejected["ok"], rejected["format"], rejected["statements"]) == (False, "mt940", [])
    assert (rejected["error"]["code"], rejected["error"]["line"]) == ("malformed_record", 7)
    assert rejected["error"]["message"].startswith("line 7: a line holding only '-' ends")


def test_dry_run_exits_0_when_every_file_reads_and_refuses_broker_options(tmp_path: Path) -> None:
    good = drop("camt053-multi.xml", tmp_path)
    assert dry_run(tmp_path, str(good)).returncode == 0
    misuse = dry_run(tmp_path, str(good), "--done", str(tmp_path / "done"))
    assert misuse.returncode == 2
    assert "--dry-run reads FILEs only" in misuse.stderr
