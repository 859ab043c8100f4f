"""The composition root: the one place that reads the settings and wires every role.

The ledger, the global-file builder, the relay, the router, the adapters and the API
receive what they work with (a store, a started producer, a started consumer, a built app)
from here; the functions here pick the concrete adapters, resolve the Kafka address once
(``broker_address``) and hand them over. The CLI commands and ``up`` call these, then the
runners. Clients whose number is only known at run time (a consumer per connector, the
router's producer per input partition under exactly-once) are made inside their role by
the role's factory, from the address and settings given here.

Nothing in the code base connects at import time; commands call these builders. The
stores (SQLAlchemy, Alembic), aiokafka and FastAPI are imported by the builders that use
them, so reading the catalogue costs a CLI command none of that (docs/performance.md,
CLI start-up).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, TypeVar

from config.catalogue import Catalogue
from config.errors import ConfigError
from routing.ports import DeliveryLedger, GlobalFileStore

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer
    from fastapi import FastAPI
    from sqlalchemy.ext.asyncio import AsyncEngine

    from config.settings import Settings
    from events.topics import Topics
    from routing.broker.consumer import BatchHandler, ConsumerRole
    from routing.router.app import RouterTuning
    from routing.store.sql import SqlStateStore


T = TypeVar("T")

def catalogue(settings: Settings) -> Catalogue:
    """The connectors this deployment knows: those ``CONNECTORS_FILE`` declares (the
    shipped catalogue without it), kept current as the file changes.

    Raises ``CatalogueError`` when the file does not declare a valid catalogue. Every role
    reads the same file, so a binding the API accepts names a connector the router and
    the adapters know too.
    """
    return Catalogue.from_file(settings.connectors_file)


# --- the broker ---------------------------------------------------------------------------


def check_broker_settings(settings: Settings) -> None:
    """Refuse, before any broker starts, a broker configuration no role can run on.

    ``KAFKA_EXACTLY_ONCE`` needs idempotent and transactional producers, which the embedded
    Tansu broker lacks (``InitProducerId`` fails, DESIGN §6): said here rather than as an
    obscure error from the first producer.
    """
    if settings.kafka_exactly_once and settings.embedded_broker:
        raise ConfigError(
            "kafka_exactly_once needs a real Kafka: the embedded Tansu broker has no "
            "idempotent or transactional producer; unset KAFKA_EXACTLY_ONCE or set "
            "KAFKA_BOOTSTRAP_SERVERS"
        )


def broker_address(settings: Settings, given: str | None = None) -> str:
    """The Kafka bootstrap servers every client of this process uses, resolved once.

    ``given``: an address the command knows better (``--bootstrap``, the broker ``up``
    started, the running ``up``'s broker); else ``KAFKA_BOOTSTRAP_SERVERS``. Raises
    ``ConfigError`` when there is none, or when the settings ask what the broker cannot do.
    """
    check_broker_settings(settings)
    servers = given or settings.kafka_bootstrap_servers
    if not servers:
        raise ConfigError(
            "no Kafka bootstrap servers: KAFKA_BOOTSTRAP_SERVERS is not set (embedded mode), "
            "so pass the embedded broker's address"
        )
    return servers


@asynccontextmanager
async def started_producer(
    settings: Settings, bootstrap_servers: str, client_id: str
) -> AsyncIterator[AIOKafkaProducer]:
    """A started producer with the pipeline's settings (``make_producer``); stopped on exit.

    A broker out of reach at start is a ``BrokerUnavailable`` naming the role's client, so
    every command maps it to one line and exit 8.
    """
    from routing.broker.errors import kafka_errors
    from routing.broker.producer import ProducerParams, make_producer

    producer = make_producer(
        ProducerParams.from_settings(
            settings, bootstrap_servers=bootstrap_servers, client_id=client_id
        )
    )
    try:
        async with kafka_errors(f"starting the {client_id} producer", bootstrap_servers):
            await producer.start()
        yield producer
    finally:
        await producer.stop()


async def run_adapters_role(
    settings: Settings,
    bootstrap_servers: str,
    runner: Callable[[AIOKafkaProducer], Awaitable[T]],
) -> T:
    """Run the adapters role: ``runner`` (``run_adapters`` or ``ReloadingAdapters.run``)
    receives the process's one started producer, which every connector's worker shares
    (outcomes, dead letters, control states), and which is stopped when the role ends."""
    async with started_producer(settings, bootstrap_servers, "adapters") as producer:
        return await runner(producer)


# --- the state store ----------------------------------------------------------------------


def store_unavailable_errors() -> tuple[type[Exception], ...]:
    """Errors that mean the store is out of reach (API: 503; CLI: exit 8)."""
    from routing.store.errors import StoreError

    return (StoreError,)


@asynccontextmanager
async def open_store(
    settings: Settings, *, migrate: bool | None = None, connectors: Catalogue | None = None
) -> AsyncIterator[SqlStateStore]:
    """Open the state store. The embedded SQLite database is migrated on first use, so the
    embedded mode needs no setup; PostgreSQL is migrated only by ``db upgrade``.
    """
    from routing.store.engine import create_store_engine
    from routing.store.migrate import upgrade
    from routing.store.sql import SqlStateStore

    url = settings.effective_database_url
    if migrate if migrate is not None else not settings.database_url:
        await upgrade(url)
    engine = create_store_engine(url)
    # ``connectors``: the API's own catalogue, so a binding and GET /connectors never see
    # two versions of the file.
    store = SqlStateStore(
        engine, catalogue=connectors if connectors is not None else catalogue(settings))
    try:
        yield store
    finally:
        await store.close()


def global_file_store(store: SqlStateStore) -> GlobalFileStore:
    """The cabinets' global files, on the state store's database (engine shared)."""
    from routing.store.global_file import SqlGlobalFileStore

    return SqlGlobalFileStore(store.engine)


def delivery_ledger(store: SqlStateStore) -> DeliveryLedger:
    """The delivery ledger, on the state store's database (engine shared)."""
    from routing.store.ledger import SqlDeliveryLedger

    return SqlDeliveryLedger(store.engine)


# --- the roles ----------------------------------------------------------------------------


async def _run_batch_writer(
    settings: Settings,
    role: ConsumerRole,
    handler_on: Callable[[AsyncEngine, AIOKafkaProducer], BatchHandler],
    store_url_or_engine: str | AsyncEngine,
    stop: asyncio.Event,
    bootstrap_servers: str,
    started: asyncio.Event | None,
) -> dict[str, int]:
    """The ledger's and the global-file builder's one shape: an engine, a producer for the
    records they park, and a committing consumer of their topic, handed to the handler."""
    from routing.broker.consumer import committing_consumer, run_committing
    from routing.services.backoff import RetrySchedule
    from routing.store.engine import engine_for

    # A database or broker outage: the batch is retried, 0.2 s doubling to 10 s, jittered.
    retry = RetrySchedule(base_seconds=0.2, max_seconds=10.0)

    async with (
        engine_for(store_url_or_engine) as engine,
        started_producer(settings, bootstrap_servers, role.client_id) as producer,
        committing_consumer(
            bootstrap_servers, role.topic, role.group, role.client_id,
            fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        ) as consumer,
    ):
        handler = handler_on(engine, producer)
        return await run_committing(
            role, consumer, handler, stop, retry_delay=retry.delay, started=started
        )


async def run_ledger(
    settings: Settings,
    topics: Topics,
    store_url_or_engine: str | AsyncEngine,
    stop: asyncio.Event,
    *,
    bootstrap_servers: str,
    started: asyncio.Event | None = None,
) -> dict[str, int]:
    """Run the delivery ledger (``routing.services.ledger``) until ``stop`` is set; its counters.

    ``store_url_or_engine``: an engine to share (left open), or a URL (an engine is made
    and disposed of). The schema must exist. ``started`` is set once the consumer runs.
    Counters: records read, recorded, duplicates ignored, invalid.
    """
    from routing.services.ledger import LedgerConsumer, ledger_role
    from routing.store.ledger import SqlDeliveryLedger

    return await _run_batch_writer(
        settings,
        ledger_role(topics),
        lambda engine, producer: LedgerConsumer(
            SqlDeliveryLedger(engine), producer, topics, engine
        ),
        store_url_or_engine, stop, bootstrap_servers, started,
    )


async def run_global_file_builder(
    settings: Settings,
    topics: Topics,
    store_url_or_engine: str | AsyncEngine,
    stop: asyncio.Event,
    *,
    bootstrap_servers: str,
    started: asyncio.Event | None = None,
) -> dict[str, int]:
    """Run the global-file builder (``adapters.global_file``) until ``stop`` is set.

    As ``run_ledger``. Counters: records read, stored, duplicates ignored, invalid.
    """
    from adapters.global_file import GlobalFileBuilder, global_file_role
    from routing.store.global_file import SqlGlobalFileStore

    return await _run_batch_writer(
        settings,
        global_file_role(topics),
        lambda engine, producer: GlobalFileBuilder(
            SqlGlobalFileStore(engine), producer, topics, engine
        ),
        store_url_or_engine, stop, bootstrap_servers, started,
    )


async def run_relay(
    settings: Settings,
    topics: Topics,
    store: SqlStateStore,
    stop: asyncio.Event,
    *,
    bootstrap_servers: str,
) -> None:
    """Run the outbox relay (``routing.services.relay``) on ``store`` until ``stop`` is set."""
    from routing.services.relay import OutboxRelay

    async with started_producer(settings, bootstrap_servers, "relay") as producer:
        await OutboxRelay(store, producer, topics).run(stop)


async def run_router(
    settings: Settings,
    topics: Topics,
    connectors: Mapping[str, object],
    stop: asyncio.Event,
    *,
    bootstrap_servers: str,
    app_id: str | None = None,
    tuning: RouterTuning | None = None,
    started: asyncio.Event | None = None,
) -> dict[str, int]:
    """Build one router worker (``create_router_app``) and run it until ``stop`` is set.

    Returns its counters; raises ``RouterCrashed`` as ``routing.router.serve_router``.
    """
    from routing.router import create_router_app, serve_router

    router = create_router_app(
        settings, topics, connectors,
        bootstrap_servers=bootstrap_servers, app_id=app_id, tuning=tuning,
    )
    return await serve_router(
        router, connectors, topics, stop, bootstrap_servers=bootstrap_servers, started=started
    )


def api_app(
    store: SqlStateStore,
    settings: Settings,
    *,
    bootstrap_servers: str | None,
    connectors: Catalogue | None = None,
) -> FastAPI:
    """The API (and the consoles, ``/ops`` and ``/metrics``) over ``store``.

    ``bootstrap_servers`` None: this API process knows no broker, and ``/ops`` answers
    503. ``connectors``: the catalogue to serve (default: ``CONNECTORS_FILE``'s, kept
    current as the file changes, so a connector added to it can be bound without a
    restart).
    """
    from events.topics import Topics
    from routing.entrypoints.api.app import create_app
    from routing.entrypoints.api.ops import ops_router
    from routing.entrypoints.console.app import mount_console
    from routing.entrypoints.console.ops import OpsConsole
    from routing.observability.metrics_http import add_metrics_route
    from routing.observability.monitor.collector import serve_lag_metrics
    from routing.store.ledger import SqlDeliveryLedger

    connectors = connectors if connectors is not None else catalogue(settings)
    topics = Topics(settings.topic_prefix, settings.topic_partitions)
    # One monitor for /ops/topics, /ops/lag, the console's overview and /metrics' lag;
    # the open dead letters come from the delivery ledger (one SQL query a refresh).
    monitor = serve_lag_metrics(
        bootstrap_servers, topics, connectors, ledger=SqlDeliveryLedger(store.engine)
    )
    global_file, ledger = global_file_store(store), delivery_ledger(store)
    app = create_app(
        store,
        connectors,
        unavailable=store_unavailable_errors(),
        global_file=global_file,
        ledger=ledger,
        ops=ops_router(
            topics,
            connectors,
            bootstrap_servers=bootstrap_servers,
            operator_token_sha256=settings.operator_token_sha256,
            monitor=monitor,
        ),
    )
    mount_console(
        app, store, connectors, global_file=global_file, ledger=ledger,
        ops=OpsConsole(
            topics, connectors, bootstrap_servers, settings.operator_token_sha256, monitor
        ),
    )
    # The API process's metrics (in `up`, every role's): Prometheus scrapes the API port.
    add_metrics_route(app)
    return app
