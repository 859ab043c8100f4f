"""The webhook adapter against a real HTTP receiver that verifies Standard Webhooks signatures."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from pydantic import SecretStr

from adapters.delivery import WebhookDeliverer, WebhookEndpoint
from routing.domain.identity import statement_key
from tests.unit.delivery.factories import IBAN, make_delivery, make_webhook_secret

from .conftest import Reply, WebhookReceiver, unused_port

MakeDeliverer = Callable[..., WebhookDeliverer]


@pytest.fixture
async def make_deliverer(
    webhook_receiver: WebhookReceiver,
) -> AsyncIterator[MakeDeliverer]:
    """Builds deliverers aimed at the receiver (by default signing with its secret)."""
    made: list[WebhookDeliverer] = []

    def make(
        *,
        secrets: list[str] | None = None,
        url: str | None = None,
        unchecked_timeout: float | None = None,
    ) -> WebhookDeliverer:
        endpoint = WebhookEndpoint(
            url=url or webhook_receiver.url,
            secrets=tuple(SecretStr(s) for s in (secrets or webhook_receiver.secrets)),
        )
        deliverer = WebhookDeliverer(endpoint, unchecked_timeout=unchecked_timeout)
        made.append(deliverer)
        return deliverer

    yield make
    for deliverer in made:
        await deliverer.close()


async def test_a_2xx_is_delivered_with_verified_signature_exact_body_and_headers(
    webhook_receiver: WebhookReceiver, make_deliverer: MakeDeliverer
) -> None:
    delivery = make_delivery("stmt-ok-1")
    before = int(time.time())

    result = await make_deliverer().deliver(delivery)

    assert (result.kind, result.status_code, result.retry_after) == ("delivered", 200, None)
    [request] = webhook_receiver.received
    assert request.verified, request.verification_error
    assert request.body == delivery.to_json()
    assert json.loads(request.body)["schema"] == "statement.partner-delivery/v1"
    key = statement_key(IBAN, "stmt-ok-1", delivery.content_sha256)
    assert request.headers["webhook-id"] == f"stmt-ok-1.{key}"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == "statement-router-webhook/1"  # docs/delivery.md
    assert before <= int(request.headers["webhook-timestamp"]) <= int(time.time())
    assert request.headers["webhook-signature"].startswith("v1,")


async def test_the_webhook_id_is_the_same_on_every_attempt(
    webhook_receiver: WebhookReceiver, make_deliverer: MakeDeliverer
) -> None:
    webhook_receiver.script(Reply(500), Reply(200))
    deliverer = make_deliverer()
    delivery = make_delivery("stmt-retried")

    first = await deliverer.deliver(delivery)
    second = await deliverer.deliver(delivery)

    assert (first.kind, second.kind) == ("retry", "delivered")
    ids = [r.headers["webhook-id"] for r in webhook_receiver.received]
    key = statement_key(IBAN, "stmt-retried", delivery.content_sha256)
    assert ids == [f"stmt-retried.{key}", f"stmt-retried.{key}"]
    assert all(r.verified for r in webhook_receiver.received)
    assert webhook_receiver.received[0].body == webhook_receiver.received[1].body


async def test_rotation_signs_with_every_secret_so_either_side_verifies(
    webhook_receiver: WebhookReceiver, make_deliverer: MakeDeliverer
) -> None:
    old, new = webhook_receiver.secrets[0], make_webhook_secret()
    deliverer = make_deliverer(secrets=[new, old])

    webhook_receiver.secrets = [new]  # the partner already switched
    switched = await deliverer.deliver(make_delivery("stmt-rot-1"))
    webhook_receiver.secrets = [old]  # or has not yet
    not_yet = await deliverer.deliver(make_delivery("stmt-rot-2"))

    assert (switched.kind, not_yet.kind) == ("delivered", "delivered")
    assert all(r.verified for r in webhook_receiver.received)
    assert len(webhook_receiver.received[0].headers["webhook-signature"].split(" ")) == 2


async def test_a_wrong_secret_is_refused_by_the_receiver_and_is_permanent(
    webhook_receiver: WebhookReceiver, make_deliverer: MakeDeliverer
) -> None:
    result = await make_deliverer(secrets=[make_webhook_secret()]).deliver(make_delivery())

    assert (result.kind, result.status_code) == ("permanent", 401)
    assert "signing secrets" in result.detail
    assert not webhook_receiver.received[0].verified


async def test_server_errors_retry(
    webhook_receiver: WebhookReceiver, make_deliverer: MakeDeliverer
) -> None:
    webhook_receiver.script(Reply(500, body=b"database down"), Reply(503), Reply(408))
    deliverer = make_deliverer()

    results = [await deliverer.deliver(make_delivery(f"stmt-{i}")) for i in range(3)]

    assert [(r.kind, r.status_code, r.retry_after) for r in results] == [
        ("retry", 500, None),
        ("retry", 503, None),
        ("retry", 408, None),
    ]
    assert "database down" in results[0].detail


async def test_429_honours_retry_after_in_seconds(
    webhook_receiver: WebhookReceiver, make_deliverer: MakeDeliverer
) -> None:
    webhook_receiver.script(Reply(429, headers={"Retry-After": "7"}))

    result = await make_deliverer().deliver(make_delivery())

    assert (result.kind, result.status_code, result.retry_after) == ("retry", 429, 7.0)


async def test_503_honours_retry_after_as_an_http_date(
    webhook_receiver: WebhookReceiver, make_deliverer: MakeDeliverer
) -> None:
    when = datetime.now(UTC) + timedelta(seconds=120)
    webhook_receiver.script(Reply(503, headers={"Retry-After": format_datetime(when, True)}))

    result = await make_deliverer().deliver(make_delivery())

    assert result.kind == "retry"
    assert result.retry_after is not None
    assert 115 <= result.retry_after <= 120


async def test_a_400_is_permanent_with_the_partners_reason(
    webhook_receiver: WebhookReceiver, make_deliverer: MakeDeliverer
) -> None:
    webhook_receiver.script(Reply(400, body=b'{"error": "unknown client_ref"}'))

    result = await make_deliverer().deliver(make_delivery())

    assert (result.kind, result.status_code, result.retry_after) == ("permanent", 400, None)
    assert "unknown client_ref" in result.detail


async def test_410_gone_disables_the_connector(
    webhook_receiver: WebhookReceiver, make_deliverer: MakeDeliverer
) -> None:
    webhook_receiver.script(Reply(410))

    result = await make_deliverer().deliver(make_delivery())

    assert (result.kind, result.status_code) == ("disabled", 410)
    assert "endpoint was removed" in result.detail


async def test_a_redirect_is_not_followed_and_is_permanent(
    webhook_receiver: WebhookReceiver, make_deliverer: MakeDeliverer
) -> None:
    webhook_receiver.script(Reply(301, headers={"Location": "http://127.0.0.1:1/elsewhere"}))

    result = await make_deliverer().deliver(make_delivery())

    assert (result.kind, result.status_code) == ("permanent", 301)
    assert len(webhook_receiver.received) == 1


async def test_a_receiver_slower_than_the_timeout_is_retried(
    webhook_receiver: WebhookReceiver, make_deliverer: MakeDeliverer
) -> None:
    webhook_receiver.script(Reply(200, delay=30))

    # The receiver answers after 30 s: only the deliverer's own timeout ends the call first.
    result = await asyncio.wait_for(
        make_deliverer(unchecked_timeout=0.3).deliver(make_delivery()), 20
    )

    assert (result.kind, result.status_code) == ("retry", None)
    assert "within 0.3 s" in result.detail


async def test_a_refused_connection_is_retried(make_deliverer: MakeDeliverer) -> None:
    url = f"http://127.0.0.1:{unused_port()}/hooks/statements"

    result = await make_deliverer(url=url).deliver(make_delivery())

    assert (result.kind, result.status_code) == ("retry", None)
    assert "could not reach the partner" in result.detail


async def test_the_deliverer_keeps_working_after_failures(
    webhook_receiver: WebhookReceiver, make_deliverer: MakeDeliverer
) -> None:
    webhook_receiver.script(Reply(200, delay=30), Reply(500), Reply(200))
    deliverer = make_deliverer(unchecked_timeout=0.5)

    kinds = [(await deliverer.deliver(make_delivery(f"s-{i}"))).kind for i in range(3)]

    assert kinds == ["retry", "retry", "delivered"]
