"""The operator endpoints (/ops/dlq) through the real app, store and broker."""

from __future__ import annotations

import httpx

from config.catalogue import default_catalogue
from events.topics import Topics
from routing.broker import EmbeddedBroker
from routing.entrypoints.api.ops import ops_router
from tests.eventually import eventually
from tests.integration.ops_api import Ops, bearer
from tests.unit.delivery.factories import make_delivery

from .conftest import produce, running, webhook
from .receiver import Reply, WebhookReceiver


async def test_ops_routes_refuse_anyone_but_the_operator(ops: Ops) -> None:
    for headers in ({}, bearer("sro_not-the-token"), ops.admin):
        for method, url, body in (("GET", "/ops/dlq/acd", None),
                                  ("POST", "/ops/dlq/acd/replay", {"all": True})):
            response = await ops.client.request(method, url, headers=headers, json=body)
            assert response.status_code == 401, (headers, url)
            assert set(response.json()) == {"error", "detail"}
            assert response.json()["error"] == "unauthenticated"


async def test_unconfigured_operator_access_refuses_everyone(topics: Topics) -> None:
    from fastapi import FastAPI

    from routing.entrypoints.api.errors import install_error_handlers

    app = FastAPI()
    install_error_handlers(app, ())
    app.include_router(ops_router(topics, default_catalogue(), bootstrap_servers="x:1",
                                  operator_token_sha256=None))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/ops/dlq/acd", headers=bearer("anything"))
    assert response.status_code == 401
    assert "OPERATOR_TOKEN_SHA256" in response.json()["detail"]


async def test_list_and_replay_dead_letters_over_http(
    ops: Ops, kafka_broker: EmbeddedBroker, topics: Topics, receiver: WebhookReceiver
) -> None:
    acd = receiver.partner("acd")
    acd.script(Reply(400), Reply(400))
    await produce(kafka_broker.bootstrap_servers, topics, "acd",
                  [make_delivery("st-ops-1"), make_delivery("st-ops-2")])

    async with running(kafka_broker, topics, {"acd": webhook(acd)}) as pool:
        await eventually(lambda: pool.stats["acd"].dead_lettered == 2, what="dead letters")

        listed = await ops.client.get("/ops/dlq/acd", headers=ops.operator)
        assert listed.status_code == 200, listed.text
        body = listed.json()
        assert body["open"] == 2
        first = body["dead_letters"][0]
        assert first["statement_id"] == "st-ops-1"
        assert first["iban"] == "FR76 **** **** **** **** ***0 189"
        assert (first["attempts"], first["last_status_code"]) == (1, 400)
        assert "content_b64" not in listed.text

        one = await ops.client.post("/ops/dlq/acd/replay", headers=ops.operator,
                                    json={"statement_id": "st-ops-1"})
        assert one.status_code == 200, one.text
        assert one.json()["replayed"] == ["st-ops-1"]
        twice = await ops.client.post("/ops/dlq/acd/replay", headers=ops.operator,
                                      json={"statement_id": "st-ops-1"})
        assert twice.status_code == 409 and twice.json()["error"] == "already_replayed"
        rest = await ops.client.post("/ops/dlq/acd/replay", headers=ops.operator,
                                     json={"all": True})
        assert rest.json()["replayed"] == ["st-ops-2"]
        await eventually(lambda: len(receiver.delivered("acd")) == 2, what="the replays")

    missing = await ops.client.post("/ops/dlq/acd/replay", headers=ops.operator,
                                    json={"statement_id": "st-never"})
    assert missing.status_code == 404 and missing.json()["error"] == "dead_letter_not_found"
    unknown = await ops.client.get("/ops/dlq/nope", headers=ops.operator)
    assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_connector"
    bad = await ops.client.post("/ops/dlq/acd/replay", headers=ops.operator, json={})
    assert bad.status_code == 422 and bad.json()["error"] == "invalid_request"
    assert [h.webhook_statement for h in receiver.delivered("acd")] == ["st-ops-1", "st-ops-2"]
