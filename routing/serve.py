"""Serving the HTTP API inside an asyncio program (``api`` and ``up`` commands)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import uvicorn

from config.catalogue import Catalogue
from config.settings import Settings
from events.topics import Topics
from routing.api.app import create_app
from routing.api.ops import ops_router
from routing.bootstrap import catalogue as connector_catalogue
from routing.bootstrap import (
    delivery_ledger,
    global_file_store,
    open_store,
    store_unavailable_errors,
)
from routing.console.app import mount_console
from routing.console.ops import OpsConsole
from routing.metrics_http import add_metrics_route
from routing.monitor import serve_lag_metrics
from routing.store.sql import SqlStateStore


class _SignalFreeServer(uvicorn.Server):
    """A uvicorn server that leaves SIGINT and SIGTERM to its caller.

    uvicorn's ``serve()`` replaces the process's signal handlers with its own, stops the
    API alone on Ctrl-C and raises the signal again once it has stopped. Inside ``up`` that
    stole Ctrl-C from the stop event every other role waits on: the API went first, the
    demo's requests failed with tracebacks, and the process died of the re-raised signal.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def api_server(
    store: SqlStateStore,
    settings: Settings,
    host: str,
    port: int,
    *,
    bootstrap_servers: str | None = None,
    handle_signals: bool = True,
    catalogue: Catalogue | None = None,
) -> uvicorn.Server:
    """A uvicorn server for the API over ``store``; the caller runs ``serve()``.

    ``handle_signals=False``: the caller stops it (``should_exit``) on its own stop event.
    ``catalogue``: the connectors to serve (default: ``CONNECTORS_FILE``'s, kept current
    as the file changes, so a connector added to it can be bound without a restart).
    """
    connectors = catalogue if catalogue is not None else connector_catalogue(settings)
    topics = Topics(settings.topic_prefix, settings.topic_partitions)
    servers = bootstrap_servers or settings.kafka_bootstrap_servers
    # One monitor for /ops/topics, /ops/lag, the console's overview and /metrics' lag.
    monitor = serve_lag_metrics(servers, topics, connectors)
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
            bootstrap_servers=servers,
            operator_token_sha256=settings.operator_token_sha256,
            monitor=monitor,
        ),
    )
    mount_console(
        app, store, connectors, global_file=global_file, ledger=ledger,
        ops=OpsConsole(topics, connectors, servers, settings.operator_token_sha256, monitor),
    )
    # The API process's metrics (in `up`, every role's): Prometheus scrapes the API port.
    add_metrics_route(app)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        server_header=False,
        lifespan="off",
    )
    return uvicorn.Server(config) if handle_signals else _SignalFreeServer(config)


async def serve_api(
    settings: Settings, host: str, port: int, stop: asyncio.Event | None = None
) -> None:
    """Serve until interrupted (or until ``stop`` is set)."""
    connectors = connector_catalogue(settings)
    async with open_store(settings, connectors=connectors) as store:
        server = api_server(store, settings, host, port, catalogue=connectors)
        if stop is None:
            await server.serve()
            return
        task = asyncio.create_task(server.serve())
        stopped = asyncio.create_task(stop.wait())
        try:
            # A server that ends on its own (its port is taken) must not leave us waiting.
            await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
        server.should_exit = True
        await task
