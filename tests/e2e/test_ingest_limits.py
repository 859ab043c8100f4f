"""``statement-router ingest`` and the size rule: a statement at the limit is published whole;
one byte over and 20 MB are refused at the edge, exit code 7, with their size and the limit,
and nothing of theirs reaches the broker."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from events.limits import MAX_STATEMENT_BYTES
from events.topics import Topics
from routing.broker import EmbeddedBroker
from tests.e2e.test_ingest_cli import Cli, cli, environment, events  # noqa: F401  (cli: fixture)
from tests.integration.limits.helpers import TWENTY_MB, camt053_of_size

IBAN = "FR7630003036200002041234504"


def write(folder: Path, name: str, size: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(camt053_of_size(size, IBAN))
    return path


async def test_at_the_limit_is_published_one_over_and_20_mb_are_refused_with_their_size(
    cli: Cli, kafka_broker: EmbeddedBroker, topics: Topics, tmp_path: Path  # noqa: F811
) -> None:
    at_limit = write(tmp_path / "in", "at-limit.xml", MAX_STATEMENT_BYTES)
    one_over = write(tmp_path / "in", "one-over.xml", MAX_STATEMENT_BYTES + 1)
    twenty = write(tmp_path / "in", "twenty.xml", TWENTY_MB)

    result = await cli(str(at_limit), str(one_over), str(twenty), "--done", str(tmp_path / "done"))

    assert result.returncode == 7, result.stderr
    assert f"published 1 statements from at-limit.xml (camt053) to {topics.received}" in (
        result.stdout
    )
    for name, size in (("one-over.xml", "1,048,577"), ("twenty.xml", "20,000,000")):
        assert (
            f"error: {name}: line 5: the camt.053 statement is {size} bytes, over the limit of "
            "1,048,576 bytes for one statement (MAX_STATEMENT_BYTES, docs/operations.md#limits)"
        ) in result.stderr
    assert result.stderr.count("[statement_too_large]; nothing was published") == 2
    for refused in (one_over, twenty):
        quarantined = refused.parent / "quarantine" / refused.name
        assert quarantined.exists() and not refused.exists()
        error = json.loads(quarantined.with_name(f"{refused.name}.error.json").read_text())
        assert (error["code"], error["line"]) == ("statement_too_large", 5)
    [(key, event)] = await events(kafka_broker, topics)
    content = base64.b64decode(event.content_b64)
    assert key == IBAN.encode() and len(content) == MAX_STATEMENT_BYTES
    assert content == (tmp_path / "done" / "at-limit.xml").read_bytes()


async def test_a_lower_max_statement_bytes_refuses_a_statement_over_it(
    cli: Cli, kafka_broker: EmbeddedBroker, topics: Topics, tmp_path: Path  # noqa: F811
) -> None:
    """The setting lowers the rule's limit for ingest (it may not raise it)."""
    at, over = write(tmp_path, "at.xml", 100_000), write(tmp_path, "over.xml", 100_001)
    env = environment(
        tmp_path,
        KAFKA_BOOTSTRAP_SERVERS=kafka_broker.bootstrap_servers,
        TOPIC_PREFIX=topics.prefix,
        TOPIC_PARTITIONS=str(topics.partitions),
        MAX_STATEMENT_BYTES="100000",
    )
    result = await cli(str(at), str(over), env=env)
    assert result.returncode == 7, result.stderr
    assert "published 1 statements from at.xml (camt053)" in result.stdout
    assert (
        "error: over.xml: line 5: the statement of account FR76 **** **** **** **** ***4 504 "
        "for 2025-03-03..2025-03-03 is 100,001 bytes, over the limit of 100,000 bytes for one "
        "statement (MAX_STATEMENT_BYTES, docs/operations.md#limits)"
    ) in result.stderr
    [(_, event)] = await events(kafka_broker, topics)
    assert len(base64.b64decode(event.content_b64)) == 100_000
