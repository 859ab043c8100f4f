"""``/docs`` and ``/redoc`` in Debian's Chromium with no network beyond 127.0.0.1.

FastAPI's pages loaded Swagger UI and ReDoc from a CDN, so offline they were blank. Every
request the page makes is routed through the test: one to any other host is aborted and
recorded, and the test fails on it; the pages must still render every operation of the
schema from the assets the application serves (``routing/entrypoints/api/docs.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import Page, Route, expect

from config.catalogue import default_catalogue
from events.topics import Topics
from routing.entrypoints.api.app import create_app
from routing.entrypoints.api.ops import ops_router
from routing.store.global_file import SqlGlobalFileStore
from routing.store.ledger import SqlDeliveryLedger
from routing.store.migrate import upgrade
from routing.store.sql import SqlStateStore
from tests.e2e.console.conftest import ServeApp

NewPage = Callable[..., Awaitable[Page]]


@dataclass
class Offline:
    """A page whose requests may only go to 127.0.0.1; the others are kept, aborted."""

    page: Page
    refused: list[str] = field(default_factory=list)
    served: list[str] = field(default_factory=list)


@pytest.fixture
async def api_url(sqlite_url: str, serve: ServeApp) -> AsyncIterator[str]:
    await upgrade(sqlite_url)
    store = SqlStateStore.from_url(sqlite_url)
    try:
        catalogue = default_catalogue()
        app = create_app(
            store,
            catalogue,
            global_file=SqlGlobalFileStore(store.engine),
            ledger=SqlDeliveryLedger(store.engine),
            ops=ops_router(
                Topics("docs"), catalogue, bootstrap_servers=None, operator_token_sha256=None
            ),
        )
        yield (await serve(app)).url
    finally:
        await store.close()


@pytest.fixture
async def offline(new_page: NewPage) -> Offline:
    page = await new_page()
    state = Offline(page)

    async def only_loopback(route: Route) -> None:
        url = route.request.url
        if urlsplit(url).hostname == "127.0.0.1":
            state.served.append(url)
            await route.continue_()
        else:
            state.refused.append(url)
            await route.abort("internetdisconnected")

    await page.context.route("**/*", only_loopback)
    return state


async def operation_count(url: str) -> int:
    async with httpx.AsyncClient() as client:
        paths = (await client.get(f"{url}/openapi.json")).json()["paths"]
    return sum(len(item) for item in paths.values())


async def test_swagger_ui_renders_every_operation_offline(api_url: str, offline: Offline) -> None:
    expected = await operation_count(api_url)
    page = offline.page
    await page.goto(f"{api_url}/docs")
    operations = page.locator(".opblock")
    await expect(operations).to_have_count(expected)
    await expect(
        page.locator(".opblock-summary-path", has_text="/ibans/{iban}/diagnosis")
    ).to_be_visible()
    await expect(page.locator(".info .title")).to_contain_text("statement-router")
    assert offline.refused == []
    assert f"{api_url}/docs/assets/swagger-ui/swagger-ui-bundle.js" in offline.served
    assert f"{api_url}/docs/assets/swagger-ui/swagger-ui.css" in offline.served


async def test_redoc_renders_every_operation_offline(api_url: str, offline: Offline) -> None:
    expected = await operation_count(api_url)
    page = offline.page
    await page.goto(f"{api_url}/redoc")
    operations = page.locator("[data-section-id^='operation/']")
    await expect(operations).to_have_count(expected, timeout=20_000)
    await expect(page.get_by_text("statement-router").first).to_be_visible()
    assert offline.refused == []
    assert f"{api_url}/docs/assets/redoc/redoc.standalone.js" in offline.served


async def test_the_assets_are_the_packaged_files(api_url: str) -> None:
    async with httpx.AsyncClient() as client:
        bundle = await client.get(f"{api_url}/docs/assets/swagger-ui/swagger-ui-bundle.js")
        licence = await client.get(f"{api_url}/docs/assets/swagger-ui/LICENSE")
        docs = await client.get(f"{api_url}/docs")
    assert bundle.status_code == 200
    assert "javascript" in bundle.headers["content-type"]
    assert "Apache License" in licence.text
    assert "cdn.jsdelivr.net" not in docs.text and "fastapi.tiangolo.com" not in docs.text
