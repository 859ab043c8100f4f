"""Smaller command-line promises, run as the console script: ``topics list`` says who
writes and reads each topic, as docs/events.md does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).parents[2] / "docs"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    base = {key: value for key, value in os.environ.items()
            if key not in {"DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "STATEMENT_ROUTER_TOKEN",
                           "TOPIC_PREFIX"}}
    return {**base, "DATA_DIR": str(tmp_path / "var")}


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("statement-router")
    return subprocess.run([str(script), *args], env=env, capture_output=True, text=True,
                          timeout=60, check=False)


def documented_writers_and_readers() -> dict[str, str]:
    """docs/events.md's topic table: topic -> "written by → read by" (fixed names only)."""
    table = (DOCS / "events.md").read_text(encoding="utf-8").split("## The topics", 1)[1]
    rows: dict[str, str] = {}
    for line in table.split("\n\n")[1].splitlines()[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        topic = cells[0].strip("`")
        if "<" not in topic:
            rows[topic] = cells[-1].replace("`", "")
    return rows


def test_topics_list_says_who_writes_and_reads_each_topic(env: dict[str, str]) -> None:
    result = cli(env, "topics", "list")

    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    documented = documented_writers_and_readers()
    assert len(documented) == 7 and "adapters.control" in documented
    for topic, who in documented.items():
        assert lines[f"sobank.{topic}"].rstrip().endswith(who), (topic, who)
    assert lines["sobank.statements.partner.acd"].rstrip().endswith(
        "router → adapter worker for acd, ledger")


def test_diagnose_of_an_unbound_pending_iban_says_held_not_global_file(
    env: dict[str, str],
) -> None:
    iban = "FR7630006000011234567890189"
    assert cli(env, "cabinet", "create", "cab-a", "--name", "A").returncode == 0
    user = cli(env, "user", "create", "--cabinet", "cab-a", "--profile", "collaborateur")
    token = user.stdout.strip().splitlines()[-1]
    assert cli(env, "iban", "add", iban, "--cabinet", "cab-a").returncode == 0

    result = cli(env, "diagnose", iban, "--token", token)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1].startswith("2. [NOK]") and lines[2].startswith("3. [NOK]"), lines
    assert "une fois le mandat approuvé" in lines[1]
    assert "mis en attente" in lines[2]
    assert "vont dans le fichier global" not in result.stdout
