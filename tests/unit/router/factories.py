"""Builders of wire records for the router's tests and benchmark: statements and states."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from routing.domain.iban import iban_from_rib

IBAN_A = "FR7630006000011234567890189"
IBAN_B = "FR7630006000000000000004241"  # make_iban(42)
BAD_IBAN = "FR7630006000011234567890188"  # RIB key / check digits wrong


def make_iban(n: int) -> str:
    """The n-th synthetic French IBAN (valid RIB key and check digits)."""
    return iban_from_rib("30006", f"{n // 100_000_000_000 % 100_000:05d}", f"{n % 10**11:011d}")


def statement_doc(
    statement_id: str,
    iban: str,
    *,
    content: bytes = b"0130006    00001EUR2 12345678901  010126",
    **overrides: Any,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schema": "statement.received/v1",
        "statement_id": statement_id,
        "iban": iban,
        "format": "cfonb120",
        "period_start": "2026-01-01",
        "period_end": "2026-01-01",
        "received_at": "2026-01-02T06:00:00+00:00",
        "content_b64": base64.b64encode(content).decode(),
        "source": "test-feed",
        "content_sha256": hashlib.sha256(content).hexdigest(),
    }
    doc.update(overrides)
    return doc


def statement(statement_id: str, iban: str, **overrides: Any) -> bytes:
    return json.dumps(statement_doc(statement_id, iban, **overrides)).encode()


def state_doc(
    iban: str,
    *,
    version: int = 1,
    connector_id: str | None = None,
    connector_on_cabinet: bool = True,
    mandate_status: str = "approved",
    cabinet_id: str = "cab-1",
    client_ref: str | None = "client-1",
) -> dict[str, Any]:
    return {
        "schema": "iban.state/v1",
        "iban": iban,
        "cabinet_id": cabinet_id,
        "client_ref": client_ref,
        "connector_id": connector_id,
        "connector_on_cabinet": connector_on_cabinet,
        "mandate_status": mandate_status,
        "version": version,
        "updated_at": datetime(2026, 1, 1, tzinfo=UTC).isoformat(),
    }


def state(iban: str, **kwargs: Any) -> bytes:
    return json.dumps(state_doc(iban, **kwargs)).encode()
