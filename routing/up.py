"""``statement-router up``: the whole system in one process, for this machine.

It starts a broker of its own unless ``KAFKA_BOOTSTRAP_SERVERS`` is set (the embedded
Tansu by default, or Apache Kafka itself with ``--broker kafka``), creates the topics, and
runs the API, the outbox relay, the router and the embedded sinks (a directory drop per
connector, a global-file folder per cabinet) until Ctrl-C. ``--demo`` seeds a
fresh demo state, feeds the sample bank files through the real topics and reports where
each statement went and why.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any, Literal

import structlog
from pydantic import SecretStr

from adapters.backoff import RetrySchedule
from adapters.delivery import DirectoryEndpoint, PartnerEndpoint, WebhookEndpoint
from adapters.endpoints import embedded_endpoints, load_endpoints
from adapters.global_file import run_global_file_builder
from adapters.worker import ConnectorStats, run_adapters
from config.settings import Settings
from events.topics import Topics
from routing.bootstrap import catalogue, open_store
from routing.broker import EmbeddedBroker, ensure_topics, make_producer
from routing.broker.kafka_local import KAFKA_VERSION, LocalKafka
from routing.broker.process import BrokerProcess
from routing.demo_partner import demo_partner, new_secret
from routing.ledger import run_ledger
from routing.relay import OutboxRelay
from routing.router import run_router
from routing.runtime import stop_on_signals
from routing.serve import api_server

log = structlog.get_logger(__name__)


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


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


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

    async def stop(self) -> None:
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)


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
    (memory only), or a local Apache Kafka node whose data stays under ``<data_dir>/kafka``.
    """
    stop = stop or stop_on_signals()
    if demo:
        demo_dir = settings.data_dir / "demo"
        shutil.rmtree(demo_dir, ignore_errors=True)
        settings = settings.model_copy(update={"data_dir": demo_dir, "database_url": ""})
    data_dir = settings.data_dir
    connectors = catalogue(settings)
    topics = Topics(prefix=settings.topic_prefix, partitions=settings.topic_partitions)

    async with AsyncExitStack() as stack:
        if settings.kafka_bootstrap_servers:
            bootstrap = settings.kafka_bootstrap_servers
            kind = "configured"
        else:
            local: BrokerProcess
            if broker == "kafka":
                local = LocalKafka(log_dir=data_dir / "kafka")
                kind = f"Apache Kafka {KAFKA_VERSION}"
            else:
                local, kind = EmbeddedBroker(log_dir=data_dir / "broker"), "embedded Tansu"
            await local.astart()
            stack.push_async_callback(local.astop)
            bootstrap = local.bootstrap_servers
        await ensure_topics(bootstrap, topics.specs(connectors), settings.topic_replication_factor)
        store = await stack.enter_async_context(open_store(settings))
        seed = None
        if demo:
            from routing.demo import seed_demo

            seed = await seed_demo(store)

        producer = make_producer(settings, bootstrap_servers=bootstrap, client_id="relay")
        await producer.start()
        stack.push_async_callback(producer.stop)

        roles = Roles()
        stack.push_async_callback(roles.stop)
        router_started = asyncio.Event()
        roles.start("relay", OutboxRelay(store, producer, topics).run(stop))
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
        endpoints: dict[str, PartnerEndpoint] = embedded_endpoints(data_dir, connectors)
        endpoints.update(load_endpoints(settings, connectors))
        if demo:
            # The demo's acd partner is a real webhook receiver, signatures checked.
            secret = new_secret()
            partner_port = _free_port(settings.api_host)
            partner = demo_partner(secret, data_dir / "partners" / "acd-webhook", partner_port)
            roles.start("demo-partner", partner.serve())
            stack.callback(lambda: setattr(partner, "should_exit", True))
            endpoints["acd"] = WebhookEndpoint(
                url=f"http://127.0.0.1:{partner_port}/statements",
                secrets=(SecretStr(secret),),
            )
        adapter_stats: dict[str, ConnectorStats] = {}
        roles.start(
            "adapters",
            run_adapters(
                settings,
                topics,
                endpoints,
                stop,
                bootstrap_servers=bootstrap,
                stats=adapter_stats,
                schedule=RetrySchedule.short() if demo else None,
            ),
        )
        roles.start(
            "global-file",
            run_global_file_builder(
                settings, topics, store.engine, stop, bootstrap_servers=bootstrap
            ),
        )
        roles.start(
            "ledger", run_ledger(settings, topics, store.engine, stop, bootstrap_servers=bootstrap)
        )
        api_url = "(not started: port busy)"
        if _port_free(settings.api_host, settings.api_port):
            server = api_server(
                store, settings, settings.api_host, settings.api_port, bootstrap_servers=bootstrap
            )
            roles.start("api", server.serve())
            stack.callback(lambda: setattr(server, "should_exit", True))
            api_url = f"http://{settings.api_host}:{settings.api_port}"
        else:
            log.warning("api_port_busy", host=settings.api_host, port=settings.api_port)

        print_line(f"broker     {bootstrap} ({kind})")
        print_line(f"state      {settings.effective_database_url}")
        print_line(f"API        {api_url}  (OpenAPI: {api_url}/docs)")
        for connector_id, endpoint in endpoints.items():
            print_line(f"partner    {connector_id:<10} {_describe(endpoint)}")
        print_line(f"global     {api_url}/cabinets/<cabinet>/global-file?from=…&to=…")
        print_line(f"console    {api_url}/console  (operators: {api_url}/console/ops)")
        if seed is not None:
            from routing.demo_feed import run_demo

            print_line(f"demo admin token        {seed.admin_token}")
            print_line(f"demo collaborator token {seed.collaborator_token}")
            await asyncio.wait_for(router_started.wait(), timeout=60)
            await run_demo(
                store,
                seed,
                bootstrap,
                topics,
                print_line,
                stop,
                api_url=api_url if api_url.startswith("http") else None,
                download_dir=data_dir,
                deliveries=lambda: {c: st.delivered for c, st in adapter_stats.items()},
            )
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
