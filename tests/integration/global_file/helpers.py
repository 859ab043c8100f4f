"""Helpers of the broker tests: publishing routed events, waiting for a condition."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from typing import TypeVar

from events.schemas import CheckTrace, RoutingTrace, StatementGlobalFile

T = TypeVar("T")


def global_file_event(
    statement_id: str,
    iban: str,
    *,
    cabinet_id: str = "cab-a",
    content: bytes | None = None,
    period: str = "2026-01-05",
) -> StatementGlobalFile:
    data = content if content is not None else (f"01 {statement_id}".ljust(120)).encode()
    return StatementGlobalFile(
        statement_id=statement_id,
        iban=iban,
        format="cfonb120",
        period_start=period,
        period_end=period,
        received_at=datetime(2026, 1, 6, 6, 0, tzinfo=UTC),
        content_b64=base64.b64encode(data).decode(),
        source="test-feed",
        content_sha256=hashlib.sha256(data).hexdigest(),
        routing=RoutingTrace(
            destination="global-file",
            reason="unbound",
            checks=(
                CheckTrace(name="connector_on_cabinet", ok=True),
                CheckTrace(name="iban_bound", ok=False),
                CheckTrace(name="mandate_approved", ok=True),
            ),
            state_version=2,
            decided_at=datetime(2026, 1, 6, 6, 0, 1, tzinfo=UTC),
        ),
        cabinet_id=cabinet_id,
        client_ref="client-1",
    )
