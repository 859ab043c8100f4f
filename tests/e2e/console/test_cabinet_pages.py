"""The FAQ walk-through in a real browser, as a superviseur and as a collaborateur, over
the real API app and a migrated SQLite store (the rules run in the store, as for the API).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Page, expect

from config.catalogue import default_catalogue
from routing.domain.model import MandateStatus, Profile
from routing.entrypoints.api.app import create_app
from routing.entrypoints.bootstrap import delivery_ledger, global_file_store
from routing.entrypoints.console.app import mount_console
from routing.entrypoints.console.sessions import COOKIE, SessionStore
from routing.ports import GlobalFileEntry, OutcomeRecord
from routing.store.migrate import upgrade
from routing.store.sql import SqlStateStore
from tests.e2e.console.conftest import ServeApp, screenshot

APPROVED = "FR7630006000011234567890189"
PENDING = "FR7630003036200002041234504"
OTHER = "FR7630003012340005000123471"  # cabinet B's
UNKNOWN = "FR7611315000010800123456714"
NewPage = Callable[..., Awaitable[Page]]


@dataclass
class Console:
    url: str
    tokens: dict[str, str]
    store: SqlStateStore
    sessions: SessionStore


def cfonb(iban_tail: str) -> bytes:
    return (("01" + iban_tail).ljust(120) + "\r\n" + ("07" + iban_tail).ljust(120)).encode()


@pytest.fixture
async def console(
    sqlite_url: str, make_store: Callable[..., SqlStateStore], serve: ServeApp
) -> AsyncIterator[Console]:
    await upgrade(sqlite_url)
    store = make_store(sqlite_url)
    await store.create_cabinet("cab-a", "Cabinet A")
    await store.create_cabinet("cab-b", "Cabinet B")
    tokens = {
        "superviseur": (await store.create_user("cab-a", Profile.SUPERVISEUR)).token,
        "collaborateur": (await store.create_user("cab-a", Profile.COLLABORATEUR)).token,
        "other": (await store.create_user("cab-b", Profile.ADMINISTRATEUR)).token,
    }
    await store.add_iban(APPROVED, "cab-a", "boulangerie-martin")
    await store.add_iban(PENDING, "cab-a", "cafe-du-port")
    await store.add_iban(OTHER, "cab-b", "secret-client-b")
    await store.set_mandate(APPROVED, MandateStatus.APPROVED)
    files, ledger = global_file_store(store), delivery_ledger(store)
    now = datetime.now(UTC)
    for statement_id, cabinet, iban in (("st-a-1", "cab-a", APPROVED), ("st-b-1", "cab-b", OTHER)):
        await files.store(
            [
                GlobalFileEntry(
                    statement_id=statement_id,
                    cabinet_id=cabinet,
                    iban=iban,
                    client_ref=None,
                    format="cfonb120",
                    period_start=date(2026, 11, 1),
                    period_end=date(2026, 11, 30),
                    received_at=now,
                    source="test",
                    content=cfonb(iban[-10:]),
                    content_sha256="0" * 64,
                    routed_at=now,
                    routing=None,
                    kafka_topic="t",
                    kafka_partition=0,
                    kafka_offset=0,
                )
            ]
        )
    await ledger.record(
        [
            OutcomeRecord(
                "st-pending-1",
                "held",
                now,
                iban=PENDING,
                cabinet_id="cab-a",
                detail="held: mandate_pending",
            ),
        ]
    )
    app = create_app(store, default_catalogue(), global_file=files, ledger=ledger)
    sessions = mount_console(app, store, default_catalogue(), global_file=files, ledger=ledger)
    served = await serve(app)
    yield Console(served.url, tokens, store, sessions)


async def sign_in(page: Page, console: Console, who: str, shot: bool = False) -> None:
    await page.goto(console.url + "/console")
    await expect(page).to_have_url(console.url + "/console/connexion")
    if shot:
        await screenshot(page, "connexion")
    await page.get_by_label("Jeton d'accès").fill(console.tokens[who])
    await page.get_by_role("button", name="Se connecter").click()
    await expect(page.get_by_role("heading", name="Cabinet cab-a")).to_be_visible()


async def choose_connector(page: Page, iban: str, label: str) -> None:
    await page.goto(page.url.split("/console")[0] + "/console/ibans")
    row = page.get_by_role("row").filter(has_text=iban)
    await row.get_by_text("…").click()
    await row.get_by_label(f"Connecteur de {iban}").select_option(label=label)
    await row.get_by_role("button", name="Enregistrer").click()


async def test_superviseur_walk_through(console: Console, new_page: NewPage) -> None:
    page = await new_page()
    await sign_in(page, console, "superviseur", shot=True)
    cookie = next(c for c in await page.context.cookies() if c["name"] == COOKIE)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert console.tokens["superviseur"] not in repr(console.sessions.__dict__)

    # Cabinet: « + » opens the catalogue; add ACD.
    # Keyboard only: « + » opens with Enter, the drop-down and the button by Tab.
    await page.get_by_label("Ajouter un connecteur").focus()
    await page.keyboard.press("Enter")
    await expect(page.get_by_label("Connecteur à ajouter")).to_be_visible()
    await page.keyboard.press("Tab")
    await expect(page.get_by_label("Connecteur à ajouter")).to_be_focused()
    await page.get_by_label("Connecteur à ajouter").select_option(label="ACD")
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("button", name="Ajouter")).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("status")).to_contain_text("Connecteur ACD ajouté au cabinet")
    await expect(page.get_by_role("row").filter(has_text="ACD")).to_contain_text("0")
    await screenshot(page, "cabinet")

    # IBAN: bind through « … », then try to remove the bound connector.
    await choose_connector(page, APPROVED, "ACD")
    await expect(page.get_by_role("status")).to_contain_text(f"IBAN {APPROVED} : ACD")
    await expect(page.get_by_role("row").filter(has_text=APPROVED)).to_contain_text("approuvé")
    # type: ignore[union-attr]
    assert (await console.store.iban_state(APPROVED)).connector_id == "acd"
    await screenshot(page, "ibans")
    await page.goto(f"{console.url}/console/ibans/{APPROVED}")
    await expect(page.get_by_role("heading", name=f"IBAN {APPROVED}")).to_be_visible()
    await screenshot(page, "iban")
    await page.goto(f"{console.url}/console/releves/st-a-1")
    await expect(page.locator(".status")).to_have_text("in_global_file")
    await screenshot(page, "releve")

    await page.get_by_role("link", name="Cabinet", exact=True).click()
    await page.get_by_role("button", name="Supprimer le connecteur ACD").click()
    await expect(page.get_by_role("alert")).to_contain_text(
        "Suppression impossible : 1 IBAN y est encore rattaché"
    )
    assert await console.store.list_cabinet_connectors(
        await console.store.authenticate(console.tokens["superviseur"]), "cab-a"
    ) == ["acd"]

    # « Aucun connecteur » unbinds; then the removal goes through.
    await choose_connector(page, APPROVED, "Aucun connecteur")
    await expect(page.get_by_role("row").filter(has_text=APPROVED)).to_contain_text(
        "Aucun connecteur"
    )
    # type: ignore[union-attr]
    assert (await console.store.iban_state(APPROVED)).connector_id is None
    await page.get_by_role("link", name="Cabinet", exact=True).click()
    await page.get_by_role("button", name="Supprimer le connecteur ACD").click()
    await expect(page.get_by_role("status")).to_contain_text("Connecteur ACD supprimé du cabinet")

    await download_matches_the_api(page, console, "superviseur")
    await troubleshoot_pending(page, console)
    await screenshot(page, "diagnostic")


async def download_matches_the_api(page: Page, console: Console, who: str) -> None:
    await page.get_by_role("link", name="Relevés", exact=True).click()
    # Without a period the page opens on the month of the latest statement.
    await expect(page.get_by_label("Du", exact=True)).to_have_value("2026-11-01")
    await expect(page.get_by_role("row").filter(has_text="st-a-1")).to_be_visible()
    await page.get_by_label("Du", exact=True).fill("2026-11-01")
    await page.get_by_label("Au", exact=True).fill("2026-11-30")
    await page.get_by_role("button", name="Afficher").click()
    await expect(page.get_by_role("row").filter(has_text="st-a-1")).to_be_visible()
    await expect(page.get_by_text("st-b-1")).to_have_count(0)
    await screenshot(page, "releves")
    async with page.expect_download() as info:
        await page.get_by_role("link", name="Télécharger").click()
    download = await info.value
    got = await asyncio.to_thread(Path(await download.path()).read_bytes)
    async with httpx.AsyncClient(base_url=console.url) as client:
        api = await client.get(
            "/cabinets/cab-a/global-file",
            params={"from": "2026-11-01", "to": "2026-11-30"},
            headers={"Authorization": f"Bearer {console.tokens[who]}"},
        )
    assert api.status_code == 200
    assert got == api.content and got.count(b"\r\n") == 2
    assert download.suggested_filename in api.headers["content-disposition"]


async def troubleshoot_pending(page: Page, console: Console) -> None:
    await page.get_by_role("link", name="Mes relevés n'arrivent pas").click()
    await page.get_by_label("IBAN à vérifier").select_option(value=PENDING)
    await page.get_by_role("button", name="Vérifier").click()
    checks = page.locator("ol.checks li")
    await expect(checks).to_have_count(4)  # the FAQ's three, then the catalogue's
    await expect(checks.nth(0)).to_contain_text("✗")  # cab-a has no connector any more
    await expect(checks.nth(2)).to_contain_text("Le mandat est en attente")
    await expect(checks.nth(2)).to_contain_text("✗")
    await expect(page.locator(".verdict")).to_contain_text("Premier point en échec")
    await expect(page.get_by_role("row").filter(has_text="st-pending-1")).to_contain_text("held")


async def test_collaborateur_walk_through(console: Console, new_page: NewPage) -> None:
    admin = await console.store.authenticate(console.tokens["superviseur"])
    await console.store.add_cabinet_connector(admin, "cab-a", "quadra")
    page = await new_page()
    await sign_in(page, console, "collaborateur")
    # No « + » for a collaborateur, and the server refuses the form anyway.
    await expect(page.get_by_label("Ajouter un connecteur")).to_have_count(0)
    await expect(page.get_by_role("button", name="Supprimer le connecteur Quadra")).to_have_count(0)
    csrf = await page.locator("input[name=csrf]").first.get_attribute("value")
    refused = await page.request.post(
        console.url + "/console/cabinet/connecteurs",
        form={"csrf": csrf or "", "connector_id": "acd"},
    )
    assert refused.status == 403
    assert "Seul un « Superviseur » ou un « Administrateur »" in await refused.text()
    refused = await page.request.post(
        console.url + "/console/cabinet/connecteurs/quadra/supprimer", form={"csrf": csrf or ""}
    )
    assert refused.status == 403
    assert await console.store.list_cabinet_connectors(admin, "cab-a") == ["quadra"]

    # The page's « + » binds too.
    await page.goto(console.url + "/console/ibans")
    await page.get_by_label("Associer un IBAN à un connecteur").click()
    await page.get_by_label("IBAN", exact=True).select_option(value=PENDING)
    await page.get_by_label("Connecteur", exact=True).select_option(label="Quadra")
    await page.get_by_role("button", name="Associer").click()
    await expect(page.get_by_role("status")).to_contain_text(f"IBAN {PENDING} : Quadra")
    await expect(page.get_by_role("row").filter(has_text=PENDING)).to_contain_text("Quadra")
    await choose_connector(page, PENDING, "Aucun connecteur")
    await expect(page.get_by_role("row").filter(has_text=PENDING)).to_contain_text(
        "Aucun connecteur"
    )
    await choose_connector(page, PENDING, "Quadra")
    await page.goto(console.url + "/console/cabinet")
    await expect(page.get_by_role("row").filter(has_text="Quadra")).to_contain_text("1")

    await download_matches_the_api(page, console, "collaborateur")
    await page.get_by_role("link", name="Mes relevés n'arrivent pas").click()
    await page.get_by_label("IBAN à vérifier").select_option(value=PENDING)
    await page.get_by_role("button", name="Vérifier").click()
    checks = page.locator("ol.checks li")
    await expect(checks.nth(0)).to_contain_text("✓")
    await expect(checks.nth(1)).to_contain_text("✓")
    await expect(checks.nth(2)).to_contain_text("✗")
    await expect(page.locator(".verdict")).to_contain_text(
        "Le mandat doit être approuvé par la banque"
    )

    # Sign-out ends the session: the pages ask for the token again.
    await page.get_by_role("button", name="Se déconnecter").click()
    await expect(page).to_have_url(console.url + "/console/connexion")
    await page.goto(console.url + "/console/ibans")
    await expect(page).to_have_url(console.url + "/console/connexion")


async def test_another_cabinet_is_unknown_even_by_url(console: Console, new_page: NewPage) -> None:
    page = await new_page()
    await sign_in(page, console, "collaborateur")
    unknown = await page.goto(f"{console.url}/console/ibans/{UNKNOWN}")
    assert unknown is not None and unknown.status == 404
    unknown_text = await page.locator("main").inner_text()
    other = await page.goto(f"{console.url}/console/ibans/{OTHER}")
    assert other is not None and other.status == 404
    assert await page.locator("main").inner_text() == unknown_text
    assert "secret-client-b" not in await page.content()
    for path in (f"/console/diagnostic?iban={OTHER}", "/console/releves/st-b-1"):
        response = await page.goto(console.url + path)
        assert response is not None and response.status == 404, path
        assert "cab-b" not in await page.content()
    await page.goto(console.url + "/console/ibans")
    csrf = await page.locator("input[name=csrf]").first.get_attribute("value")
    posted = await page.request.post(
        f"{console.url}/console/ibans/{OTHER}/connecteur",
        form={"csrf": csrf or "", "connector_id": ""},
    )
    assert posted.status == 404
    state = await console.store.iban_state(OTHER)
    assert state is not None and state.version == 1
    # The operators' pages refuse a cabinet session.
    ops = await page.goto(console.url + "/console/ops")
    assert ops is not None and ops.status == 403


async def test_forms_without_the_csrf_token_are_refused(
    console: Console, new_page: NewPage
) -> None:
    page = await new_page()
    await sign_in(page, console, "superviseur")
    url = console.url + "/console/cabinet/connecteurs"
    for form in ({"connector_id": "acd"}, {"connector_id": "acd", "csrf": "forged"}):
        response = await page.request.post(url, form=form)
        assert response.status == 403
        assert "CSRF" in await response.text()
    bind = await page.request.post(
        f"{console.url}/console/ibans/{APPROVED}/connecteur",
        form={"connector_id": "", "csrf": "forged"},
    )
    assert bind.status == 403
    signin = await page.request.post(
        console.url + "/console/connexion", form={"token": console.tokens["other"]}
    )
    assert signin.status == 403
    actor = await console.store.authenticate(console.tokens["superviseur"])
    assert await console.store.list_cabinet_connectors(actor, "cab-a") == []


async def test_a_reused_statement_id_lists_both_statements(
    console: Console, new_page: NewPage
) -> None:
    """Issue 13 item 2 in the console: an id A's feed reused for other content is two
    statements; the « Relevés » links choose each by its key, and the bare id lists both."""
    files = global_file_store(console.store)
    now = datetime.now(UTC)
    contents = [cfonb("reused-one"), cfonb("reused-two")]
    entries = [
        GlobalFileEntry(
            statement_id="st-a-2", cabinet_id="cab-a", iban=APPROVED, client_ref=None,
            format="cfonb120", period_start=date(2026, 11, 2), period_end=date(2026, 11, 2),
            received_at=now, source="test", content=content,
            content_sha256=hashlib.sha256(content).hexdigest(), routed_at=now, routing=None,
            kafka_topic="t", kafka_partition=0, kafka_offset=n,
        )
        for n, content in enumerate(contents)
    ]
    assert all(r.created for r in await files.store(entries))
    page = await new_page()
    await sign_in(page, console, "collaborateur")
    listed = await page.goto(f"{console.url}/console/releves/st-a-2")
    assert listed is not None and listed.status == 409
    links = page.get_by_role("link", name=entries[0].key)
    await expect(links).to_have_count(1)
    await expect(page.get_by_role("link", name=entries[1].key)).to_have_count(1)
    assert APPROVED not in await page.content()  # masked
    await links.click()
    await expect(page.get_by_role("heading", name="Relevé st-a-2")).to_be_visible()
    assert page.url.endswith(f"?key={entries[0].key}")
    await page.goto(f"{console.url}/console/releves?from=2026-11-01&to=2026-11-30")
    hrefs = await page.get_by_role("link", name="st-a-2").evaluate_all(
        "links => links.map(a => a.getAttribute('href'))"
    )
    assert sorted(hrefs) == sorted(f"/console/releves/st-a-2?key={e.key}" for e in entries)
    # Cabinet B has no statement under that id, whatever A holds.
    other = await new_page()
    await other.goto(console.url + "/console")
    await other.get_by_label("Jeton d'accès").fill(console.tokens["other"])
    await other.get_by_role("button", name="Se connecter").click()
    await expect(other.get_by_role("heading", name="Cabinet cab-b")).to_be_visible()
    answer = await other.goto(f"{console.url}/console/releves/st-a-2?key={entries[0].key}")
    assert answer is not None and answer.status == 404
