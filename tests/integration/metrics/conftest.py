"""A real stand-alone metrics server per test, on a free loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from routing.observability.metrics_http import start_metrics_server


@pytest.fixture
async def metrics_url() -> AsyncIterator[str]:
    server = await start_metrics_server("127.0.0.1", 0)
    try:
        yield server.url
    finally:
        await server.stop()
