"""``statement-router adapters`` follows its connectors file (issue 14 item 10), as an
operator runs it: its own OS process, configured only by the environment and the file.

Connector A (``acd``, webhook) delivers; the operator adds B (``sage``, a partner the
shipped catalogue does not have, with another adapter: a directory drop) to the file.
B's topics are created, B delivers, and A's worker was never restarted: its
``adapter_started`` line appears once, and every A statement sent before, during and
after the reload is delivered exactly once. A file with an invalid adapter is then
refused with its reason logged, and the running set keeps delivering.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from adapters.delivery.naming import delivery_file_name, is_temporary_name
from events.topics import Topics
from routing.broker import EmbeddedBroker
from tests.e2e.test_adapter_crash import adapters_env, start_worker, stop_process, tail
from tests.eventually import eventually
from tests.integration.worker.conftest import produce
from tests.integration.worker.receiver import WebhookReceiver
from tests.unit.delivery.factories import make_delivery

SAGE_IBAN = "FR1420041010050500013M02606"


def write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".new")
    tmp.write_text(text)
    tmp.replace(path)


def events(log: Path) -> list[dict[str, Any]]:
    found = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
    return found


def named(log: Path, event: str, **fields: Any) -> list[dict[str, Any]]:
    return [e for e in events(log) if e.get("event") == event
            and all(e.get(k) == v for k, v in fields.items())]


async def test_a_partner_added_to_the_file_delivers_without_restarting_the_others(
    kafka_broker: EmbeddedBroker, topics: Topics, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    acd = receiver.partner("acd")
    drop = tmp_path / "sage-inbox"
    drop.mkdir()
    connectors = tmp_path / "connectors.toml"
    acd_table = (f'[connectors.acd]\nname = "ACD"\nadapter = "webhook"\nurl = "{acd.url}"\n'
                 'secret_env = "TEST_ACD_WHSEC"\n')
    sage_table = f'\n[connectors.sage]\nname = "Sage"\nadapter = "directory"\npath = "{drop}"\n'
    write(connectors, acd_table)
    env = adapters_env(
        bootstrap,
        topics,
        connectors,
        tmp_path / "var",
        TEST_ACD_WHSEC=acd.secret,
        LOG_FORMAT="json",
        LOG_LEVEL="INFO",
    )
    log = tmp_path / "adapters.log"

    def alive() -> None:
        assert proc.poll() is None, f"adapters exited: {tail(log)}"

    def files() -> list[str]:
        return sorted(p.name for p in drop.iterdir() if not is_temporary_name(p.name))

    proc = start_worker(env, log)
    try:
        await produce(bootstrap, topics, "acd", [make_delivery(f"a-{n}") for n in range(3)])
        await eventually(lambda: len(receiver.delivered("acd")), "A's first deliveries",
                         done=lambda n: n == 3, guard=alive, within=120)

        write(connectors, acd_table + sage_table)
        await produce(bootstrap, topics, "acd", [make_delivery(f"a-{n}") for n in range(3, 6)])
        await eventually(lambda: named(log, "adapter_started", connector_id="sage"),
                         "B's worker", guard=alive, within=120)
        sage_sent = [make_delivery(f"b-{n}", connector_id="sage", iban=SAGE_IBAN)
                     for n in range(3)]
        await produce(bootstrap, topics, "sage", sage_sent[:2])
        await produce(bootstrap, topics, "acd", [make_delivery(f"a-{n}") for n in range(6, 9)])
        await eventually(files, "B's files", done=lambda names: len(names) == 2, guard=alive)
        await eventually(lambda: len(receiver.delivered("acd")), "A's deliveries",
                         done=lambda n: n >= 9, guard=alive)
        reloaded = named(log, "connectors_reloaded")
        assert len(reloaded) == 1, tail(log)
        assert reloaded[0]["added"] == ["sage"] and reloaded[0]["unchanged"] == ["acd"]
        assert reloaded[0]["adapters"] == {"acd": "webhook", "sage": "directory"}

        write(connectors, acd_table + sage_table.replace('"directory"', '"ftp"'))
        refused = await eventually(lambda: named(log, "connectors_file_refused"),
                                   "the refusal", guard=alive)
        assert "connector sage: adapter: Input should be 'webhook', 'sftp' or 'directory'" in (
            refused[0]["reason"])
        assert refused[0]["running"] == ["acd", "sage"]
        await produce(bootstrap, topics, "sage", sage_sent[2:])
        await eventually(files, "B's file after the refusal", done=lambda n: len(n) == 3,
                         guard=alive)
    finally:
        stop_process(proc)
    assert proc.returncode == 0, tail(log)

    # A's worker ran from start to stop: one start, one stop (at the end), nothing lost
    # or repeated around the reload.
    assert len(named(log, "adapter_started", connector_id="acd")) == 1, tail(log)
    assert len(named(log, "adapter_stopped", connector_id="acd")) == 1, tail(log)
    assert sorted(h.statement_id for h in receiver.delivered("acd")) == sorted(
        f"a-{n}" for n in range(9))
    assert files() == sorted(delivery_file_name(d) for d in sage_sent)
    assert all(h.verified for h in receiver.delivered("acd"))
