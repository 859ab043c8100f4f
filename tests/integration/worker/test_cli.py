"""The `dlq` and `operator` commands as an operator runs them: separate processes, real broker."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from events.topics import Topics
from routing.broker import EmbeddedBroker
from tests.eventually import eventually
from tests.integration.ops_api import operator_api
from tests.unit.delivery.factories import make_delivery

from .conftest import produce, running, webhook
from .receiver import Reply, WebhookReceiver

ROOT = Path(__file__).resolve().parents[3]


def _command(args: tuple[str, ...], env: dict[str, str] | None) -> tuple[list[str], dict[str, str]]:
    base = {k: v for k, v in os.environ.items() if k not in {"CONNECTORS_FILE"}}
    argv = [sys.executable, "-c", "from routing.entrypoints.cli.main import main; main()", *args]
    return argv, {**base, **(env or {})}


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    argv, full_env = _command(args, env)
    return subprocess.run(argv, env=full_env, capture_output=True, text=True, cwd=ROOT,
                          timeout=120, check=False)


async def acli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``cli`` without blocking the event loop (the adapters run in it meanwhile)."""
    argv, full_env = _command(args, env)
    proc = await asyncio.create_subprocess_exec(
        *argv, env=full_env, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return subprocess.CompletedProcess(argv, proc.returncode, out.decode(), err.decode())


def test_operator_token_prints_a_token_and_its_hash() -> None:
    result = cli("operator", "token")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if not line.startswith("#")]
    setting, token = lines
    assert token.startswith("sro_")
    assert setting == f"OPERATOR_TOKEN_SHA256={hashlib.sha256(token.encode()).hexdigest()}"


async def test_dlq_list_and_replay_commands(
    kafka_broker: EmbeddedBroker, topics: Topics, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    sqlite_url = f"sqlite+aiosqlite:///{tmp_path / 'ops.db'}"
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka_broker.bootstrap_servers,
           "TOPIC_PREFIX": topics.prefix, "TOPIC_PARTITIONS": str(topics.partitions)}
    acd = receiver.partner("acd")
    acd.script(Reply(400))
    await produce(kafka_broker.bootstrap_servers, topics, "acd", [make_delivery("st-cli-1")])
    async with running(kafka_broker, topics, {"acd": webhook(acd)}) as pool:
        await eventually(lambda: pool.stats["acd"].dead_lettered == 1, what="the dead letter")

        listed = await acli("dlq", "list", "--connector", "acd", env=env)
        assert listed.returncode == 0, listed.stderr
        assert "st-cli-1" in listed.stdout and "FR76 **** **** **** **** ***0 189" in listed.stdout
        assert "1 dead letter(s) for acd, 1 open" in listed.stdout
        assert "FR7630006000011234567890189" not in listed.stdout

        replayed = await acli("dlq", "replay", "--connector", "acd", "--statement", "st-cli-1",
                       "--json", env=env)
        assert replayed.returncode == 0, replayed.stderr
        assert json.loads(replayed.stdout)["replayed"] == ["st-cli-1"]
        again = await acli("dlq", "replay", "--connector", "acd", "--statement", "st-cli-1",
                           env=env)
        assert again.returncode == 6 and "already replayed" in again.stderr
        await eventually(lambda: receiver.delivered("acd"), what="the replayed delivery")

    as_json = await acli("dlq", "list", "--connector", "acd", "--json", env=env)
    listing = json.loads(as_json.stdout)
    [entry] = listing["dead_letters"]
    assert entry["replayed_at"] is not None
    # The CLI's JSON is the body of its API twin, GET /ops/dlq/{connector}.
    async with operator_api(kafka_broker.bootstrap_servers, topics, sqlite_url) as ops:
        api = await ops.client.get("/ops/dlq/acd", headers=ops.operator)
    assert api.status_code == 200
    assert api.json() == listing
    codes = [
        (await acli("dlq", "replay", "--connector", "acd", "--all", env=env)).returncode,
        (await acli("dlq", "replay", "--connector", "nope", "--all", env=env)).returncode,
        (await acli("dlq", "replay", "--connector", "acd", env=env)).returncode,
        (await acli("dlq", "replay", "--connector", "acd", "--statement", "x",
                    env=env)).returncode,
    ]
    assert codes == [0, 5, 2, 5]  # 2: neither --statement nor --all is a usage error
    assert [h.status for h in receiver.of("acd")] == [400, 200]
