"""The parsers refuse a statement over the size rule before reading it: its size is the
fault reported, never a parser's error or minutes of parsing."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from adapters.ingest import StatementTooLarge, parse_file
from adapters.ingest.producer import build_events
from events.limits import MAX_STATEMENT_BYTES
from tests.integration.limits.helpers import TWENTY_MB, camt053_of_size

NOW = datetime(2025, 3, 5, 6, 30, tzinfo=UTC)


def mt940_of_at_least(size: int) -> bytes:
    """One MT940 statement of many zero movements, at least ``size`` bytes long."""
    movement = b":61:2503030303C0,00NTRFNONREF//BQ0303F00001\n:86:VIR SEPA RECU /DE GAMMA SA\n"
    head = (
        b"{1:F01SOBKFRPPAXXX0000000000}{2:O9402000250303SOBKFRPPAXXX00000000002503032000N}{4:\n"
        b":20:SOB20250303F\n:25:FR3330002005500000157841Z25\n:28C:00062/001\n"
        b":60F:C250303EUR2750,00\n"
    )
    return head + movement * (size // len(movement) + 1) + b":62F:C250303EUR2750,00\n-}\n"


def test_a_camt053_statement_at_the_limit_is_read_whole() -> None:
    [event] = build_events(camt053_of_size(MAX_STATEMENT_BYTES), filename="a.xml", now=NOW)
    assert len(base64.b64decode(event.content_b64)) == MAX_STATEMENT_BYTES


@pytest.mark.parametrize("size", [MAX_STATEMENT_BYTES + 1, TWENTY_MB])
def test_a_camt053_statement_over_the_limit_is_refused_unread(size: int) -> None:
    """At 20 MB in one text, lxml itself would refuse it as a syntax error (over 10 MB)."""
    with pytest.raises(StatementTooLarge) as refused:
        parse_file(camt053_of_size(size), "camt053")
    assert refused.value.code == "statement_too_large" and refused.value.line == 5
    assert str(refused.value) == (
        f"line 5: the camt.053 statement is {size:,} bytes, over the limit of 1,048,576 bytes "
        "for one statement (MAX_STATEMENT_BYTES, docs/operations.md#limits); it is refused "
        "unread: split the statement or send it by another channel"
    )


def test_an_mt940_statement_over_the_limit_is_refused_unread() -> None:
    data = mt940_of_at_least(2 * MAX_STATEMENT_BYTES)
    with pytest.raises(StatementTooLarge) as refused:
        parse_file(data, "mt940")
    assert refused.value.line == 2
    assert refused.value.reason.startswith("the MT940 statement is ")
    assert "over the limit of 1,048,576 bytes for one statement" in refused.value.reason
