"""Builders of global-file entries and outcome records for the global-file and ledger tests."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime
from typing import Any

from routing.domain.iban import iban_from_rib
from routing.ports import GlobalFileEntry, OutcomeRecord


def iban(n: int) -> str:
    """A valid French IBAN, distinct for each n."""
    return iban_from_rib("30006", "00001", f"{n:011d}")


def cfonb_record(kind: str, tag: str) -> bytes:
    """One 120-character CFONB-like record: its type, then ``tag`` to tell records apart."""
    return (kind + " " + tag).ljust(120, ".").encode("latin-1")


def cfonb_content(tag: str, *, sep: bytes = b"\r\n", trailing: bool = True) -> bytes:
    """A three-record CFONB 120 statement (01, 04, 07) with the given line separator."""
    body = sep.join(cfonb_record(k, f"{tag}-{k}") for k in ("01", "04", "07"))
    return body + (sep if trailing else b"")


def entry(
    statement_id: str,
    *,
    cabinet_id: str = "cab-a",
    account: int = 1,
    fmt: str = "cfonb120",
    content: bytes | None = None,
    period: tuple[str, str] = ("2026-01-05", "2026-01-05"),
    received_at: datetime = datetime(2026, 1, 6, 6, 0, tzinfo=UTC),
    client_ref: str | None = "client-1",
    routing: dict[str, Any] | None = None,
    offset: int = 0,
) -> GlobalFileEntry:
    data = content if content is not None else cfonb_content(statement_id)
    decided = datetime(2026, 1, 6, 6, 0, 1, tzinfo=UTC)
    return GlobalFileEntry(
        statement_id=statement_id,
        cabinet_id=cabinet_id,
        iban=iban(account),
        client_ref=client_ref,
        format=fmt,
        period_start=date.fromisoformat(period[0]),
        period_end=date.fromisoformat(period[1]),
        received_at=received_at,
        source="test-feed",
        content=data,
        content_sha256=hashlib.sha256(data).hexdigest(),
        routed_at=decided,
        routing=routing
        if routing is not None
        else {
            "destination": "global-file",
            "reason": "unbound",
            "checks": [
                {"name": "connector_on_cabinet", "ok": True},
                {"name": "iban_bound", "ok": False},
                {"name": "mandate_approved", "ok": True},
            ],
            "state_version": 3,
            "decided_at": decided.isoformat(),
        },
        kafka_topic="t.statements.global-file",
        kafka_partition=0,
        kafka_offset=offset,
    )


def outcome(
    statement_id: str,
    kind: str,
    minute: int,
    *,
    account: int = 1,
    cabinet_id: str | None = "cab-a",
    connector_id: str | None = None,
    attempt: int | None = None,
    detail: str | None = None,
    routing: dict[str, Any] | None = None,
    content_sha256: str | None = None,
) -> OutcomeRecord:
    return OutcomeRecord(
        statement_id=statement_id,
        outcome=kind,
        at=datetime(2026, 1, 6, 7, minute, tzinfo=UTC),
        iban=iban(account),
        cabinet_id=cabinet_id,
        connector_id=connector_id,
        attempt=attempt,
        detail=detail,
        routing=routing,
        content_sha256=content_sha256,
    )
