"""``GET /statements/{statement_id}`` and the diagnosis's recent statements, through the
API over the real store (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from config.catalogue import default_catalogue
from routing.domain.identity import statement_key
from routing.domain.model import Actor, MandateStatus, Profile
from routing.entrypoints.api.app import create_app
from routing.store.global_file import SqlGlobalFileStore
from routing.store.ledger import SqlDeliveryLedger
from routing.store.sql import SqlStateStore
from tests.integration.global_file.factories import entry, iban, outcome


@dataclass
class Api:
    client: httpx.AsyncClient
    store: SqlStateStore
    ledger: SqlDeliveryLedger
    files: SqlGlobalFileStore
    user: dict[str, str]
    other: dict[str, str]
    admin: Actor


@pytest.fixture
async def api(store: SqlStateStore) -> AsyncIterator[Api]:
    await store.create_cabinet("cab-a", "Cabinet A")
    await store.create_cabinet("cab-b", "Cabinet B")
    admin = await store.create_user("cab-a", Profile.ADMINISTRATEUR)
    user = await store.create_user("cab-a", Profile.COLLABORATEUR)
    other = await store.create_user("cab-b", Profile.ADMINISTRATEUR)
    await store.add_iban(iban(1), "cab-a", "client-1")
    await store.set_mandate(iban(1), MandateStatus.APPROVED)
    ledger, files = SqlDeliveryLedger(store.engine), SqlGlobalFileStore(store.engine)
    app = create_app(store, default_catalogue(), global_file=files, ledger=ledger)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield Api(
            client,
            store,
            ledger,
            files,
            {"Authorization": f"Bearer {user.token}"},
            {"Authorization": f"Bearer {other.token}"},
            await store.authenticate(admin.token),
        )


async def test_the_trace_of_a_retried_then_delivered_statement(api: Api) -> None:
    await api.ledger.record(
        [
            outcome("s1", "routed", 1, connector_id="acd", detail="partner:acd"),
            outcome("s1", "retrying", 2, connector_id="acd", attempt=1, detail="HTTP 503"),
            outcome("s1", "retrying", 4, connector_id="acd", attempt=2, detail="timeout"),
        ]
    )
    response = await api.client.get("/statements/s1", headers=api.user)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "retrying"
    assert body["summary"] == "retrying: attempt 2, connector acd, timeout"
    assert [(o["outcome"], o["attempt"]) for o in body["outcomes"]] == [
        ("routed", None), ("retrying", 1), ("retrying", 2),
    ]
    assert body["routing"] == {
        "destination": "partner",
        "reason": "bound",
        "connector_id": "acd",
        "checks": None,
        "state_version": None,
        "decided_at": "2026-01-06T07:01:00Z",
        "source": "outcome_detail",
    }
    await api.ledger.record([outcome("s1", "delivered", 9, connector_id="acd", attempt=3)])
    delivered = (await api.client.get("/statements/s1", headers=api.user)).json()
    assert delivered["status"] == "delivered"
    assert delivered["global_file"] is None


async def test_the_trace_of_a_global_file_statement(api: Api) -> None:
    await api.ledger.record([outcome("g1", "routed", 1, detail="global-file")])
    await api.files.store([entry("g1", offset=42)])
    body = (await api.client.get("/statements/g1", headers=api.user)).json()
    assert body["status"] == "in_global_file"
    assert body["routing"]["source"] == "global_file"
    assert body["routing"]["state_version"] == 3
    assert body["routing"]["checks"] == [
        {"name": "connector_on_cabinet", "ok": True},
        {"name": "iban_bound", "ok": False},
        {"name": "mandate_approved", "ok": True},
    ]
    assert body["global_file"]["kafka_offset"] == 42
    assert body["global_file"]["period_start"] == "2026-01-05"


async def test_other_cabinets_statement_is_answered_as_unknown(api: Api) -> None:
    before = await api.client.get("/statements/s1", headers=api.other)
    await api.ledger.record([outcome("s1", "routed", 1, detail="global-file")])
    assert (await api.client.get("/statements/s1", headers=api.user)).status_code == 200
    after = await api.client.get("/statements/s1", headers=api.other)
    assert (after.status_code, after.content) == (before.status_code, before.content)
    assert after.status_code == 404
    assert after.json() == {"error": "unknown_statement", "detail": "statement s1 is not known"}
    assert (await api.client.get("/statements/s1")).status_code == 401


async def test_the_diagnosis_shows_the_last_statements_when_every_check_passes(
    api: Api,
) -> None:
    await api.store.add_cabinet_connector(api.admin, "cab-a", "acd")
    await api.store.bind_iban(api.admin, iban(1), "acd")
    await api.ledger.record(
        [
            outcome("s1", "routed", 1, connector_id="acd", detail="partner:acd"),
            outcome("s1", "delivered", 2, connector_id="acd", attempt=1),
            outcome("s2", "routed", 3, connector_id="acd", detail="partner:acd"),
            outcome("s2", "dead_lettered", 8, connector_id="acd", attempt=5,
                    detail="HTTP 400: unknown client"),
        ]
    )
    body = (await api.client.get(f"/ibans/{iban(1)}/diagnosis", headers=api.user)).json()
    assert body["verdict"] == "contact_support"
    assert [(s["statement_id"], s["status"]) for s in body["recent_statements"]] == [
        ("s2", "dead_lettered"), ("s1", "delivered"),
    ]
    assert body["recent_statements"][0]["detail"] == "HTTP 400: unknown client"


async def test_a_failing_check_keeps_the_diagnosis_as_before(api: Api) -> None:
    await api.ledger.record([outcome("s1", "routed", 1, detail="global-file")])
    body = (await api.client.get(f"/ibans/{iban(1)}/diagnosis", headers=api.user)).json()
    assert body["verdict"] == "add_connector_to_cabinet"
    assert body["recent_statements"] == []


async def test_without_a_ledger_the_api_is_as_before(store: SqlStateStore) -> None:
    app = create_app(store, default_catalogue())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        paths = (await client.get("/openapi.json")).json()["paths"]
    assert "/statements/{statement_id}" not in paths
    assert "/cabinets/{cabinet_id}/global-file" not in paths


# --- issue 13 item 2: a statement id shared by two feeds, or reused for other content ---


async def test_each_cabinets_user_sees_its_own_statement_under_a_shared_id(api: Api) -> None:
    """Two feeds send stmt-1 for accounts of cabinets A and B: B's user gets B's statement
    (not 403 other_cabinet, not A's), A's user gets A's."""
    a = entry("stmt-1", account=1, content=b"A's statement")
    b = entry("stmt-1", cabinet_id="cab-b", account=2, content=b"B's statement")
    await api.files.store([a, b])
    response = await api.client.get("/statements/stmt-1", headers=api.other)
    assert response.status_code == 200, response.text
    theirs = response.json()
    assert (theirs["cabinet_id"], theirs["iban"], theirs["content_sha256"]) == (
        "cab-b", iban(2), b.content_sha256,
    )
    assert theirs["status"] == "in_global_file" and theirs["other_contents"] == []
    assert theirs["key"] == statement_key(iban(2), "stmt-1", b.content_sha256)
    mine = (await api.client.get("/statements/stmt-1", headers=api.user)).json()
    assert (mine["cabinet_id"], mine["content_sha256"]) == ("cab-a", a.content_sha256)
    # A's key asked by B is answered as a key nobody has.
    foreign = await api.client.get(
        "/statements/stmt-1", params={"key": mine["key"]}, headers=api.other
    )
    nobody = await api.client.get(
        "/statements/stmt-1", params={"key": "0" * 16}, headers=api.other
    )
    assert foreign.status_code == nobody.status_code == 404
    assert foreign.json() == nobody.json()


async def test_a_reused_id_is_a_409_listing_the_statements_and_key_chooses(api: Api) -> None:
    first = entry("stmt-2", content=b"first content")
    second = entry("stmt-2", content=b"corrected content", offset=1)
    await api.files.store([first])
    await api.files.store([second])
    await api.ledger.record(
        [outcome("stmt-2", "stored_global_file", 1, content_sha256=second.content_sha256,
                 detail="the id was reused, all are kept")]
    )
    response = await api.client.get("/statements/stmt-2", headers=api.user)
    assert response.status_code == 409, response.text
    body = response.json()
    assert body["error"] == "ambiguous_statement" and "?key=" in body["detail"]
    candidates = body["candidates"]
    assert sorted(c["content_sha256"] for c in candidates) == sorted(
        [first.content_sha256, second.content_sha256]
    )
    assert all(c["iban"] != iban(1) and c["status"] == "in_global_file" for c in candidates)
    for c in candidates:
        chosen = await api.client.get(
            "/statements/stmt-2", params={"key": c["key"]}, headers=api.user
        )
        assert chosen.status_code == 200, chosen.text
        trace = chosen.json()
        assert trace["key"] == c["key"] and trace["content_sha256"] == c["content_sha256"]
        assert trace["other_contents"] == [
            sha for sha in (first.content_sha256, second.content_sha256)
            if sha != c["content_sha256"]
        ]
    # Cabinet B has no statement under that id: 404, as for any unknown id.
    assert (await api.client.get("/statements/stmt-2", headers=api.other)).status_code == 404
    bad = await api.client.get("/statements/stmt-2", params={"key": "XYZ"}, headers=api.user)
    assert bad.status_code == 422


async def test_openapi_documents_the_key_and_the_409(api: Api) -> None:
    spec = (await api.client.get("/openapi.json")).json()
    route = spec["paths"]["/statements/{statement_id}"]["get"]
    [key] = [p for p in route["parameters"] if p["name"] == "key"]
    assert key["in"] == "query" and key["required"] is False
    assert "^[0-9a-f]{16}$" in str(key["schema"])
    assert "409" in route["responses"] and "candidates" in route["responses"]["409"][
        "description"
    ]
    trace_out = spec["components"]["schemas"]["StatementTraceOut"]["properties"]
    assert {"key", "content_sha256", "other_contents"} <= set(trace_out)
