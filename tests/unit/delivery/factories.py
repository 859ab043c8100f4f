"""Builders of ``statement.partner-delivery/v1`` events and webhook secrets for delivery tests."""

from __future__ import annotations

import base64
import hashlib
import secrets
from datetime import UTC, date, datetime
from typing import Any

from events.schemas import (
    CheckTrace,
    RoutingTrace,
    StatementFormat,
    StatementPartnerDelivery,
)

IBAN = "FR7630006000011234567890189"
#: Another valid IBAN (another account, of another cabinet in the tests that say so).
OTHER_IBAN = "FR7630006000010000000000734"

SAMPLE_CONTENT: dict[StatementFormat, bytes] = {
    "cfonb120": (
        b"0130006    00001EUR2 12345678901  010126"
        + b" " * 50
        + b"0000000012345{"
        + b" " * 16
        + b"\r\n"
    ),
    "camt053": b'<?xml version="1.0" encoding="UTF-8"?>\n<Document>\xc3\xa9</Document>\n',
    "mt940": b":20:STMT\r\n:25:30006/00001234567\r\n:28C:1/1\r\n-\r\n",
}


def make_delivery(
    statement_id: str = "stmt-0001",
    *,
    fmt: StatementFormat = "cfonb120",
    content: bytes | None = None,
    connector_id: str = "acd",
    cabinet_id: str = "cab-1",
    iban: str = IBAN,
    **overrides: Any,
) -> StatementPartnerDelivery:
    """A valid delivery event; ``content_sha256`` always matches the content."""
    body = SAMPLE_CONTENT[fmt] if content is None else content
    fields: dict[str, Any] = {
        "statement_id": statement_id,
        "iban": iban,
        "format": fmt,
        "period_start": date(2026, 1, 1),
        "period_end": date(2026, 1, 1),
        "received_at": datetime(2026, 1, 2, 6, 0, tzinfo=UTC),
        "content_b64": base64.b64encode(body).decode(),
        "source": "test-feed",
        "content_sha256": hashlib.sha256(body).hexdigest(),
        "routing": RoutingTrace(
            destination="partner",
            reason="bound",
            checks=(
                CheckTrace(name="connector_on_cabinet", ok=True),
                CheckTrace(name="iban_bound", ok=True),
                CheckTrace(name="mandate_approved", ok=True),
            ),
            state_version=3,
            decided_at=datetime(2026, 1, 2, 6, 0, 1, tzinfo=UTC),
        ),
        "connector_id": connector_id,
        "cabinet_id": cabinet_id,
        "client_ref": "client-1",
    }
    fields.update(overrides)
    return StatementPartnerDelivery(**fields)


def file_name(statement_id: str = "stmt-0001", **kwargs: Any) -> str:
    """The file name a drop gives ``make_delivery(statement_id, **kwargs)``."""
    from adapters.delivery.naming import delivery_file_name

    return delivery_file_name(make_delivery(statement_id, **kwargs))


def make_webhook_secret(size: int = 32) -> str:
    """A fresh ``whsec_<base64>`` secret, as a partner portal would issue it."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(size)).decode()
