"""The one strict wire decoder: each kind of bad input is refused with its exact reason."""

from __future__ import annotations

import base64
import json

import pytest

from events.schemas import (
    DeliveryOutcome,
    IbanStateEvent,
    StatementGlobalFile,
    StatementInvalid,
    StatementPartnerDelivery,
    StatementReceived,
)
from events.wire import (
    MAX_INVALID_COPY_BYTES,
    InvalidEvent,
    SourceRef,
    decode,
    encode_invalid,
    key_fault,
)
from tests.unit.router.factories import BAD_IBAN, IBAN_A, statement, statement_doc

DEEP = b"[" * 200_000 + b"]" * 200_000


def reason_of(value: bytes | None, model: type = StatementReceived) -> str:
    with pytest.raises(InvalidEvent) as caught:
        decode(value, model, where="statements.received")
    return caught.value.reason


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "null value (tombstone): expected 'statement.received/v1'"),
        (b"\xff\xfe garbage", "value is not UTF-8: invalid start byte at byte 0"),
        (b"not json at all", "value is not JSON: expected ident at line 1 column 2"),
        (
            DEEP,
            "value is not JSON this system reads: nested too deeply (recursion limit "
            "exceeded at line 1 column 202)",
        ),
        (b"[1, 2]", "value is not a JSON object"),
        (b"{}", "missing `schema` field (expected 'statement.received/v1')"),
        (
            json.dumps({**statement_doc("s1", IBAN_A), "schema": "statement.received/v9"}).encode(),
            "unknown schema 'statement.received/v9' (expected 'statement.received/v1')",
        ),
        (
            json.dumps({**statement_doc("s1", IBAN_A), "schema": "iban.state/v1"}).encode(),
            "schema 'iban.state/v1' is not accepted on statements.received "
            "(expected 'statement.received/v1')",
        ),
        (
            json.dumps(
                {k: v for k, v in statement_doc("s1", IBAN_A).items() if k != "schema"}
            ).encode(),
            "missing `schema` field (expected 'statement.received/v1')",
        ),
        (
            statement("s1", BAD_IBAN),
            "field `iban`: IBAN FR76 **** **** **** **** ***0 188 is invalid: Invalid checksum "
            "digits",
        ),
        (
            statement("s1", IBAN_A, content_sha256="0" * 64),
            "content_sha256 does not match the decoded content_b64",
        ),
        (
            statement("s1", IBAN_A, format="pdf"),
            "field `format`: Input should be 'cfonb120', 'camt053' or 'mt940'",
        ),
        (
            statement("s1", IBAN_A, period_start="2026-02-01"),
            "period_end 2026-01-01 is before period_start 2026-02-01",
        ),
    ],
)
def test_each_kind_of_bad_input_has_its_exact_reason(value: bytes | None, reason: str) -> None:
    assert reason_of(value) == reason


def test_a_deep_json_value_is_refused_not_crashed_on() -> None:
    with pytest.raises(InvalidEvent) as caught:
        decode(DEEP, DeliveryOutcome)
    assert caught.value.reason.startswith("value is not JSON this system reads")


def test_the_statement_id_of_a_refused_value_is_kept_when_readable() -> None:
    with pytest.raises(InvalidEvent) as caught:
        decode(statement("s-9", BAD_IBAN), StatementReceived)
    assert caught.value.statement_id == "s-9"


def partner_doc() -> dict[str, object]:
    routing = {
        "destination": "partner",
        "reason": "bound",
        "checks": [],
        "state_version": 1,
        "decided_at": "2026-01-02T06:00:00+00:00",
    }
    return {
        **statement_doc("s1", IBAN_A),
        "schema": "statement.partner-delivery/v1",
        "routing": routing,
        "connector_id": "acd",
        "cabinet_id": "cab-1",
    }


@pytest.mark.parametrize(
    "model", [StatementPartnerDelivery, StatementGlobalFile, DeliveryOutcome, IbanStateEvent]
)
def test_every_consumer_requires_the_schema_field(model: type) -> None:
    doc = partner_doc()
    del doc["schema"]
    assert reason_of(json.dumps(doc).encode(), model).startswith("missing `schema` field")


def test_a_partner_delivery_with_its_schema_is_decoded() -> None:
    event = decode(json.dumps(partner_doc()).encode(), StatementPartnerDelivery)
    assert event.connector_id == "acd"


@pytest.mark.parametrize(
    ("key", "fault"),
    [
        (None, "no key"),
        (b"", "no key"),
        (
            b"\xc3\x28",
            "a key that is not UTF-8 (invalid continuation byte at byte 0; kept as "
            "base64 in raw_key)",
        ),
        (IBAN_A.encode(), None),
    ],
)
def test_key_faults_name_the_real_fault(key: bytes | None, fault: str | None) -> None:
    assert key_fault(key) == fault


def invalid(value: bytes, key: bytes | None = b"k") -> StatementInvalid:
    return StatementInvalid.model_validate_json(
        encode_invalid(
            value=value,
            key=key,
            reason="bad",
            source=SourceRef("t", 2, 7),
            detected_at="2026-01-01T00:00:00+00:00",
        )
    )


def test_an_invalid_record_copies_the_value_up_to_the_limit() -> None:
    value = b"x" * MAX_INVALID_COPY_BYTES
    event = invalid(value)
    assert base64.b64decode(event.raw_b64) == value and event.reason == "bad"


def test_a_larger_value_is_referred_to_not_copied() -> None:
    event = invalid(b"x" * (MAX_INVALID_COPY_BYTES + 1))
    assert event.raw_b64 == ""
    assert event.reason == (
        f"bad (the value, {MAX_INVALID_COPY_BYTES + 1} bytes, is not copied here: read it at "
        "t partition 2 offset 7)"
    )


def test_a_key_that_is_not_utf8_is_kept_as_base64() -> None:
    assert invalid(b"v", key=b"\xff").raw_key == "base64:/w=="
