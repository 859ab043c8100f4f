"""``statement-router up``: the whole system in one process, for this machine.

It starts a broker of its own unless ``KAFKA_BOOTSTRAP_SERVERS`` is set (the embedded
Tansu by default, or Apache Kafka itself with ``--broker kafka``), creates the topics, and
runs the API, the outbox relay, the router and the embedded sinks (a directory drop per
connector; the global files are kept in the state store) until Ctrl-C. ``--demo`` seeds a
fresh demo state, feeds the sample bank files through the real topics and reports where
each statement went and why.

With ``CONNECTORS_FILE``, the adapters follow the file while ``up`` runs, as the
``adapters`` process does (``adapters.catalogue_reload.ReloadingAdapters``): a connector
the file gives no endpoint, at start or added later, gets the embedded drop.

With the embedded broker, what it held is saved under ``<data_dir>/broker/`` when ``up``
stops and replayed at the next start (``routing.broker.snapshot``); IBAN states the broker
lacks are queued again from the store in any case.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, Literal

import structlog
from pydantic import SecretStr

from adapters.catalogue_reload import ReloadingAdapters, ReloadReport
from adapters.delivery import (
    DeliveryConfigError,
    DirectoryEndpoint,
    PartnerEndpoint,
    WebhookEndpoint,
)
from adapters.endpoints import ConnectorsConfig, embedded_endpoints, load_connectors
from adapters.worker import ConnectorStats, run_adapters
from config.settings import Settings
from events.topics import Topics
from routing.broker import EmbeddedBroker, ensure_topics
from routing.broker.kafka_local import KAFKA_VERSION, LocalKafka
from routing.broker.snapshot import (
    SNAPSHOT_NAME,
    mark_unsaved,
    restore_snapshot,
    save_snapshot,
    unsaved_previous_run,
)
from routing.demo.partner import demo_partner, new_secret
from routing.entrypoints.bootstrap import (
    api_app,
    broker_address,
    catalogue,
    check_broker_settings,
    open_store,
    run_adapters_role,
    run_global_file_builder,
    run_ledger,
    run_relay,
    run_router,
)
from routing.entrypoints.runtime import stop_on_signals
from routing.entrypoints.serve import api_server
from routing.entrypoints.up_lock import UpRefused, api_port_problem, hold_up_lock, lock_path
from routing.entrypoints.up_lock import save as save_lock
from routing.services.backoff import RetrySchedule
from routing.services.relay import republish_missing_states
from routing.store.ledger import SqlDeliveryLedger
from routing.store.sql import SqlStateStore

log = structlog.get_logger(__name__)

_STOP_GRACE_S = 2.0


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _describe(endpoint: PartnerEndpoint) -> str:
    if isinstance(endpoint, WebhookEndpoint):
        return f"webhook {endpoint.display_url}"
    if isinstance(endpoint, DirectoryEndpoint):
        return f"directory {endpoint.path}"
    return endpoint.kind


def _origin(endpoint: PartnerEndpoint, stand_in: PartnerEndpoint | None) -> str:
    """Where a connector's endpoint comes from, so the banner hides no substitution."""
    if endpoint != stand_in:
        return "CONNECTORS_FILE"
    if isinstance(endpoint, WebhookEndpoint):
        return "the demo's webhook receiver"
    return "embedded drop"


def _demo_operator_token() -> tuple[str, str]:
    """A fresh operator token for the demo's /ops routes, and its hash for the settings."""
    from routing.entrypoints.api.ops import new_operator_token

    return new_operator_token()


async def _restore_broker(
    bootstrap: str, broker_dir: Path, print_line: Callable[[str], None]
) -> bool:
    """Replay the records saved at the last stop; True when the last run saved nothing."""
    lost_run = unsaved_previous_run(broker_dir)
    restored = await restore_snapshot(bootstrap, broker_dir)
    if restored is not None:
        print_line(
            f"restored   {restored.total_records} broker records of {restored.topics} topics "
            f"and {restored.group_offsets} consumer offsets from {broker_dir / SNAPSHOT_NAME}"
        )
    mark_unsaved(broker_dir)
    return lost_run and restored is None


async def _save_broker(
    bootstrap: str, broker_dir: Path, print_line: Callable[[str], None]
) -> None:
    """Save what the embedded broker holds, once every role has stopped."""
    try:
        saved = await save_snapshot(bootstrap, broker_dir)
    except Exception as exc:
        log.error("broker_snapshot_failed", error=str(exc))
        print_line(
            f"WARNING    the embedded broker's records could not be saved ({exc}); the next "
            "start will say what is lost"
        )
        return
    print_line(
        f"saved      {saved.total_records} broker records and {saved.group_offsets} consumer "
        f"offsets to {broker_dir / SNAPSHOT_NAME}"
    )


async def _rebuild_from_store(
    store: SqlStateStore,
    bootstrap: str,
    topics: Topics,
    lost_run: bool,
    print_line: Callable[[str], None],
) -> None:
    """Give the broker back what the store knows, and name what only the broker knew."""
    republished = await republish_missing_states(store, bootstrap, topics)
    if republished:
        print_line(f"republished {republished} IBAN states from the store (the broker lacked them)")
    if not lost_run:
        return
    unsettled = await SqlDeliveryLedger(store.engine).unsettled_statements()
    print_line(
        "WARNING    the previous run ended without saving the embedded broker's records "
        "(killed?): what only the broker held is lost."
    )
    if unsettled:
        print_line(
            f"WARNING    {len(unsettled)} statements were not delivered nor in a global file "
            "then; ingest them again if they are missing:"
        )
        for statement_id, status in sorted(unsettled.items()):
            print_line(f"lost?      {statement_id}  ({status})")


async def _unless_stopped(work: Awaitable[None], stop: asyncio.Event) -> bool:
    """Run ``work`` until it ends or ``stop`` is set (then cancel it); whether it ended."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if task.done():
        task.result()
        return True
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return False


class Roles:
    """The running roles, so they can be stopped in order and their failures surfaced."""

    def __init__(self) -> None:
        self.tasks: dict[str, asyncio.Task[Any]] = {}

    def start(self, name: str, coro: Awaitable[Any]) -> None:
        self.tasks[name] = asyncio.ensure_future(coro)

    async def wait_failure(self) -> None:
        """Return when any role ends on its own (which only an error should cause)."""
        await asyncio.wait(self.tasks.values(), return_when=asyncio.FIRST_COMPLETED)
        for name, task in self.tasks.items():
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.error("role_failed", role=name, error=repr(task.exception()))

    async def stop(self, grace: float = _STOP_GRACE_S) -> None:
        """Wait for the roles to stop on the stop event; cancel those still busy after
        ``grace`` seconds. A role still joining its consumer group (Tansu takes about 5 s)
        only looks at the stop event once it has joined: Ctrl-C must not wait for that, and
        every role is at-least-once, so a cancelled one loses nothing."""
        tasks = list(self.tasks.values())
        if not tasks:
            return
        _, busy = await asyncio.wait(tasks, timeout=grace)
        for task in busy:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def run_up(
    settings: Settings,
    *,
    demo: bool,
    exit_after_demo: bool = False,
    stop: asyncio.Event | None = None,
    print_line: Callable[[str], None] = print,
    broker: Literal["tansu", "kafka"] = "tansu",
) -> None:
    """Run every role until Ctrl-C (or ``stop``).

    ``broker`` picks the broker started here when none is configured: the embedded Tansu
    (its records saved at stop and restored at start, below), or a local Apache Kafka node
    whose data stays under ``<data_dir>/kafka``.

    Raises before starting anything: ``DeliveryConfigError`` for a bad connectors file
    (the message ``adapters`` gives) or one that lacks the demo's connectors, ``UpRefused``
    when another ``up`` runs on the data directory or the API port is taken.
    """
    connectors = load_connectors(settings)  # a bad file fails here
    check_broker_settings(settings)  # and a broker no role can run on, before one starts
    if demo:
        from routing.demo.seed import DEMO_CONNECTORS

        missing = [c for c in DEMO_CONNECTORS if c not in connectors.catalogue]
        if missing:
            raise DeliveryConfigError(
                f"the demo binds IBANs to {' and '.join(DEMO_CONNECTORS)}, but the connectors "
                f"file {settings.connectors_file} does not declare {', '.join(missing)}; add "
                "their tables (config/connectors.default.toml has them) or unset "
                "CONNECTORS_FILE")
    stop = stop or stop_on_signals()
    lock = lock_path(settings.data_dir, demo=demo)
    facts = {
        "data_dir": str((settings.data_dir / "demo" if demo else settings.data_dir).resolve()),
        "api_url": f"http://{settings.api_host}:{settings.api_port}",
        "demo": demo,
    }
    with hold_up_lock(lock, facts) as held:

        def remember(**more: object) -> None:
            """Tell the CLI (through the lock file) what this ``up`` runs."""
            held.update(more)
            save_lock(lock, held)

        problem = api_port_problem(settings.api_host, settings.api_port)
        if problem:
            raise UpRefused(problem)
        await _run_up(
            settings,
            demo=demo,
            exit_after_demo=exit_after_demo,
            stop=stop,
            print_line=print_line,
            config=connectors,
            broker=broker,
            on_broker=lambda address: remember(broker=address),
            on_adapters=lambda used: remember(adapters=used),
        )


async def _run_up(
    settings: Settings,
    *,
    demo: bool,
    exit_after_demo: bool,
    stop: asyncio.Event,
    print_line: Callable[[str], None],
    config: ConnectorsConfig,
    broker: Literal["tansu", "kafka"],
    on_broker: Callable[[str], None],
    on_adapters: Callable[[dict[str, str]], None] = lambda used: None,
) -> None:
    operator_token: str | None = None
    if demo:
        demo_dir = settings.data_dir / "demo"
        shutil.rmtree(demo_dir, ignore_errors=True)
        update: dict[str, object] = {"data_dir": demo_dir, "database_url": ""}
        if not settings.operator_token_sha256:
            operator_token, update["operator_token_sha256"] = _demo_operator_token()
        settings = settings.model_copy(update=update)
    data_dir = settings.data_dir
    configured = config.endpoints
    connectors = catalogue(settings)
    topics = Topics(prefix=settings.topic_prefix, partitions=settings.topic_partitions)

    async with AsyncExitStack() as stack:
        lost_run = False
        if settings.kafka_bootstrap_servers:
            bootstrap = broker_address(settings)
            kind = "configured"
        else:
            if broker == "kafka":
                kafka = LocalKafka(log_dir=data_dir / "kafka")
                await kafka.astart()
                stack.push_async_callback(kafka.astop)
                bootstrap, kind = kafka.bootstrap_servers, f"Apache Kafka {KAFKA_VERSION}"
            else:
                broker_dir = data_dir / "broker"
                # Stopped last, once its records are saved: no need to wait for its own
                # graceful stop, which lingers while a cancelled client's socket stays open.
                tansu = EmbeddedBroker(log_dir=broker_dir, stop_timeout=1.0)
                await tansu.astart()
                stack.push_async_callback(tansu.astop)
                bootstrap, kind = tansu.bootstrap_servers, "embedded Tansu"
                if not demo:  # the demo starts afresh every time: nothing to keep
                    lost_run = await _restore_broker(bootstrap, broker_dir, print_line)
                    stack.push_async_callback(_save_broker, bootstrap, broker_dir, print_line)
        on_broker(bootstrap)
        await ensure_topics(bootstrap, topics.specs(connectors), settings.topic_replication_factor)
        store = await stack.enter_async_context(open_store(settings, connectors=connectors))
        await _rebuild_from_store(store, bootstrap, topics, lost_run, print_line)
        seed = None
        if demo:
            from routing.demo.seed import seed_demo

            seed = await seed_demo(store)

        roles = Roles()
        stack.push_async_callback(roles.stop)
        router_started = asyncio.Event()
        roles.start("relay", run_relay(settings, topics, store, stop, bootstrap_servers=bootstrap))
        roles.start(
            "router",
            run_router(
                settings,
                topics,
                connectors,
                stop,
                bootstrap_servers=bootstrap,
                started=router_started,
            ),
        )
        # What stands in for a partner the connectors file gives no endpoint: the demo's
        # webhook receiver for acd, a directory drop for the others. Made once per
        # connector and kept, so that a reload sees the same endpoint and leaves its
        # worker alone; made when first needed, so that a configured partner gets no
        # empty folder beside its own.
        stand_ins: dict[str, PartnerEndpoint] = {}
        if demo and "acd" not in configured:
            # The demo's acd partner is a real webhook receiver, signatures checked. A
            # CONNECTORS_FILE that configures acd wins: the demo never replaces it.
            secret = new_secret()
            partner_port = _free_port(settings.api_host)
            partner = demo_partner(secret, data_dir / "partners" / "acd", partner_port)
            roles.start("demo-partner", partner.serve())
            stack.callback(lambda: setattr(partner, "should_exit", True))
            stand_ins["acd"] = WebhookEndpoint(
                url=f"http://127.0.0.1:{partner_port}/statements",
                secrets=(SecretStr(secret),),
            )

        def stand_in(connector_id: str) -> PartnerEndpoint:
            if connector_id not in stand_ins:
                stand_ins.update(embedded_endpoints(data_dir, [connector_id]))
            return stand_ins[connector_id]

        def use(endpoints: dict[str, PartnerEndpoint]) -> None:
            """GET /connectors and the CLI's `connectors` report the adapter each connector
            really uses here: the stand-ins for the partners the file does not configure."""
            used = {cid: endpoint.kind for cid, endpoint in endpoints.items()}
            connectors.use_adapters(used)
            on_adapters(dict(used))

        def reloaded(report: ReloadReport, endpoints: dict[str, PartnerEndpoint]) -> None:
            use(endpoints)
            for cid in [*report.added, *report.restarted]:
                change = "added" if cid in report.added else "changed"
                print_line(f"partner    {cid:<10} {_describe(endpoints[cid])}  "
                           f"({_origin(endpoints[cid], stand_ins.get(cid))}; {change})")
            for cid in report.removed:
                print_line(f"partner    {cid:<10} removed from CONNECTORS_FILE")

        adapter_stats: dict[str, ConnectorStats] = {}
        endpoints: dict[str, PartnerEndpoint]
        if settings.connectors_file is not None:
            # The file is followed as `adapters` follows it (adapters/catalogue_reload.py):
            # a partner added, changed or removed while `up` runs, no other worker touched.
            pool = ReloadingAdapters(
                settings, topics, settings.connectors_file, bootstrap_servers=bootstrap,
                stats=adapter_stats, default_endpoint=stand_in, on_reload=reloaded)
            wanted = pool.follow.wanted(config)
            endpoints = {cid: wanted[cid][1] for cid in config.catalogue if cid in wanted}
            roles.start("adapters", run_adapters_role(
                settings, bootstrap, lambda producer: pool.run(stop, producer)))
        else:
            endpoints = {cid: stand_in(cid) for cid in connectors}
            roles.start("adapters", run_adapters_role(
                settings, bootstrap, lambda producer: run_adapters(
                    settings, topics, endpoints, stop, producer=producer,
                    bootstrap_servers=bootstrap, stats=adapter_stats)))
        roles.start(
            "global-file",
            run_global_file_builder(
                settings, topics, store.engine, stop, bootstrap_servers=bootstrap
            ),
        )
        roles.start(
            "ledger", run_ledger(settings, topics, store.engine, stop, bootstrap_servers=bootstrap)
        )
        use(endpoints)
        server = api_server(
            api_app(store, settings, bootstrap_servers=bootstrap, connectors=connectors),
            settings.api_host,
            settings.api_port,
            handle_signals=False,
        )
        roles.start("api", server.serve())
        stack.callback(lambda: setattr(server, "should_exit", True))
        api_url = f"http://{settings.api_host}:{settings.api_port}"

        print_line(f"broker     {bootstrap} ({kind})")
        print_line(f"state      {settings.effective_database_url}")
        if not settings.database_url:
            print_line(f"CLI        DATA_DIR={data_dir.resolve()} statement-router …")
        print_line(f"API        {api_url}  (OpenAPI: {api_url}/docs)")
        for connector_id, endpoint in endpoints.items():
            origin = _origin(endpoint, stand_ins.get(connector_id))
            print_line(f"partner    {connector_id:<10} {_describe(endpoint)}  ({origin})")
        schedule = RetrySchedule.from_settings(settings)
        print_line(
            f"retries    {schedule.max_attempts} attempts, waits up to "
            f"{schedule.base_seconds:g} s doubling to {schedule.max_seconds:g} s, then the DLQ "
            "(DELIVERY_* settings)"
        )
        print_line(f"global     {api_url}/cabinets/<cabinet>/global-file?from=…&to=…")
        print_line(f"console    {api_url}/console  (operators: {api_url}/console/ops)")
        if seed is not None:
            from routing.demo.feed import run_demo

            print_line(f"demo admin token        {seed.admin_token}")
            print_line(f"demo collaborator token {seed.collaborator_token}")
            if operator_token is not None:
                print_line(f"demo operator token     {operator_token}  ({api_url}/ops, "
                           f"{api_url}/console/ops)")
            else:
                print_line("demo operator token     yours: OPERATOR_TOKEN_SHA256 is set")

            async def demo_run() -> None:
                await asyncio.wait_for(router_started.wait(), timeout=60)
                await run_demo(
                    store,
                    seed,
                    bootstrap,
                    topics,
                    print_line,
                    stop,
                    api_url=api_url,
                    download_dir=data_dir,
                    deliveries=lambda: {c: st.delivered for c, st in adapter_stats.items()},
                )

            if not await _unless_stopped(demo_run(), stop):
                print_line("demo interrupted")
            if exit_after_demo:
                stop.set()
        if not stop.is_set():
            print_line("running; Ctrl-C stops everything")
        waiter = asyncio.ensure_future(stop.wait())
        failure = asyncio.ensure_future(roles.wait_failure())
        await asyncio.wait({waiter, failure}, return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        for task in (waiter, failure):
            task.cancel()
        print_line("stopping")
