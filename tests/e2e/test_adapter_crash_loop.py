"""A record that kills the adapters process every time it is handled cannot crash-loop it.

The real command (``statement-router adapters``) as its own OS process, with
``ADAPTER_MAX_CRASHES=2``. The first statement of the only partition in use makes the
partner hang (as a record that exhausts memory would hold the worker), and the test kills
the process with SIGKILL while it waits: no error, no goodbye, nothing the process could
count by itself. After two such deaths, the third start must park that record (a dead
letter referring to it, without calling the partner again) and deliver the others. The
crash count is therefore the one kept in the control topic across processes.
"""

from __future__ import annotations

import json
from pathlib import Path

from events.topics import Topics
from routing.broker import EmbeddedBroker, read_topic
from tests.e2e.test_adapter_crash import adapters_env, start_worker, stop_process, tail, wait_for
from tests.integration.worker.conftest import produce
from tests.integration.worker.receiver import Reply, WebhookReceiver
from tests.unit.delivery.factories import make_delivery


async def test_a_record_killing_the_process_twice_is_parked_on_the_third_start(
    kafka_broker: EmbeddedBroker, topics: Topics, tmp_path: Path
) -> None:
    receiver = WebhookReceiver()
    await receiver.start()
    acd = receiver.partner("acd")
    acd.script(Reply(200, delay=15), Reply(200, delay=15))  # the two starts that die
    connectors = tmp_path / "connectors.toml"
    connectors.write_text(f'[connectors.acd]\nurl = "{acd.url}"\nsecret_env = "TEST_ACD_WHSEC"\n')
    env = adapters_env(
        kafka_broker.bootstrap_servers,
        topics,
        connectors,
        tmp_path / "var",
        TEST_ACD_WHSEC=acd.secret,
        ADAPTER_MAX_CRASHES="2",
        LOG_LEVEL="WARNING",
    )
    log = tmp_path / "adapters.log"
    sent = [make_delivery("st-killer"), *(make_delivery(f"st-fine-{i}") for i in range(4))]
    await produce(kafka_broker.bootstrap_servers, topics, "acd", sent)

    proc = start_worker(env, log)
    try:
        for death in (1, 2):
            await wait_for(lambda d=death: len(receiver.of("acd")) >= d, proc, log, 120,
                           f"the killer statement's request #{death}")
            proc.kill()
            proc.wait(timeout=30)
            proc = start_worker(env, log)
        fine = {f"st-fine-{i}" for i in range(4)}
        await wait_for(lambda: {h.statement_id for h in receiver.delivered("acd")} >= fine,
                       proc, log, 180, "the four other statements")
    finally:
        stop_process(proc)
        await receiver.stop()
    assert proc.returncode == 0, tail(log)

    assert [h.statement_id for h in receiver.of("acd")].count("st-killer") == 2
    letters = [json.loads(r.value)
               for r in await read_topic(kafka_broker.bootstrap_servers, topics.partner_dlq("acd"))]
    [letter] = letters
    assert letter["statement_id"] == "st-killer" and letter["delivery"] is None
    assert letter["parked"]["offset"] == 0 and "crashed 2 times" in letter["reason"]
    assert "statement_parked" in log.read_text()
