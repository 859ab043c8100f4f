"""Serving the metrics over HTTP: ``GET /metrics`` on the API, or a small stand-alone
server for the roles without an API (see ``routing.observability.metrics`` for what is served and
why
it carries nothing personal)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog
from prometheus_client import CONTENT_TYPE_LATEST

from routing.observability.metrics import render

if TYPE_CHECKING:
    from aiohttp import web
    from fastapi import FastAPI

    from config.settings import Settings

log = structlog.get_logger(__name__)


def add_metrics_route(app: FastAPI) -> None:
    """``GET /metrics`` on the API, without authentication (Prometheus scrapes it as is;
    nothing personal is in it, see the module docstring), and out of the OpenAPI schema.

    A plain ``def`` handler on purpose: FastAPI runs it in its thread pool, so a registered
    collector that does blocking work never stalls the event loop (the monitor's
    consumer-lag collector reads its last snapshot and refreshes in the background, and
    is safe to call from that thread).
    """
    from fastapi import Response

    def metrics() -> Response:
        return Response(content=render(), media_type=CONTENT_TYPE_LATEST)

    app.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)


@dataclass
class MetricsServer:
    """A running stand-alone ``/metrics`` server; ``await stop()`` closes it."""

    host: str
    port: int
    _runner: web.AppRunner

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    async def stop(self) -> None:
        await self._runner.cleanup()


async def start_metrics_server(host: str = "127.0.0.1", port: int = 0) -> MetricsServer:
    """Serve ``/metrics`` (and ``/healthz``) on ``host:port``; port 0 picks a free one.

    An aiohttp server in the running loop (aiohttp comes with faust): unlike
    prometheus_client's ``start_http_server`` it leaves no daemon thread behind and stops
    with ``await server.stop()``; unlike uvicorn it does not take over the process's
    signal handlers, which the roles use to shut down cleanly.
    """
    from aiohttp import web

    async def metrics(_: web.Request) -> web.Response:
        body = await asyncio.to_thread(render)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0][1]
    log.info("metrics_serving", host=host, port=bound, path="/metrics")
    return MetricsServer(host, int(bound), runner)


@contextlib.asynccontextmanager
async def metrics_endpoint(settings: Settings) -> AsyncIterator[MetricsServer | None]:
    """For a role without an HTTP API: serve ``/metrics`` while the block runs, on
    ``METRICS_HOST:METRICS_PORT``; nothing (``None``) when ``METRICS_PORT`` is unset."""
    if settings.metrics_port is None:
        yield None
        return
    server = await start_metrics_server(settings.metrics_host, settings.metrics_port)
    try:
        yield server
    finally:
        await server.stop()
