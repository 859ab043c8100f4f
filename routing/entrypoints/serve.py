"""Serving the HTTP API inside an asyncio program (``api`` and ``up`` commands)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import uvicorn

from config.settings import Settings
from routing.entrypoints.bootstrap import api_app, open_store
from routing.entrypoints.bootstrap import catalogue as connector_catalogue

if TYPE_CHECKING:
    from fastapi import FastAPI


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
    app: FastAPI, host: str, port: int, *, handle_signals: bool = True
) -> uvicorn.Server:
    """A uvicorn server for ``app`` (``routing.entrypoints.bootstrap.api_app``); the caller runs
    ``serve()``.

    ``handle_signals=False``: the caller stops it (``should_exit``) on its own stop event.
    """
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
        app = api_app(
            store,
            settings,
            # An API without KAFKA_BOOTSTRAP_SERVERS serves all but /ops (503 there).
            bootstrap_servers=settings.kafka_bootstrap_servers,
            connectors=connectors,
        )
        server = api_server(app, host, port)
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
