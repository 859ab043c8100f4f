"""The HTTP API through httpx, over the real store (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from config.catalogue import default_catalogue
from routing.domain.model import MandateStatus, Profile
from routing.entrypoints.api.app import create_app
from routing.ports import StateStore

BOUND = "FR7630006000011234567890189"
UNBOUND = "FR7630004008250001234567886"
PENDING = "FR6010278060760001234F50152"
OTHER_CABINET_IBAN = "FR7630003012340005000123471"


@dataclass
class Seed:
    client: httpx.AsyncClient
    admin: dict[str, str]
    supervisor: dict[str, str]
    collaborator: dict[str, str]
    other_admin: dict[str, str]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def api(store: StateStore) -> AsyncIterator[Seed]:
    await store.create_cabinet("cab-a", "Cabinet A")
    await store.create_cabinet("cab-b", "Cabinet B")
    admin = await store.create_user("cab-a", Profile.ADMINISTRATEUR)
    supervisor = await store.create_user("cab-a", Profile.SUPERVISEUR)
    collaborator = await store.create_user("cab-a", Profile.COLLABORATEUR)
    other_admin = await store.create_user("cab-b", Profile.ADMINISTRATEUR)
    for iban in (BOUND, UNBOUND, PENDING):
        await store.add_iban(iban, "cab-a", f"client-{iban[-3:]}")
    await store.add_iban(OTHER_CABINET_IBAN, "cab-b", None)
    for iban in (BOUND, UNBOUND):
        await store.set_mandate(iban, MandateStatus.APPROVED)
    app = create_app(store, default_catalogue())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield Seed(
            client,
            bearer(admin.token),
            bearer(supervisor.token),
            bearer(collaborator.token),
            bearer(other_admin.token),
        )


async def test_health_and_openapi_need_no_token(api: Seed) -> None:
    assert (await api.client.get("/healthz")).json() == {"status": "ok"}
    schema = (await api.client.get("/openapi.json")).json()
    assert "/ibans/{iban}/diagnosis" in schema["paths"]
    assert "/cabinets/{cabinet_id}/connectors/{connector_id}" in schema["paths"]


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer srt_not-a-real-token"}, {"Authorization": "Basic abc"}],
)
async def test_missing_or_bad_tokens_are_refused(api: Seed, headers: dict[str, str]) -> None:
    response = await api.client.get("/connectors", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthenticated"
    assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_catalogue(api: Seed) -> None:
    response = await api.client.get("/connectors", headers=api.collaborator)
    assert response.status_code == 200
    assert [c["connector_id"] for c in response.json()] == ["acd", "cegid", "quadra", "pennylane"]


async def test_adding_a_connector_201_then_200(api: Seed) -> None:
    first = await api.client.post(
        "/cabinets/cab-a/connectors", json={"connector_id": "acd"}, headers=api.supervisor
    )
    assert first.status_code == 201
    assert first.json() == {"cabinet_id": "cab-a", "connector_id": "acd", "added": True}
    again = await api.client.post(
        "/cabinets/cab-a/connectors", json={"connector_id": "acd"}, headers=api.admin
    )
    assert again.status_code == 200
    assert again.json()["added"] is False
    listed = await api.client.get("/cabinets/cab-a/connectors", headers=api.collaborator)
    assert [c["connector_id"] for c in listed.json()["connectors"]] == ["acd"]


async def test_a_collaborateur_cannot_add_a_connector(api: Seed) -> None:
    response = await api.client.post(
        "/cabinets/cab-a/connectors", json={"connector_id": "acd"}, headers=api.collaborator
    )
    assert response.status_code == 403
    assert response.json() == {
        "error": "profile_not_allowed",
        "detail": "only a superviseur or an administrateur can add a connector; "
        "you are a collaborateur",
    }


async def test_nobody_touches_another_cabinet(api: Seed) -> None:
    post = await api.client.post(
        "/cabinets/cab-b/connectors", json={"connector_id": "acd"}, headers=api.admin
    )
    assert post.status_code == 403
    assert post.json()["error"] == "other_cabinet"
    listing = await api.client.get("/cabinets/cab-b/connectors", headers=api.admin)
    assert listing.status_code == 403
    delete = await api.client.delete("/cabinets/cab-b/connectors/acd", headers=api.admin)
    assert delete.status_code == 403
    for method, path, body in (
        ("GET", f"/ibans/{OTHER_CABINET_IBAN}", None),
        ("GET", f"/ibans/{OTHER_CABINET_IBAN}/diagnosis", None),
        ("PUT", f"/ibans/{OTHER_CABINET_IBAN}/connector", {"connector_id": None}),
    ):
        # Another cabinet's IBAN is an unknown one (no existence oracle).
        response = await api.client.request(method, path, json=body, headers=api.admin)
        assert response.status_code == 404, (method, path)
        assert response.json()["error"] == "unknown_iban"


async def test_unknown_connector_is_404(api: Seed) -> None:
    response = await api.client.post(
        "/cabinets/cab-a/connectors", json={"connector_id": "sage"}, headers=api.admin
    )
    assert response.status_code == 404
    assert response.json()["error"] == "unknown_connector"


async def test_removal_refused_while_bound_says_how_many(api: Seed) -> None:
    await api.client.post("/cabinets/cab-a/connectors", json={"connector_id": "acd"},
                          headers=api.admin)
    for iban in (BOUND, UNBOUND):
        bound = await api.client.put(
            f"/ibans/{iban}/connector", json={"connector_id": "acd"}, headers=api.collaborator
        )
        assert bound.status_code == 200
    refused = await api.client.delete("/cabinets/cab-a/connectors/acd", headers=api.admin)
    assert refused.status_code == 409
    body = refused.json()
    assert body["error"] == "connector_still_bound"
    assert body["bound_ibans"] == 2
    assert "still bound to 2 IBANs of cabinet cab-a" in body["detail"]

    collaborator = await api.client.delete(
        "/cabinets/cab-a/connectors/acd", headers=api.collaborator
    )
    assert collaborator.status_code == 403

    for iban in (BOUND, UNBOUND):
        await api.client.put(
            f"/ibans/{iban}/connector", json={"connector_id": None}, headers=api.collaborator
        )
    removed = await api.client.delete("/cabinets/cab-a/connectors/acd", headers=api.supervisor)
    assert removed.status_code == 204
    assert removed.content == b""
    gone = await api.client.delete("/cabinets/cab-a/connectors/acd", headers=api.supervisor)
    assert gone.status_code == 404


async def test_binding_needs_the_connector_on_the_cabinet(api: Seed) -> None:
    response = await api.client.put(
        f"/ibans/{BOUND}/connector", json={"connector_id": "cegid"}, headers=api.collaborator
    )
    assert response.status_code == 409
    assert response.json()["error"] == "connector_not_on_cabinet"
    assert "has not been added to cabinet cab-a" in response.json()["detail"]


async def test_binding_and_unbinding_change_the_state(api: Seed) -> None:
    await api.client.post("/cabinets/cab-a/connectors", json={"connector_id": "acd"},
                          headers=api.admin)
    before = (await api.client.get(f"/ibans/{BOUND}", headers=api.collaborator)).json()
    bound = await api.client.put(
        f"/ibans/{BOUND.lower()}/connector", json={"connector_id": "acd"}, headers=api.collaborator
    )
    assert bound.status_code == 200
    assert bound.json()["connector_id"] == "acd"
    assert bound.json()["iban"] == BOUND
    assert bound.json()["version"] > before["version"]
    unbound = await api.client.put(
        f"/ibans/{BOUND}/connector", json={"connector_id": None}, headers=api.collaborator
    )
    assert unbound.json()["connector_id"] is None


async def test_an_iban_path_may_be_printed_with_single_spaces_and_in_lower_case(
    api: Seed,
) -> None:
    for written in ("FR76 3000 6000 0112 3456 7890 189", BOUND.lower()):
        response = await api.client.get(f"/ibans/{written}", headers=api.admin)
        assert response.status_code == 200, written
        assert response.json()["iban"] == BOUND


async def test_unknown_iban_is_404(api: Seed) -> None:
    unknown = "FR7611315000010891234567896"
    for method, path, body in (
        ("GET", f"/ibans/{unknown}", None),
        ("PUT", f"/ibans/{unknown}/connector", {"connector_id": None}),
        ("GET", f"/ibans/{unknown}/diagnosis", None),
    ):
        response = await api.client.request(method, path, json=body, headers=api.admin)
        assert response.status_code == 404, (method, path)
        assert response.json()["error"] == "unknown_iban"


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"{not json", "not valid JSON: Expecting property name enclosed in double quotes"),
        (b'{"connector_id": "acd"', "not valid JSON: Expecting ',' delimiter"),
        (b'{"connector_id": "\xff"}', "not valid JSON: it could not be decoded as UTF-8"),
    ],
)
async def test_unparsable_bodies_get_400_invalid_json(
    api: Seed, content: bytes, fragment: str
) -> None:
    """A body that is not JSON at all is the client's encoder's fault (400), not its data's
    (422): both are JSON errors the schema documents."""
    response = await api.client.put(
        f"/ibans/{BOUND}/connector",
        content=content,
        headers={**api.admin, "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_json"
    assert fragment in response.json()["detail"]


@pytest.mark.parametrize(
    ("path", "allow"),
    [
        ("/cabinets/cab-a/connectors", "GET, OPTIONS, POST"),
        ("/cabinets/cab-a/connectors/acd", "DELETE, OPTIONS"),
        (f"/ibans/{BOUND}", "GET, OPTIONS"),
        (f"/ibans/{BOUND}/connector", "OPTIONS, PUT"),
        ("/healthz", "GET, OPTIONS"),
    ],
)
async def test_options_and_unserved_methods_list_every_method_of_the_path(
    api: Seed, path: str, allow: str
) -> None:
    """Starlette answered with the Allow of the first route matching the path only
    (``OPTIONS /cabinets/x/connectors`` said ``GET``): now OPTIONS is 204 and any other
    unserved method 405 JSON, both with every method of the path, without a token."""
    options = await api.client.options(path)
    assert options.status_code == 204
    assert options.headers["Allow"] == allow
    assert options.content == b""
    refused = await api.client.request("PATCH", path)
    assert refused.status_code == 405
    assert refused.headers["Allow"] == allow
    assert refused.json()["error"] == "method_not_allowed"
    assert (await api.client.options("/no/such/path")).status_code == 404


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"{}", "connector_id: Field required"),
        (b'{"connector_id": 12}', "connector_id"),
        (b'{"connector_id": "acd", "extra": 1}', "extra: Extra inputs are not permitted"),
        (b"[]", "body"),
    ],
)
async def test_malformed_bodies_get_422_with_a_reason(
    api: Seed, content: bytes, fragment: str
) -> None:
    response = await api.client.put(
        f"/ibans/{BOUND}/connector",
        content=content,
        headers={**api.admin, "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"
    assert fragment in response.json()["detail"]


@pytest.mark.parametrize(
    "iban",
    [
        "FR7630006000011234567890188",  # the declared pattern, wrong check digits
        "NOTANIBAN",
        "FR76",
        "FR76  3000 6000 0112 3456 7890 189",  # two spaces: outside the declared pattern
        " FR7630006000011234567890189",  # a leading space, too
        "FR76300060000112345678901890000000",  # 35 characters
    ],
)
async def test_malformed_ibans_get_422(api: Seed, iban: str) -> None:
    response = await api.client.get(f"/ibans/{iban}", headers=api.admin)
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_iban"


async def test_diagnosis_follows_the_faq(api: Seed) -> None:
    first = (await api.client.get(f"/ibans/{BOUND}/diagnosis", headers=api.collaborator)).json()
    assert first["verdict"] == "add_connector_to_cabinet"
    assert [c["ok"] for c in first["checks"]] == [False, False, True, True]
    assert [c["step"] for c in first["checks"]] == [1, 2, 3, 4]
    assert first["checks"][0]["message_fr"].startswith("Aucun connecteur n'est associé au cabinet")

    await api.client.post("/cabinets/cab-a/connectors", json={"connector_id": "acd"},
                          headers=api.admin)
    second = (await api.client.get(f"/ibans/{BOUND}/diagnosis", headers=api.collaborator)).json()
    assert second["verdict"] == "bind_iban"

    await api.client.put(f"/ibans/{BOUND}/connector", json={"connector_id": "acd"},
                         headers=api.collaborator)
    third = (await api.client.get(f"/ibans/{BOUND}/diagnosis", headers=api.collaborator)).json()
    assert third["verdict"] == "contact_support"
    assert all(c["ok"] for c in third["checks"])
    assert "contactez le support" in third["message_fr"]

    await api.client.put(f"/ibans/{PENDING}/connector", json={"connector_id": "acd"},
                         headers=api.collaborator)
    pending = (await api.client.get(f"/ibans/{PENDING}/diagnosis", headers=api.admin)).json()
    assert pending["verdict"] == "approve_mandate"
    assert pending["checks"][2]["message_en"].startswith("The mandate is pending")


async def test_unknown_routes_answer_json(api: Seed) -> None:
    response = await api.client.get("/nope", headers=api.admin)
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
