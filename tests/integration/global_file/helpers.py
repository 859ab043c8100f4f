"""Helpers of the broker tests: publishing routed events, waiting for a condition."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

from events.schemas import CheckTrace, RoutingTrace, StatementGlobalFile

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    what: str,
    within: float = 60.0,
) -> T:
    """Poll ``probe`` until ``done`` holds for its result; fail after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        value = await probe()
        if done(value):
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last value: {value!r}")
        await asyncio.sleep(0.2)


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
