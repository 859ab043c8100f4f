"""The fast path for plain statements accepts only what the strict decoder accepts, with the
same fields, and does accept the plain records it is there for.

The comparison runs on generated records: valid ones written every way the contract
allows, and ones broken in each field, in the JSON and in the base64. A record the fast
path is not sure of must come out as None (the strict decoder then decides); a record it
accepts must be one the strict decoder accepts, with equal fields.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from events.received_fast_path import plainly_valid_statement_fields
from events.schemas import StatementReceived
from events.wire import InvalidEvent, decode
from routing.router.codec import statement_fields, statement_fields_of
from tests.unit.router.factories import BAD_IBAN, IBAN_A, IBAN_B, statement, statement_doc


def strict_fields(value: bytes) -> dict[str, Any] | None:
    try:
        return statement_fields(decode(value, StatementReceived, where="statements.received"))
    except InvalidEvent:
        return None


def record(**overrides: Any) -> bytes:
    return json.dumps({**statement_doc("feed:2026-01-02.001", IBAN_A), **overrides}).encode()


def assert_agrees(value: bytes) -> dict[str, Any] | None:
    fast = plainly_valid_statement_fields(value)
    if fast is not None:
        assert fast == strict_fields(value), value
    return fast


# --- the plain records: taken by the fast path, with the strict decoder's fields ---------


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"received_at": "2026-01-02T06:00:00Z"},
        {"received_at": "2026-01-02T06:00:00-00:00"},
        {"received_at": "2026-01-02T07:00:00+01:00"},
        {"received_at": "2026-01-02T07:00:00.5+01:00"},
        {"received_at": "2026-01-02T07:00:00.000000+02:00"},
        {"received_at": "2026-01-02T07:00:00.123456-05:30"},
        {"iban": "fr76 3000 6000 0112 3456 7890 189"},
        {"period_end": "2026-01-31", "format": "camt053"},
        {"format": "mt940", "extra": {"unknown": ["fields", "are", "ignored"]}},
        {"statement_id": "A" * 200, "source": "s" * 200},
    ],
)
def test_a_plain_record_takes_the_fast_path_with_the_strict_fields(overrides: dict) -> None:
    value = record(**overrides)
    fast = plainly_valid_statement_fields(value)
    assert fast is not None
    assert fast == strict_fields(value)
    assert statement_fields_of(value) == fast


# --- records the fast path leaves to the strict decoder ---------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"iban": BAD_IBAN},  # refused by the strict decoder
        {"statement_id": "A" * 201},
        {"statement_id": "bad id"},
        {"format": "CFONB120"},
        {"period_start": "2026-02-30"},
        {"period_start": "2026-01-02", "period_end": "2026-01-01"},
        {"received_at": "2026-01-02T06:00:00"},  # naive
        {"received_at": "2026-01-02T06:00:60+00:00"},
        {"content_sha256": "0" * 64},
        {"content_b64": "YQ="},
        {"source": ""},
        {"schema": "statement.received/v2"},
        # Accepted by the strict decoder, but not in the fast path's plain shape:
        {"received_at": "2026-01-02 06:00:00+00:00"},
        {"received_at": "2026-01-02T06:00+00:00"},
        {"period_start": "2026-01-01T00:00:00"},
    ],
)
def test_any_other_record_is_left_to_the_strict_decoder(overrides: dict) -> None:
    value = record(**overrides)
    assert plainly_valid_statement_fields(value) is None
    strict = strict_fields(value)
    if strict is None:
        with pytest.raises(InvalidEvent) as caught:
            statement_fields_of(value)
        with pytest.raises(InvalidEvent) as reference:
            decode(value, StatementReceived, where="statements.received")
        assert caught.value.reason == reference.value.reason
    else:
        assert statement_fields_of(value) == strict


def test_a_missing_field_is_left_to_the_strict_decoder() -> None:
    for field in statement_doc("s1", IBAN_A):
        doc = statement_doc("s1", IBAN_A)
        del doc[field]
        assert plainly_valid_statement_fields(json.dumps(doc).encode()) is None, field


# --- generated records: the fast path never accepts more, nor gives other fields --------
#
# Each record is valid but for at most one field, so that every check of the fast path is
# reached and its own fault found: a record broken everywhere would be refused by the
# first check whatever the others do.

ZONES = [UTC, timezone(timedelta(hours=1)), timezone(timedelta(hours=-5, minutes=-30))]
instants = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.sampled_from(ZONES)
)
days = st.dates(min_value=date(1, 1, 2), max_value=date(9999, 12, 30))


@st.composite
def instant_texts(draw: st.DrawFn) -> str:
    """An instant written as the contract allows: seconds or more, "Z" or an offset."""
    text = draw(instants).isoformat(
        timespec=draw(st.sampled_from(["seconds", "milliseconds", "microseconds", "auto"]))
    )
    return draw(st.sampled_from([text, text.replace("+00:00", "Z"), text.replace("+", "-")]))


@st.composite
def broken_instants(draw: st.DrawFn) -> Any:
    text = draw(instant_texts())
    return draw(
        st.sampled_from(
            [
                text.replace("T", " "),
                text[:19],  # naive
                text[:16] + text[19:],  # no seconds
                text[:17] + "60" + text[19:],
                text[:-3] + text[-2:] if text[-3] == ":" else text + "+0100",
                text[:17] + "5٣" + text[19:],  # a digit of another script
                text[:-6] + "+24:00" if text[-3] == ":" else text,
            ]
        )
        | st.text(max_size=30)
        | st.integers()
    )


@st.composite
def broken_dates(draw: st.DrawFn) -> Any:
    text = draw(days).isoformat()
    return draw(
        st.sampled_from([text.replace("-", ""), text + "T00:00:00", text + "T01:00:00"])
        | st.text(alphabet="0123456789-T:", max_size=12)
        | st.integers(min_value=-(10**12), max_value=10**12)
    )


def broken_base64(encoded: str) -> st.SearchStrategy[Any]:
    return st.sampled_from(
        [
            encoded.rstrip("="),
            encoded + "=",
            encoded + "\n",
            " " + encoded,
            encoded.replace("+", "-").replace("/", "_"),
            encoded[:1] + "=" + encoded[1:],
            encoded + encoded,
            encoded[:-1],
        ]
    ) | st.text(alphabet="ABCDabcd0189+/=-_ \n", max_size=12)


VALID: dict[str, st.SearchStrategy[Any]] = {
    "statement_id": st.sampled_from(["s1", "feed:2026.01-02_x", "a" * 200])
    | st.from_regex(r"[A-Za-z0-9._:\-]{1,30}", fullmatch=True),
    "iban": st.sampled_from(
        [IBAN_A, IBAN_B, IBAN_A.lower(), f"{IBAN_A[:4]} {IBAN_A[4:]}", "DE89370400440532013000"]
    ),
    "format": st.sampled_from(["cfonb120", "camt053", "mt940"]),
    "received_at": instant_texts(),
    "source": st.text(min_size=1, max_size=200),
}
BROKEN: dict[str, st.SearchStrategy[Any]] = {
    "statement_id": st.sampled_from(["a" * 201, "", "é", "a b", "a\n"]) | st.text(max_size=8),
    "iban": st.sampled_from([BAD_IBAN, "FR76", IBAN_A + "0" * 20, f"\u00a0{IBAN_A}", ""])
    | st.integers()
    | st.text(max_size=8),
    "format": st.sampled_from(["CFONB120", "mt940 ", "x"]) | st.none(),
    "period_start": broken_dates(),
    "period_end": broken_dates(),
    "received_at": broken_instants(),
    "source": st.sampled_from(["", "s" * 201]) | st.integers(),
    "schema": st.sampled_from(["statement.received/v2", "iban.state/v1"]) | st.none(),
    "content_sha256": st.none() | st.integers(),
}


@st.composite
def statements(draw: st.DrawFn) -> bytes:
    """A valid statement, written any way the contract allows, or broken in one field."""
    doc: dict[str, Any] = statement_doc("s1", IBAN_A)
    for field, values in VALID.items():
        doc[field] = draw(values)
    start = draw(days)
    doc["period_start"] = start.isoformat()
    doc["period_end"] = (start + timedelta(days=draw(st.integers(0, 40)))).isoformat()
    raw = draw(st.binary(max_size=40))
    doc["content_b64"] = base64.b64encode(raw).decode()
    doc["content_sha256"] = hashlib.sha256(raw).hexdigest()
    fault = draw(
        st.sampled_from(
            [None, "missing", "period order", "content", "digest", "duplicate", *BROKEN]
        )
    )
    if fault == "missing":
        del doc[draw(st.sampled_from(sorted(doc)))]
    elif fault == "period order":
        doc["period_start"], doc["period_end"] = doc["period_end"], doc["period_start"]
        if doc["period_start"] == doc["period_end"]:
            doc["period_start"] = "9999-12-31"
    elif fault == "content":
        doc["content_b64"] = draw(broken_base64(doc["content_b64"]))
    elif fault == "digest":
        digest = doc["content_sha256"]
        doc["content_sha256"] = draw(st.sampled_from([digest.upper(), digest[:-1], "0" * 64]))
    elif fault is not None and fault != "duplicate":
        doc[fault] = draw(BROKEN[fault])
    text = json.dumps(doc, ensure_ascii=draw(st.booleans()))
    if fault == "duplicate":  # the same field twice: the last one counts, for both decoders
        field = draw(st.sampled_from(sorted(doc)))
        text = text[:-1] + f", {json.dumps(field)}: {json.dumps(draw(st.text(max_size=30)))}}}"
    return text.encode()


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(statements())
@example(statement("s1", IBAN_A))
def test_the_fast_path_never_accepts_what_the_strict_decoder_refuses(value: bytes) -> None:
    assert_agrees(value)


def test_the_generated_records_do_reach_the_fast_path() -> None:
    """The comparison above proves something only if it also sees records taken fast."""
    taken = seen = 0

    @settings(max_examples=500, deadline=None, database=None)
    @given(statements())
    def count(value: bytes) -> None:
        nonlocal taken, seen
        seen += 1
        if assert_agrees(value) is not None:
            taken += 1

    count()
    assert taken >= seen // 10
