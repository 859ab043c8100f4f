"""An invalid record is logged at warning level: it is bad input someone must look at,
not the normal flow that info narrates (issue 14)."""

from __future__ import annotations

from structlog.testing import capture_logs

from routing.router.sink import MemorySink
from tests.unit.router.factories import IBAN_A
from tests.unit.router.test_router_core import TOPICS, Harness, make_router


async def test_an_invalid_record_is_a_warning_with_its_reason() -> None:
    sink = MemorySink()
    h = Harness(make_router(sink), sink)
    with capture_logs() as logs:
        await h.put_raw(b"not json at all", key=IBAN_A.encode())

    assert len(h.on(TOPICS.invalid)) == 1
    [entry] = [e for e in logs if e["event"] == "record_invalid"]
    assert entry["log_level"] == "warning"
    assert entry["reason"].startswith("value is not JSON")
