"""The operators' console in a real browser, on the real pipeline pieces: the session
broker (Tansu and Apache Kafka), the adapter workers and a real webhook receiver that
refuses a statement for good
(400: a dead letter) and then recovers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.async_api import Page, expect

from config.catalogue import default_catalogue
from config.settings import Settings
from events.topics import Topics
from routing.broker import EmbeddedBroker
from routing.domain.model import Profile
from routing.entrypoints.api.app import create_app
from routing.entrypoints.api.ops import new_operator_token, ops_router
from routing.entrypoints.bootstrap import delivery_ledger, global_file_store, run_ledger
from routing.entrypoints.console.app import mount_console
from routing.entrypoints.console.ops import OpsConsole
from routing.store.migrate import upgrade
from routing.store.sql import SqlStateStore
from tests.e2e.console.conftest import ServeApp, screenshot
from tests.eventually import eventually
from tests.integration.global_file.factories import entry, iban
from tests.integration.worker.conftest import produce, running, webhook
from tests.integration.worker.receiver import Reply, WebhookReceiver
from tests.unit.delivery.factories import make_delivery

NewPage = Callable[..., Awaitable[Page]]


@dataclass
class OpsConsoleServed:
    url: str
    operator_token: str
    user_token: str


@pytest.fixture
async def ops_console(
    sqlite_url: str,
    make_store: Callable[..., SqlStateStore],
    serve: ServeApp,
    kafka_broker: EmbeddedBroker,
    topics: Topics,
    tmp_path: Path,
) -> AsyncIterator[OpsConsoleServed]:
    await upgrade(sqlite_url)
    store = make_store(sqlite_url)
    await store.create_cabinet("cab-1", "Cabinet 1")
    user = await store.create_user("cab-1", Profile.ADMINISTRATEUR)
    token, digest = new_operator_token()
    catalogue = default_catalogue()
    servers = kafka_broker.bootstrap_servers
    files, ledger = global_file_store(store), delivery_ledger(store)
    app = create_app(
        store,
        catalogue,
        global_file=files,
        ledger=ledger,
        ops=ops_router(topics, catalogue, bootstrap_servers=servers, operator_token_sha256=digest),
    )
    console = OpsConsole(topics, catalogue, servers, digest)
    mount_console(app, store, catalogue, global_file=files, ledger=ledger, ops=console)
    served = await serve(app)
    # The real ledger consumer records the outcomes the overview and the search read.
    stop = asyncio.Event()
    recorder = asyncio.create_task(
        run_ledger(
            Settings(data_dir=tmp_path), topics, store.engine, stop, bootstrap_servers=servers
        )
    )
    try:
        yield OpsConsoleServed(served.url, token, user.token)
    finally:
        stop.set()
        await asyncio.wait_for(recorder, 60)
        if console.monitor is not None:
            await console.monitor.aclose()


async def sign_in_operator(page: Page, served: OpsConsoleServed, token: str) -> None:
    await page.goto(served.url + "/console/ops")
    await expect(page).to_have_url(served.url + "/console/ops/connexion")
    await page.get_by_label("Jeton d'accès").fill(token)
    await page.get_by_role("button", name="Se connecter").click()


async def test_a_dead_letter_appears_and_rejouer_delivers_it(
    ops_console: OpsConsoleServed,
    new_page: NewPage,
    kafka_broker: EmbeddedBroker,
    topics: Topics,
    receiver: WebhookReceiver,
) -> None:
    page = await new_page()
    # A cabinet user's token is not the operator's.
    await sign_in_operator(page, ops_console, ops_console.user_token)
    await expect(page.get_by_role("alert")).to_contain_text("Ce n'est pas le jeton opérateur")

    await sign_in_operator(page, ops_console, ops_console.operator_token)
    await expect(page.get_by_role("heading", name="Pipeline : vue d'ensemble")).to_be_visible()
    assert await page.locator('meta[http-equiv="refresh"]').get_attribute("content") == "10"

    acd = receiver.partner("acd")
    # A permanent refusal dead-letters the statement (410 Gone would disable the connector
    # instead: the worker stops delivering to a removed endpoint, it writes no dead letter).
    acd.default = Reply(400)
    await produce(kafka_broker.bootstrap_servers, topics, "acd", [make_delivery("st-console-1")])
    async with running(kafka_broker, topics, {"acd": webhook(acd)}) as pool:
        await eventually(lambda: pool.stats["acd"].dead_lettered == 1, what="the dead letter")

        async def listed() -> bool:
            await page.goto(ops_console.url + "/console/ops/dlq")
            return await page.get_by_role("row").filter(has_text="st-console-1").count() == 1

        await eventually(listed, what="the dead letter on the page")
        row = page.get_by_role("row").filter(has_text="st-console-1")
        await expect(row).to_contain_text("FR76 ****")  # masked
        await expect(page.get_by_role("heading", name="acd — 1 ouverte(s)")).to_be_visible()
        await screenshot(page, "ops-dlq")

        acd.default = Reply(200)  # the partner recovers
        await row.get_by_role("button", name="Rejouer st-console-1").click()
        await expect(page.get_by_role("status")).to_contain_text(
            "Rejoué vers acd (même clé d'idempotence) : st-console-1."
        )
        await eventually(lambda: len(receiver.delivered("acd")) == 1, what="the replay")
        await expect(page.get_by_role("heading", name="acd — 0 ouverte(s)")).to_be_visible()

        dlq_topic = topics.partner_dlq("acd")

        async def overview_counts_it() -> bool:
            # The monitor reuses a sample for up to 5 s; the page shows the next one.
            await page.goto(ops_console.url + "/console/ops")
            cells = page.get_by_role("row").filter(has_text=dlq_topic).get_by_role("cell")
            return await cells.count() == 4 and await cells.nth(1).inner_text() == "1"

        await eventually(overview_counts_it, what="the overview to count the dead letter")

        async def ledger_counts_it() -> bool:
            await page.goto(ops_console.url + "/console/ops")
            row = page.get_by_role("row").filter(has_text="acd").last
            return "50 %" in await row.inner_text()  # 1 delivered, 1 dead-lettered

        await eventually(ledger_counts_it, what="the connector's success ratio")
        await expect(page.get_by_role("row").filter(has_text="acd").last).to_contain_text(
            "HTTP 400"
        )

        async def chart_drawn() -> bool:
            # The chart keeps every sample the page took; a line needs two of them.
            await page.goto(ops_console.url + "/console/ops")
            return await page.locator("svg.chart polyline").count() == 1

        await eventually(chart_drawn, what="a second sample on the lag chart")
        await expect(page.get_by_role("row").filter(has_text=dlq_topic)).to_be_visible()
        await screenshot(page, "ops-overview")

    hits = receiver.of("acd")
    assert [h.status for h in hits] == [400, 200]
    assert hits[0].webhook_id == hits[1].webhook_id
    assert hits[0].webhook_statement == "st-console-1"

    await page.get_by_role("link", name="Recherche").click()
    await page.get_by_label("Identifiant de relevé ou IBAN").fill("st-console-1")
    await page.get_by_role("button", name="Chercher").click()
    await expect(page.locator(".status")).to_have_text("delivered")
    steps = page.get_by_role("row")
    for step in ("dead_lettered", "replayed", "delivered"):
        await expect(steps.filter(has_text=step).first).to_be_visible()
    await screenshot(page, "ops-search-statement")
    await page.get_by_label("Identifiant de relevé ou IBAN").fill("FR7630006000011234567890189")
    await page.get_by_role("button", name="Chercher").click()
    await expect(page.locator(".verdict")).to_contain_text("n'est pas connu de So bank")
    await screenshot(page, "ops-search")


async def test_the_search_lists_the_statements_a_shared_id_names(
    sqlite_url: str,
    make_store: Callable[..., SqlStateStore],
    serve: ServeApp,
    kafka_broker: EmbeddedBroker,
    topics: Topics,
    new_page: NewPage,
) -> None:
    """Issue 13 item 2 for operators: stmt-1 of two cabinets' accounts is two statements;
    the search lists both (masked IBANs) and each link shows one."""
    await upgrade(sqlite_url)
    store = make_store(sqlite_url)
    token, digest = new_operator_token()
    catalogue = default_catalogue()
    files, ledger = global_file_store(store), delivery_ledger(store)
    app = create_app(store, catalogue, global_file=files, ledger=ledger)
    console = OpsConsole(topics, catalogue, kafka_broker.bootstrap_servers, digest)
    mount_console(app, store, catalogue, global_file=files, ledger=ledger, ops=console)
    served = await serve(app)
    a = entry("stmt-1", cabinet_id="cab-a", account=1, content=b"A's statement")
    b = entry("stmt-1", cabinet_id="cab-b", account=2, content=b"B's statement")
    await files.store([a, b])
    try:
        page = await new_page()
        await sign_in_operator(page, OpsConsoleServed(served.url, token, ""), token)
        await expect(page.get_by_role("link", name="Recherche")).to_be_visible()
        listed = await page.goto(f"{served.url}/console/ops/recherche?q=stmt-1")
        assert listed is not None and listed.status == 409
        assert iban(1) not in await page.content() and iban(2) not in await page.content()
        await page.get_by_role("link", name=b.key).click()
        await expect(page.get_by_text("Cabinet cab-b")).to_be_visible()
        await expect(page.locator(".status")).to_have_text("in_global_file")
    finally:
        if console.monitor is not None:
            await console.monitor.aclose()
