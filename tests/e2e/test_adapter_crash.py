"""An adapter worker killed with SIGKILL mid-batch loses nothing (DESIGN §5).

The worker runs as its own OS process, the real command (``statement-router adapters``),
configured only through the environment and a connectors file: a webhook connector
(``acd``) aimed at a receiver in this test, which verifies every signature, and a
directory-drop connector (``quadra``). The test publishes N deliveries to each, kills the
worker while it is delivering, restarts it, and checks:

* every statement reached the webhook partner at least once, always under its own
  ``webhook-id``; duplicates (allowed: at-least-once) are counted and reported;
* the drop holds exactly N statement files: a redelivery overwrites its file.

No process is left behind: the worker is stopped (or killed) in ``finally``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from adapters.delivery.naming import delivery_file_name, is_temporary_name
from events.topics import Topics
from routing.broker import EmbeddedBroker
from tests.eventually import eventually
from tests.integration.worker.conftest import produce
from tests.integration.worker.receiver import Reply, WebhookReceiver
from tests.unit.delivery.factories import make_delivery
from tests.unit.router.factories import make_iban

N = 300
ROOT = Path(__file__).resolve().parents[2]


def adapters_env(
    bootstrap: str, topics: Topics, connectors: Path, data_dir: Path, **settings: str
) -> dict[str, str]:
    """The environment of a `statement-router adapters` child: this test's broker, topics
    and connectors file, none of the developer's own store, file or operator token."""
    env = {k: v for k, v in os.environ.items()
           if k not in {"DATABASE_URL", "CONNECTORS_FILE", "OPERATOR_TOKEN_SHA256"}}
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        TOPIC_PREFIX=topics.prefix,
        TOPIC_PARTITIONS=str(topics.partitions),
        CONNECTORS_FILE=str(connectors),
        DATA_DIR=str(data_dir),
        **settings,
    )
    return env


CLI = "from routing.entrypoints.cli.main import main; main()"


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-c", CLI, "adapters"],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
        )


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def tail(log: Path) -> str:
    return log.read_text()[-3000:]


async def wait_for(predicate: Any, proc: subprocess.Popen[bytes], log: Path,
                   within: float, what: str) -> None:
    """Wait for ``predicate``; fail at once, with the worker's log, if the worker exits."""

    def alive() -> None:
        assert proc.poll() is None, f"worker exited: {tail(log)}"

    await eventually(predicate, f"{what} (worker log: {log})", within=within, interval=0.02,
                     guard=alive)


async def test_sigkill_mid_batch_loses_no_delivery(
    kafka_broker: EmbeddedBroker, topics: Topics, tmp_path: Path
) -> None:
    receiver = WebhookReceiver()
    await receiver.start()
    acd = receiver.partner("acd")
    acd.default = Reply(200, delay=0.005)  # a partner that takes a moment per request
    drop = tmp_path / "quadra-drop"
    drop.mkdir()
    connectors = tmp_path / "connectors.toml"
    connectors.write_text(
        f'[connectors.acd]\nurl = "{acd.url}"\nsecret_env = "TEST_ACD_WHSEC"\n\n'
        f'[connectors.quadra]\npath = "{drop}"\n'
    )
    env = adapters_env(
        kafka_broker.bootstrap_servers,
        topics,
        connectors,
        tmp_path / "var",
        TEST_ACD_WHSEC=acd.secret,
        DELIVERY_RETRY_BASE_SECONDS="0.05",
        DELIVERY_RETRY_MAX_SECONDS="0.5",
        DELIVERY_MAX_ATTEMPTS="50",
        LOG_LEVEL="WARNING",
    )
    log = tmp_path / "adapters.log"
    ibans = [make_iban(500 + i) for i in range(25)]
    webhook_sent = [make_delivery(f"wh-{n:04d}", connector_id="acd", iban=ibans[n % 25])
                    for n in range(N)]
    drop_sent = [make_delivery(f"dr-{n:04d}", connector_id="quadra", iban=ibans[n % 25])
                 for n in range(N)]
    await produce(kafka_broker.bootstrap_servers, topics, "acd", webhook_sent)
    await produce(kafka_broker.bootstrap_servers, topics, "quadra", drop_sent)

    def files() -> list[str]:
        return [p.name for p in drop.iterdir() if not is_temporary_name(p.name)]

    proc = start_worker(env, log)
    try:
        await wait_for(lambda: len(receiver.of("acd")) >= N // 3, proc, log, 120,
                       "the first third of the webhook deliveries")
        proc.kill()  # SIGKILL: no flush, no commit, no goodbye to the group
        proc.wait(timeout=30)
        at_kill = (len(receiver.of("acd")), len(files()))
        assert at_kill[0] < N, "the kill came after the webhook deliveries were done"

        proc = start_worker(env, log)
        expected = {d.statement_id for d in webhook_sent}
        await wait_for(
            lambda: {h.statement_id for h in receiver.delivered("acd")} >= expected
            and len(files()) >= N,
            proc, log, 180, "every delivery after the restart")
    finally:
        stop_process(proc)
        await receiver.stop()
    assert proc.returncode == 0, tail(log)

    hits = receiver.delivered("acd")
    assert all(h.verified and h.webhook_statement == h.statement_id for h in hits)
    delivered = {h.statement_id for h in hits}
    lost = expected - delivered
    duplicates = len(hits) - len(delivered)
    assert lost == set()
    assert sorted(files()) == sorted(delivery_file_name(d) for d in drop_sent)
    leftovers = [p.name for p in drop.iterdir() if is_temporary_name(p.name)]
    print(f"adapter crash: sent {N} webhook + {N} drop; killed after {at_kill[0]} webhook "
          f"requests and {at_kill[1]} files; webhook delivered {len(delivered)} unique, "
          f"{duplicates} duplicate(s), {len(lost)} lost; drop files {len(files())}, "
          f"{len(leftovers)} temporary leftover(s)")
