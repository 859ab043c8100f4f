"""The adapters process follows its connectors file (issue 14 item 10): hot add, refusal,
removal, without restarting the connectors that did not change.

Real broker (Tansu and Apache Kafka), a real webhook partner verifying signatures, a real
directory drop. The file is rewritten the way an operator or a ConfigMap does it (a new
file renamed over the old one).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from adapters.catalogue_reload import ReloadingAdapters
from adapters.delivery import Deliverer, PartnerEndpoint
from adapters.worker import ConnectorStats, default_deliverer
from config.settings import Settings
from events.topics import Topics
from routing.broker import EmbeddedBroker, describe_topics, ensure_topics
from routing.entrypoints.bootstrap import run_adapters_role
from tests.eventually import eventually
from tests.unit.delivery.factories import make_delivery

from .conftest import SHORT, dead_letters, produce
from .receiver import WebhookReceiver
from .test_cli import acli
from .test_supervision import PoisonedDeliverer

NEW_IBAN = "FR1420041010050500013M02606"


def write(path: Path, text: str) -> None:
    """Replace the file in one rename, as editors and ConfigMap updates do."""
    tmp = path.with_suffix(".new")
    tmp.write_text(text)
    tmp.replace(path)


def acd_table(url: str) -> str:
    return f'[connectors.acd]\nname = "ACD"\nadapter = "webhook"\nurl = "{url}"\n' \
           'secret_env = "ACD_WHSEC"\n'


async def running(pool: ReloadingAdapters, stop: asyncio.Event) -> dict[str, ConnectorStats]:
    """``pool.run`` with its producer, as the ``adapters`` command runs it."""
    return await run_adapters_role(pool.settings, pool.bootstrap_servers,
                                   lambda producer: pool.run(stop, producer))


async def test_a_connector_added_to_the_file_delivers_and_the_others_keep_running(
    kafka_broker: EmbeddedBroker, topics: Topics, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    acd = receiver.partner("acd")
    drop = tmp_path / "sage-inbox"
    drop.mkdir()
    path = tmp_path / "connectors.toml"
    write(path, acd_table(acd.url))
    pool = ReloadingAdapters(
        Settings(), topics, path, bootstrap_servers=bootstrap, schedule=SHORT,
        session_timeout_ms=2_000, reload_interval=0.05, environ={"ACD_WHSEC": acd.secret})
    stop = asyncio.Event()
    task = asyncio.create_task(running(pool, stop))
    try:
        await eventually(lambda: pool.started.is_set() or task.done(), "the adapters to start")
        assert not task.done()
        before = pool.workers["acd"]

        await produce(bootstrap, topics, "acd", [make_delivery(f"acd-{i}") for i in range(3)])
        await eventually(lambda: len(receiver.delivered("acd")), "acd's first deliveries",
                         done=lambda n: n == 3)

        # B: a partner the shipped catalogue does not know, with another adapter kind.
        sage = f'[connectors.sage]\nname = "Sage"\nadapter = "directory"\npath = "{drop}"\n'
        await produce(bootstrap, topics, "acd", [make_delivery(f"acd-{i}") for i in range(3, 6)])
        write(path, acd_table(acd.url) + sage)
        await produce(bootstrap, topics, "acd", [make_delivery(f"acd-{i}") for i in range(6, 9)])
        await eventually(lambda: "sage" in pool.workers and pool.workers["sage"].worker.ready
                         .is_set(), "sage's worker to start")
        counts = await describe_topics(bootstrap, [topics.partner("sage"),
                                                   topics.partner_dlq("sage")])
        assert counts == {topics.partner("sage"): topics.partitions,
                          topics.partner_dlq("sage"): topics.partitions}
        await produce(bootstrap, topics, "sage", [
            make_delivery(f"sage-{i}", connector_id="sage", iban=NEW_IBAN) for i in range(2)])
        await eventually(lambda: sorted(p.name for p in drop.iterdir() if p.suffix != ".tmp"),
                         "sage's files", done=lambda names: len(names) == 2)
        assert pool.workers["sage"].spec.adapter == "directory"

        # A was never restarted: the same worker and task, every statement delivered once
        # (a restarted worker would start new stats and might redeliver what it had not
        # committed).
        await eventually(lambda: len(receiver.delivered("acd")), "acd's deliveries",
                         done=lambda n: n >= 9)
        after = pool.workers["acd"]
        assert after is before and not after.task.done()
        assert after.worker.stats is pool.stats["acd"] and pool.stats["acd"].delivered == 9
        assert sorted(h.statement_id for h in receiver.delivered("acd")) == sorted(
            f"acd-{i}" for i in range(9))

        # An invalid file is refused with its reason; the running set stays.
        sage_worker = pool.workers["sage"]
        write(path, acd_table(acd.url) + sage.replace('"directory"', '"ftp"'))
        reason = await eventually(lambda: pool.refused, "the refusal")
        assert "connector sage: adapter: Input should be 'webhook', 'sftp' or 'directory'" in (
            reason)
        assert pool.workers == {"acd": before, "sage": sage_worker}
        await produce(bootstrap, topics, "sage", [
            make_delivery("sage-2", connector_id="sage", iban=NEW_IBAN)])
        await eventually(lambda: len([p for p in drop.iterdir() if p.suffix != ".tmp"]),
                         "sage's third file", done=lambda n: n == 3)

        # Removing B stops its worker only.
        reloads = pool.reloads
        write(path, acd_table(acd.url))
        await eventually(lambda: pool.reloads > reloads, "the reload removing sage")
        assert pool.refused is None
        assert set(pool.workers) == {"acd"} and pool.workers["acd"] is before
        assert sage_worker.task.done() and sage_worker.task.exception() is None
        assert not before.task.done()
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


async def test_a_changed_endpoint_restarts_that_connector_only(
    kafka_broker: EmbeddedBroker, topics: Topics, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    acd = receiver.partner("acd")
    quadra_a, quadra_b = tmp_path / "a", tmp_path / "b"
    quadra_a.mkdir()
    quadra_b.mkdir()
    path = tmp_path / "connectors.toml"

    def quadra(drop: Path) -> str:
        return f'[connectors.quadra]\nadapter = "directory"\npath = "{drop}"\n'

    write(path, acd_table(acd.url) + quadra(quadra_a))
    pool = ReloadingAdapters(
        Settings(), topics, path, bootstrap_servers=bootstrap, schedule=SHORT,
        session_timeout_ms=2_000, reload_interval=0.05, environ={"ACD_WHSEC": acd.secret})
    stop = asyncio.Event()
    task = asyncio.create_task(running(pool, stop))
    try:
        await eventually(lambda: pool.started.is_set() or task.done(), "the adapters to start")
        acd_before, quadra_before = pool.workers["acd"], pool.workers["quadra"]
        write(path, acd_table(acd.url).replace('"ACD"', '"ACD Compta"') + quadra(quadra_b))
        await eventually(lambda: pool.reloads, "the reload")
        assert pool.workers["acd"] is acd_before  # a new display name restarts nothing
        assert pool.workers["acd"].spec.name == "ACD Compta"
        assert pool.workers["quadra"] is not quadra_before and quadra_before.task.done()
        await produce(bootstrap, topics, "quadra", [
            make_delivery("q-1", connector_id="quadra")])
        await eventually(lambda: list(quadra_b.iterdir()), "the file in the new drop")
        assert not list(quadra_a.iterdir())
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


async def test_a_new_connector_whose_topic_is_wrong_waits_and_the_others_run(
    kafka_broker: EmbeddedBroker, topics: Topics, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    acd = receiver.partner("acd")
    # sage's topic exists already with the wrong partition count: the reload must not
    # start a worker on it, nor stop anything else.
    wrong = Topics(topics.prefix, topics.partitions + 1)
    await ensure_topics(bootstrap, [s for s in wrong.specs(["sage"])
                                    if s.name == wrong.partner("sage")])
    path = tmp_path / "connectors.toml"
    write(path, acd_table(acd.url))
    pool = ReloadingAdapters(
        Settings(), topics, path, bootstrap_servers=bootstrap, schedule=SHORT,
        session_timeout_ms=2_000, reload_interval=0.05, environ={"ACD_WHSEC": acd.secret})
    stop = asyncio.Event()
    task = asyncio.create_task(running(pool, stop))
    try:
        await eventually(lambda: pool.started.is_set() or task.done(), "the adapters to start")
        before = pool.workers["acd"]
        write(path, acd_table(acd.url) + f'[connectors.sage]\nadapter = "directory"\n'
                                         f'path = "{tmp_path}"\n')
        reason = await eventually(lambda: pool.refused, "the refused topics")
        assert reason.startswith("topics of sage: ") and "partitions" in reason, reason
        assert pool.workers == {"acd": before} and not before.task.done()
        await produce(bootstrap, topics, "acd", [make_delivery("acd-after")])
        await eventually(lambda: [h.statement_id for h in receiver.delivered("acd")],
                         "acd still delivering", done=lambda ids: ids == ["acd-after"])
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


async def test_a_connector_added_by_the_file_runs_supervised_stops_alone_and_is_enabled(
    kafka_broker: EmbeddedBroker, topics: Topics, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    """One code path: the connector the file adds runs under the supervisor. A poison
    record in it stops that worker only (acd keeps delivering, the process keeps running),
    and ``statement-router adapters enable sage`` (the real CLI) resumes it: the poison is
    parked (ADAPTER_MAX_CRASHES=1) and the rest delivered."""
    bootstrap = kafka_broker.bootstrap_servers
    acd = receiver.partner("acd")
    drop = tmp_path / "sage-inbox"
    drop.mkdir()
    path = tmp_path / "connectors.toml"
    write(path, acd_table(acd.url))
    poisoned: dict[str, PoisonedDeliverer] = {}

    def deliverers(connector_id: str, endpoint: PartnerEndpoint) -> Deliverer:
        inner = default_deliverer(connector_id, endpoint)
        if connector_id != "sage":
            return inner
        poisoned[connector_id] = PoisonedDeliverer(inner, ["sage-poison"])
        return poisoned[connector_id]

    pool = ReloadingAdapters(
        Settings(adapter_max_crashes=1), topics, path, bootstrap_servers=bootstrap,
        schedule=SHORT, session_timeout_ms=2_000, reload_interval=0.05,
        deliverer_factory=deliverers, environ={"ACD_WHSEC": acd.secret})
    stop = asyncio.Event()
    task = asyncio.create_task(running(pool, stop))
    try:
        await eventually(lambda: pool.started.is_set() or task.done(), "the adapters to start")
        assert not task.done()
        acd_slot = pool.workers["acd"]
        write(path, acd_table(acd.url)
              + f'[connectors.sage]\nname = "Sage"\nadapter = "directory"\npath = "{drop}"\n')
        await eventually(lambda: "sage" in pool.workers and pool.workers["sage"].worker.ready
                         .is_set(), "sage's supervised worker to start")
        await produce(bootstrap, topics, "sage", [
            make_delivery("sage-poison", connector_id="sage", iban=NEW_IBAN),
            *(make_delivery(f"sage-{i}", connector_id="sage", iban=NEW_IBAN)
              for i in range(2))])
        await eventually(lambda: pool.stats["sage"].state, "sage stopped",
                         done=lambda state: state == "stopped")
        assert poisoned["sage"].calls["sage-poison"] == 1 and not list(drop.iterdir())

        await produce(bootstrap, topics, "acd", [make_delivery("acd-while-sage-stopped")])
        await eventually(lambda: [h.statement_id for h in receiver.delivered("acd")],
                         "acd still delivering",
                         done=lambda ids: ids == ["acd-while-sage-stopped"])
        assert not task.done() and pool.workers["acd"] is acd_slot and acd_slot.running

        env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "TOPIC_PREFIX": topics.prefix,
               "TOPIC_PARTITIONS": str(topics.partitions), "CONNECTORS_FILE": str(path),
               "ACD_WHSEC": acd.secret}
        result = await acli("adapters", "enable", "sage", "--wait", "60", env=env)
        assert result.returncode == 0, result.stderr
        assert "sage: worker running again" in result.stdout
        await eventually(lambda: sorted(p.name for p in drop.iterdir() if p.suffix != ".tmp"),
                         "sage's two other files", done=lambda names: len(names) == 2)
        assert pool.stats["sage"].state == "running" and pool.stats["sage"].parked == 1
        assert poisoned["sage"].calls["sage-poison"] == 1  # parked, not tried again
        [letter] = await dead_letters(bootstrap, topics, "sage")
        assert letter["statement_id"] == "sage-poison" and letter["parked"] is not None
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


async def test_a_file_that_removes_every_connector_leaves_the_process_idle_not_stopped(
    kafka_broker: EmbeddedBroker, topics: Topics, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    """Nothing failed, so no exit 8: the process stays up with no slot, follows the file,
    and runs the connector again once a version gives it back."""
    bootstrap = kafka_broker.bootstrap_servers
    acd = receiver.partner("acd")
    path = tmp_path / "connectors.toml"
    write(path, acd_table(acd.url))
    pool = ReloadingAdapters(
        Settings(), topics, path, bootstrap_servers=bootstrap, schedule=SHORT,
        session_timeout_ms=2_000, reload_interval=0.05, environ={"ACD_WHSEC": acd.secret})
    stop = asyncio.Event()
    task = asyncio.create_task(running(pool, stop))
    try:
        await eventually(lambda: pool.started.is_set() or task.done(), "the adapters to start")
        before = pool.workers["acd"]
        write(path, "# every connector removed\n")
        await eventually(lambda: pool.reloads, "the reload removing acd")
        assert pool.refused is None and dict(pool.workers) == {} and not task.done()
        assert before.task is not None and before.task.done()
        await produce(bootstrap, topics, "acd", [make_delivery("acd-back")])
        write(path, acd_table(acd.url))
        await eventually(lambda: [h.statement_id for h in receiver.delivered("acd")],
                         "acd back and delivering", done=lambda ids: ids == ["acd-back"])
        assert not task.done() and pool.workers["acd"] is not before
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
