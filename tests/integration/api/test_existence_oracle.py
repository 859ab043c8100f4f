"""No existence oracle across cabinets (issue 13, item 3), route by route of docs/api.md.

A user of cabinet A asking for cabinet B's IBAN or statement gets exactly what an unknown
one gets: same status, same body, and the same database work (counted in SQL statements,
rather than timed, so the answer does not say by its latency either). Cabinet-addressed
routes keep 403 ``other_cabinet``, identical whether the other cabinet exists or not, and
403 ``profile_not_allowed`` where the caller's own right is missing.

Every route of the docs' endpoint tables must be listed in ``CASES``: a new route without
its oracle case fails ``test_every_documented_route_is_checked``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from config.catalogue import default_catalogue
from events.topics import Topics
from routing.domain.model import Actor, MandateStatus, Profile
from routing.entrypoints.api.app import create_app
from routing.entrypoints.api.ops import new_operator_token, ops_router
from routing.observability.metrics_http import add_metrics_route
from routing.store.global_file import SqlGlobalFileStore
from routing.store.ledger import SqlDeliveryLedger
from routing.store.sql import SqlStateStore
from tests.integration.global_file.factories import entry, iban, outcome

DOCS = Path(__file__).resolve().parents[3] / "docs" / "api.md"

OWN_IBAN = iban(1)
FOREIGN_IBAN = iban(2)  # registered at cabinet B
UNKNOWN_IBAN = iban(3)  # registered nowhere


@dataclass(frozen=True)
class Case:
    """One documented route: the request on B's resource, and on one that does not exist.

    ``expect`` is the status both must answer (with the same body, ids aside for the
    cabinet routes, which echo the id the caller typed)."""

    route: str
    method: str
    foreign: str
    unknown: str
    expect: int
    body: dict[str, Any] | None = None
    same_sql: bool = False
    same_body: bool = True  # /metrics: counters move between two scrapes


CASES = (
    Case("GET /healthz", "GET", "/healthz", "/healthz", 200),
    Case("GET /metrics", "GET", "/metrics", "/metrics", 200, same_body=False),
    Case("GET /connectors", "GET", "/connectors", "/connectors", 200),
    Case(
        "GET /cabinets/{cabinet_id}/connectors",
        "GET",
        "/cabinets/cab-b/connectors",
        "/cabinets/cab-zz/connectors",
        403,
    ),
    Case(
        "GET /cabinets/{cabinet_id}/ibans",
        "GET",
        "/cabinets/cab-b/ibans",
        "/cabinets/cab-zz/ibans",
        403,
    ),
    Case(
        "POST /cabinets/{cabinet_id}/connectors",
        "POST",
        "/cabinets/cab-b/connectors",
        "/cabinets/cab-zz/connectors",
        403,
        body={"connector_id": "acd"},
    ),
    Case(
        "DELETE /cabinets/{cabinet_id}/connectors/{connector_id}",
        "DELETE",
        "/cabinets/cab-b/connectors/acd",
        "/cabinets/cab-zz/connectors/acd",
        403,
    ),
    Case(
        "GET /ibans/{iban}",
        "GET",
        f"/ibans/{FOREIGN_IBAN}",
        f"/ibans/{UNKNOWN_IBAN}",
        404,
        same_sql=True,
    ),
    Case(
        "PUT /ibans/{iban}/connector",
        "PUT",
        f"/ibans/{FOREIGN_IBAN}/connector",
        f"/ibans/{UNKNOWN_IBAN}/connector",
        404,
        body={"connector_id": "acd"},
        same_sql=True,
    ),
    Case(
        "GET /ibans/{iban}/diagnosis",
        "GET",
        f"/ibans/{FOREIGN_IBAN}/diagnosis",
        f"/ibans/{UNKNOWN_IBAN}/diagnosis",
        404,
        same_sql=True,
    ),
    Case(
        "GET /cabinets/{cabinet_id}/global-file",
        "GET",
        "/cabinets/cab-b/global-file?from=2026-01-01&to=2026-01-31",
        "/cabinets/cab-zz/global-file?from=2026-01-01&to=2026-01-31",
        403,
    ),
    Case(
        "GET /statements/{statement_id}",
        "GET",
        "/statements/stmt-b",
        "/statements/stmt-zz",
        404,
        same_sql=True,
    ),
    # Operator routes: a cabinet user's token is no operator token, whatever the connector.
    Case("GET /ops/topics", "GET", "/ops/topics", "/ops/topics", 401),
    Case("GET /ops/lag", "GET", "/ops/lag", "/ops/lag", 401),
    Case("GET /ops/dlq/{connector_id}", "GET", "/ops/dlq/acd", "/ops/dlq/nope", 401),
    Case(
        "POST /ops/dlq/{connector_id}/replay",
        "POST",
        "/ops/dlq/acd/replay",
        "/ops/dlq/nope/replay",
        401,
        body={"all": True},
    ),
    Case(
        "POST /ops/connectors/{connector_id}/enable",
        "POST",
        "/ops/connectors/acd/enable",
        "/ops/connectors/nope/enable",
        401,
    ),
)


def documented_routes() -> set[str]:
    """``METHOD /path`` of every row of docs/api.md's endpoint tables (the HTTP API's; the
    web console's pages have their own cross-cabinet browser test)."""
    routes: set[str] = set()
    api_part = DOCS.read_text().split("## Web console", 1)[0]
    for line in api_part.splitlines():
        cell = line.split("|")[1] if line.startswith("| `") else ""
        for method, path in re.findall(r"`(GET|POST|PUT|DELETE) (/[^`? ]*)", cell):
            routes.add(f"{method} {path}")
    return routes


def test_every_documented_route_is_checked() -> None:
    documented = documented_routes()
    assert len(documented) >= 14
    assert documented == {case.route for case in CASES}


@dataclass
class Api:
    client: httpx.AsyncClient
    store: SqlStateStore
    admin: dict[str, str]
    collaborator: dict[str, str]
    admin_actor: Actor


@pytest.fixture
async def api(store: SqlStateStore) -> AsyncIterator[Api]:
    await store.create_cabinet("cab-a", "Cabinet A")
    await store.create_cabinet("cab-b", "Cabinet B")
    admin = await store.create_user("cab-a", Profile.ADMINISTRATEUR)
    collaborator = await store.create_user("cab-a", Profile.COLLABORATEUR)
    created_b = await store.create_user("cab-b", Profile.ADMINISTRATEUR)
    admin_b = await store.authenticate(created_b.token)
    await store.add_iban(OWN_IBAN, "cab-a", None)
    await store.add_iban(FOREIGN_IBAN, "cab-b", None)
    await store.set_mandate(FOREIGN_IBAN, MandateStatus.APPROVED)
    await store.add_cabinet_connector(admin_b, "cab-b", "acd")
    ledger, files = SqlDeliveryLedger(store.engine), SqlGlobalFileStore(store.engine)
    await ledger.record([outcome("stmt-b", "routed", 1, account=2, cabinet_id="cab-b")])
    await files.store([entry("stmt-b", account=2, cabinet_id="cab-b")])
    _, digest = new_operator_token()
    ops = ops_router(
        Topics(prefix="oracle"),
        default_catalogue(),
        bootstrap_servers="127.0.0.1:1",
        operator_token_sha256=digest,
    )
    app = create_app(store, default_catalogue(), global_file=files, ledger=ledger, ops=ops)
    add_metrics_route(app)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield Api(
            client,
            store,
            {"Authorization": f"Bearer {admin.token}"},
            {"Authorization": f"Bearer {collaborator.token}"},
            await store.authenticate(admin.token),
        )


@contextmanager
def counted_sql(store: SqlStateStore) -> Iterator[list[str]]:
    statements: list[str] = []

    def seen(*args: Any) -> None:
        statements.append(str(args[2]).split()[0])

    engine = store.engine.sync_engine
    event.listen(engine, "before_cursor_execute", seen)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", seen)


def _neutral(text: str) -> str:
    """The body with the ids the caller typed blanked (a cabinet route echoes them)."""
    for typed in ("cab-b", "cab-zz", FOREIGN_IBAN, UNKNOWN_IBAN, "stmt-b", "stmt-zz"):
        text = text.replace(typed, "<id>")
    return text


@pytest.mark.parametrize("case", CASES, ids=[c.route for c in CASES])
async def test_another_cabinets_resource_is_answered_as_an_unknown_one(
    api: Api, case: Case
) -> None:
    with counted_sql(api.store) as foreign_sql:
        foreign = await api.client.request(
            case.method, case.foreign, json=case.body, headers=api.admin
        )
    with counted_sql(api.store) as unknown_sql:
        unknown = await api.client.request(
            case.method, case.unknown, json=case.body, headers=api.admin
        )
    assert foreign.status_code == case.expect, foreign.text
    assert unknown.status_code == case.expect, unknown.text
    if case.same_body:
        assert _neutral(foreign.text) == _neutral(unknown.text)
    if case.same_sql:  # an IBAN or a statement: nothing of the owner's cabinet is said
        assert foreign.status_code == 404 and "cab-b" not in foreign.text
        assert foreign_sql == unknown_sql and foreign_sql


async def test_the_exact_unknown_answers(api: Api) -> None:
    for path in (f"/ibans/{FOREIGN_IBAN}", f"/ibans/{FOREIGN_IBAN}/diagnosis"):
        response = await api.client.get(path, headers=api.collaborator)
        assert response.json() == {
            "error": "unknown_iban",
            "detail": f"IBAN {FOREIGN_IBAN} is not registered",
        }
    trace = await api.client.get("/statements/stmt-b", headers=api.collaborator)
    assert trace.json() == {"error": "unknown_statement", "detail": "statement stmt-b is not known"}
    # The IBAN was not touched by the refused bind.
    state = await api.store.iban_state(FOREIGN_IBAN)
    assert state is not None and state.connector_id is None


async def test_403_stays_where_the_callers_own_right_is_missing(api: Api) -> None:
    own = await api.client.post(
        "/cabinets/cab-a/connectors", json={"connector_id": "acd"}, headers=api.collaborator
    )
    assert own.status_code == 403
    assert own.json()["error"] == "profile_not_allowed"
    other = await api.client.get("/cabinets/cab-b/connectors", headers=api.collaborator)
    assert other.status_code == 403
    assert other.json()["error"] == "other_cabinet"
    own_iban = await api.client.get(f"/ibans/{OWN_IBAN}", headers=api.collaborator)
    assert own_iban.status_code == 200
