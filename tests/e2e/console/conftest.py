"""The console under a real browser: the API app with its console, served by uvicorn on a
free loopback port in the test's loop, and Debian's chromium driven by Playwright.

Chromium comes from apt (``/usr/bin/chromium``), never from ``playwright install``.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from playwright.async_api import Browser, Page, async_playwright

from tests.eventually import eventually

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[3] / "docs" / "console"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Served:
    url: str


ServeApp = Callable[[FastAPI], Awaitable[Served]]


@pytest.fixture
async def serve() -> AsyncIterator[ServeApp]:
    """Serve apps with uvicorn on 127.0.0.1; every server stops at teardown."""
    servers: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []

    async def start(app: FastAPI) -> Served:
        port = free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="off"
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        servers.append((server, task))
        await eventually(lambda: server.started, "uvicorn to start", within=5, interval=0.025)
        return Served(f"http://127.0.0.1:{port}")

    try:
        yield start
    finally:
        for server, task in servers:
            server.should_exit = True
            await task


def chromium_executable() -> str:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing: apt-get install -y chromium (see .ci/run)")
    return str(CHROMIUM)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    executable = chromium_executable()
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox"]
        )
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
async def new_page(browser: Browser) -> AsyncIterator[Callable[..., Awaitable[Page]]]:
    """Fresh browser contexts (separate cookie jars), closed at teardown."""
    contexts: list[Any] = []

    async def make(**kwargs: Any) -> Page:
        context = await browser.new_context(
            accept_downloads=True, locale="fr-FR", viewport={"width": 1200, "height": 800}, **kwargs
        )
        contexts.append(context)
        return await context.new_page()

    try:
        yield make
    finally:
        for context in contexts:
            await context.close()


async def screenshot(page: Page, name: str) -> None:
    """A PNG of the page; kept in docs/console/ (the README shows one) only with
    ``UPDATE_CONSOLE_SCREENSHOTS=1``, so an ordinary test run leaves the checkout clean."""
    png = await page.screenshot(full_page=True)
    assert png.startswith(b"\x89PNG")
    if os.environ.get("UPDATE_CONSOLE_SCREENSHOTS") == "1":
        await asyncio.to_thread((SCREENSHOTS / f"{name}.png").write_bytes, png)
