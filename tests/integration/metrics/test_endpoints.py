"""Where the metrics are served: the API's /metrics route, and the stand-alone server of
the roles without an API (started from the settings, stopped without leaving anything)."""

from __future__ import annotations

from typing import Any, cast

import httpx
import pytest

from config.settings import Settings
from routing.entrypoints.bootstrap import api_app
from routing.observability.metrics import count_routed
from routing.observability.metrics_http import metrics_endpoint
from routing.store.migrate import upgrade
from routing.store.sql import SqlStateStore

from .scrape import moved, parse, scrape


async def test_the_api_serves_metrics_without_a_token_and_outside_its_schema(
    sqlite_url: str,
) -> None:
    await upgrade(sqlite_url)
    store = SqlStateStore.from_url(sqlite_url)
    try:
        app = api_app(store, Settings(), bootstrap_servers=None)
        transport = httpx.ASGITransport(app=cast(Any, app))
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            before = parse((await client.get("/metrics")).text)
            count_routed("global-file", "unbound", None)
            response = await client.get("/metrics")
            schema = (await client.get("/openapi.json")).json()
    finally:
        await store.close()
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    after = parse(response.text)
    assert moved(before, after, "statement_router_routed_total", destination="global-file",
                 reason="unbound", connector="") == 1
    assert after.value("process_resident_memory_bytes") > 0
    assert "/metrics" not in schema["paths"]


async def test_a_role_serves_metrics_on_the_configured_port_until_it_stops() -> None:
    settings = Settings(metrics_host="127.0.0.1", metrics_port=0)
    async with metrics_endpoint(settings) as server:
        assert server is not None and server.host == "127.0.0.1" and server.port > 0
        before = await scrape(server.url)
        count_routed("held", "unknown_iban", None)
        after = await scrape(server.url)
        async with httpx.AsyncClient() as client:
            health = await client.get(server.url.replace("/metrics", "/healthz"))
            missing = await client.get(server.url.replace("/metrics", "/nothing"))
        url = server.url
    assert moved(before, after, "statement_router_routed_total", destination="held",
                 reason="unknown_iban", connector="") == 1
    assert health.status_code == 200 and missing.status_code == 404
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as client:
            await client.get(url)
