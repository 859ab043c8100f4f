"""build_events / prepare_file: exact events, stable ids, all-or-nothing refusals by line."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from adapters.ingest import (
    BalanceMismatch,
    BankFileError,
    InvalidAccount,
    MalformedRecord,
    UnknownFormat,
    UnsafeXml,
    parse_file,
)
from adapters.ingest.producer import (
    MAX_EVENT_BYTES,
    MAX_SOURCE_LENGTH,
    InvalidEvent,
    StatementTooLarge,
    build_events,
    default_source,
    prepare_file,
    statement_id,
)
from events.limits import MAX_STATEMENT_BYTES
from events.schemas import StatementReceived
from routing.domain.iban import mask_iban

from .cfonb_writer import WMovement, WStatement, render
from .samples import sample

IBAN_A = "FR7630006000011234567890189"
IBAN_B = "FR7630004008250001234567886"
IBAN_C = "FR6010278060760001234F50152"
MON, TUE = date(2025, 3, 3), date(2025, 3, 4)
NOW = datetime(2025, 3, 5, 6, 30, tzinfo=UTC)

GOOD = {
    "cfonb120-multi.txt": ("cfonb120", 6),
    "cfonb120-multi-nobreaks.txt": ("cfonb120", 6),
    "camt053-multi.xml": ("camt053", 3),
    "mt940-multi.sta": ("mt940", 2),
}
BROKEN: dict[str, tuple[type[BankFileError], int, str]] = {
    "cfonb120-bad-rib.txt": (InvalidAccount, 1, "cannot form a RIB"),
    "cfonb120-balance-mismatch.txt": (BalanceMismatch, 6, "balances do not add up"),
    "cfonb120-truncated.txt": (MalformedRecord, 4, "truncated record"),
    "camt053-doctype.xml": (UnsafeXml, 2, "DOCTYPE"),
}


def events_of(name: str, data: bytes | None = None, **kwargs: object) -> list[StatementReceived]:
    options: dict[str, object] = {"filename": name, "now": NOW, **kwargs}
    return build_events(sample(name) if data is None else data, **options)  # type: ignore[arg-type]


# --- the sample CFONB file, field by field -------------------------------------------------


def test_the_cfonb_sample_gives_one_exact_event_per_statement() -> None:
    data = sample("cfonb120-multi.txt")
    events = events_of("cfonb120-multi.txt")
    statements = parse_file(data)

    assert len(events) == 6
    assert [(e.iban, e.period_start, e.period_end) for e in events] == [
        (IBAN_A, MON, MON),
        (IBAN_B, MON, MON),
        (IBAN_C, MON, MON),
        (IBAN_A, TUE, TUE),
        (IBAN_B, TUE, TUE),
        (IBAN_C, TUE, TUE),
    ]
    for event, statement in zip(events, statements, strict=True):
        content = base64.b64decode(event.content_b64, validate=True)
        assert content == statement.raw
        assert content in data  # exact bytes of the file, not a re-rendering
        assert event.content_sha256 == hashlib.sha256(content).hexdigest()
        assert event.format == "cfonb120"
        assert event.received_at == NOW
        assert event.source == "file:cfonb120-multi.txt"
        assert event.schema_ == "statement.received/v1"
        assert json.loads(event.to_json())["schema"] == "statement.received/v1"


def test_the_statement_id_follows_the_documented_rule() -> None:
    data = sample("cfonb120-multi.txt")
    first = parse_file(data)[0]
    expected = (
        "cfonb120-"
        + hashlib.sha256(f"{IBAN_A}|2025-03-03|2025-03-03|".encode() + first.raw).hexdigest()[:32]
    )

    assert events_of("cfonb120-multi.txt")[0].statement_id == expected
    assert statement_id("cfonb120", IBAN_A, MON, MON, first.raw) == expected


@pytest.mark.parametrize("name", sorted(GOOD))
def test_every_good_sample_builds_its_events(name: str) -> None:
    fmt, count = GOOD[name]
    events = events_of(name)

    assert len(events) == count
    assert {e.format for e in events} == {fmt}
    assert all(e.statement_id.startswith(f"{fmt}-") for e in events)
    assert len({e.statement_id for e in events}) == count


def test_source_and_format_can_be_given() -> None:
    events = events_of("mt940-multi.sta", fmt="mt940", source="bank-feed:sobank")
    assert {e.source for e in events} == {"bank-feed:sobank"}


def test_received_at_is_the_ingestion_time_in_utc() -> None:
    paris = timezone(timedelta(hours=1))
    events = events_of("mt940-multi.sta", now=datetime(2025, 3, 5, 7, 30, tzinfo=paris))
    assert {e.received_at for e in events} == {NOW}
    assert {e.received_at.utcoffset() for e in events} == {timedelta(0)}
    with pytest.raises(ValueError, match="timezone-aware"):
        events_of("mt940-multi.sta", now=datetime(2025, 3, 5, 6, 30))


def test_the_default_source_is_the_base_name_cut_to_the_contract() -> None:
    assert default_source("/drops/sobank/releve.txt") == "file:releve.txt"
    assert default_source(None) == "file:unnamed"
    long = default_source("x" * 500 + ".txt")
    assert len(long) == MAX_SOURCE_LENGTH
    # A long file name must never refuse a good file.
    assert len(events_of("mt940-multi.sta", filename="y" * 400 + ".sta")) == 2


# --- stable ids ----------------------------------------------------------------------


def test_the_same_bytes_give_the_same_ids_at_any_time_and_from_any_source() -> None:
    first = events_of("cfonb120-multi.txt")
    again = events_of("cfonb120-multi.txt", now=NOW + timedelta(days=3), source="replay")
    assert [e.statement_id for e in again] == [e.statement_id for e in first]
    assert [e.content_sha256 for e in again] == [e.content_sha256 for e in first]


def test_one_changed_byte_changes_only_its_statements_id() -> None:
    data = sample("cfonb120-multi.txt")
    assert data.count(b"ACME") == 1  # in the first statement's first movement
    changed = data.replace(b"ACME", b"ACMF")

    before = [e.statement_id for e in events_of("cfonb120-multi.txt", data)]
    after = [e.statement_id for e in events_of("cfonb120-multi.txt", changed)]

    assert after[0] != before[0]
    assert after[1:] == before[1:]


def test_a_statement_sent_in_another_file_keeps_its_id() -> None:
    """The id depends on the statement's own bytes, not on the rest of the file."""
    data = sample("cfonb120-multi.txt")
    statements = parse_file(data)
    alone = events_of("one.txt", statements[4].raw)
    assert [e.statement_id for e in alone] == [events_of("cfonb120-multi.txt")[4].statement_id]


def test_prepare_file_sends_exactly_the_built_events_keyed_by_iban() -> None:
    prepared = prepare_file(sample("camt053-multi.xml"), filename="camt053-multi.xml", now=NOW)
    events = events_of("camt053-multi.xml")

    assert prepared.format == "camt053"
    assert [r.key for r in prepared.records] == [e.iban.encode() for e in events]
    assert [r.value for r in prepared.records] == [e.to_json() for e in events]
    assert [r.statement_id for r in prepared.records] == [e.statement_id for e in events]


# --- all or nothing ------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_every_broken_sample_is_refused_naming_its_line(name: str) -> None:
    kind, line, words = BROKEN[name]
    with pytest.raises(kind) as refused:
        events_of(name)
    assert refused.value.line == line
    assert words in refused.value.reason
    assert str(refused.value).startswith(f"line {line}: ")


def test_a_good_statement_before_a_bad_one_is_not_returned() -> None:
    data = sample("cfonb120-balance-mismatch.txt")
    assert len(parse_file(data[: data.index(b"\r\n01") + 2])) == 1  # statement 1 is good
    with pytest.raises(BalanceMismatch):
        events_of("cfonb120-balance-mismatch.txt")


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(UnknownFormat, match="not CFONB 120"):
        events_of("notes.txt", b"hello\n")


def test_a_statement_that_cannot_form_an_event_refuses_the_file_by_line() -> None:
    with pytest.raises(InvalidEvent) as refused:
        events_of("cfonb120-multi.txt", source="s" * (MAX_SOURCE_LENGTH + 1))
    assert refused.value.line == 1
    assert "source" in refused.value.reason
    assert mask_iban(IBAN_A) in refused.value.reason
    assert "sss" not in refused.value.reason  # the input values stay out of the message


def test_a_statement_over_the_size_limit_refuses_the_file() -> None:
    small = WStatement("30006", "00001", "12345678901", MON, TUE, 100)
    big = WStatement(
        "30004",
        "00825",
        "00012345678",
        MON,
        TUE,
        0,
        tuple(
            WMovement(TUE, TUE, 1, f"LINE {n}", f"REF{n:013d}", ("MORE TEXT",))
            for n in range(4_500)
        ),
    )
    data, parsed = render([small, big])
    size = len(parsed[1].raw)
    assert size > MAX_STATEMENT_BYTES
    assert len(base64.b64encode(parsed[1].raw)) > MAX_EVENT_BYTES

    with pytest.raises(StatementTooLarge) as refused:
        events_of("big.txt", data)
    assert refused.value.line == parsed[1].first_line == 3
    assert mask_iban(IBAN_B) in refused.value.reason
    assert IBAN_B not in refused.value.reason
    assert f"is {size:,} bytes, over the limit of 1,048,576 bytes for one statement" in (
        refused.value.reason
    )
