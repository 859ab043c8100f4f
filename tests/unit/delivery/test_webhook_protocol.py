"""Standard Webhooks signing, HTTP status classification and Retry-After parsing."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook

from adapters.delivery.port import decode_webhook_secret
from adapters.delivery.webhook import classify, parse_retry_after, sign
from tests.unit.delivery.factories import make_webhook_secret

NOW = datetime(2026, 1, 2, 8, 0, 0, tzinfo=UTC)


def test_the_signature_matches_the_specification_test_vector() -> None:
    key = decode_webhook_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")

    signature = sign([key], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')

    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_every_secret_signs_and_the_reference_library_verifies_each() -> None:
    secrets = [make_webhook_secret(), make_webhook_secret(64)]
    body = b'{"schema": "statement.partner-delivery/v1"}'
    timestamp = int(datetime.now(UTC).timestamp())

    header = sign([decode_webhook_secret(s) for s in secrets], "stmt-1", timestamp, body)

    assert len(header.split(" ")) == 2
    headers = {"webhook-id": "stmt-1", "webhook-timestamp": str(timestamp)}
    for secret in secrets:
        Webhook(secret).verify(body, {**headers, "webhook-signature": header}, json_parse=False)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (200, "delivered"),
        (201, "delivered"),
        (202, "delivered"),
        (204, "delivered"),
        (408, "retry"),
        (429, "retry"),
        (500, "retry"),
        (502, "retry"),
        (503, "retry"),
        (504, "retry"),
        (599, "retry"),
        (410, "disabled"),
        (400, "permanent"),
        (401, "permanent"),
        (403, "permanent"),
        (404, "permanent"),
        (409, "permanent"),
        (413, "permanent"),
        (422, "permanent"),
        (301, "permanent"),
        (307, "permanent"),
    ],
)
def test_statuses_map_onto_the_workers_actions(status: int, kind: str) -> None:
    result = classify(status)

    assert (result.kind, result.status_code) == (kind, status)


def test_retry_after_is_only_read_on_retries() -> None:
    assert classify(503, "30").retry_after == 30.0
    assert classify(400, "30").retry_after is None
    assert classify(200, "30").retry_after is None


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("0", 0.0),
        ("120", 120.0),
        (" 15 ", 15.0),
        ("Fri, 02 Jan 2026 08:01:30 GMT", 90.0),
        ("Fri, 02 Jan 2026 07:00:00 GMT", 0.0),  # in the past: now
        (None, None),
        ("", None),
        ("soon", None),
        ("-5", None),
        ("1.5", None),
    ],
)
def test_retry_after_accepts_delta_seconds_and_http_dates(
    value: str | None, seconds: float | None
) -> None:
    assert parse_retry_after(value, now=NOW) == seconds
