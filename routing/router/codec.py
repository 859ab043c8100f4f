"""Parsing and encoding of the router's events, on the hot path.

Input is validated with the contract's pydantic models (``events.schemas``), so the router
accepts exactly what the contract says. Two things are stricter than the models' defaults:

* the ``schema`` field is *required*: the contract models give it a default so producers
  may omit it when they build events in Python, but a record on the wire without
  ``schema`` is not a ``statement.received/v1`` and goes to ``statements.invalid``;
* a rejection carries a precise reason, built from the first failing rule in this order:
  not UTF-8, not JSON, not a JSON object, missing or unknown ``schema``, then the fields
  (an IBAN with a bad checksum, a bad ``content_sha256`` …).

Output is encoded by hand with orjson over plain dicts instead of building
pydantic models and calling ``model_dump_json``: the dicts carry exactly the contract's
fields (the unit tests validate every encoded event against the models), and skipping
model construction is a large part of the per-statement budget (docs/performance.md).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import orjson
from pydantic import Field, ValidationError

from events.schemas import SCHEMAS, IbanStateEvent, StatementReceived
from routing.domain.model import IbanState, MandateStatus

RECEIVED_SCHEMA = "statement.received/v1"
STATE_SCHEMA = "iban.state/v1"
PARTNER_SCHEMA = "statement.partner-delivery/v1"
GLOBAL_FILE_SCHEMA = "statement.global-file/v1"
HELD_SCHEMA = "statement.held/v1"
INVALID_SCHEMA = "statement.invalid/v1"
OUTCOME_SCHEMA = "delivery.outcome/v1"

_MAX_FIELD_ERRORS = 3  # a reason names at most this many failing fields


class InvalidInput(Exception):
    """A record that cannot be processed; ``reason`` is the precise, human-readable why."""

    def __init__(self, reason: str, statement_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.statement_id = statement_id


class _WireStatement(StatementReceived):
    """``statement.received/v1`` as read from the wire: ``schema`` must be present."""

    schema_: Literal["statement.received/v1"] = Field(alias="schema")


class _WireState(IbanStateEvent):
    """``iban.state/v1`` as read from the wire: ``schema`` must be present."""

    schema_: Literal["iban.state/v1"] = Field(alias="schema")


def _clean(msg: str) -> str:
    # pydantic prefixes errors raised by validators with "Value error, "; the rest is ours.
    return msg.removeprefix("Value error, ")


def _loc(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc)


def _schema_reason(value: bytes, expected: str, topic_role: str) -> str | None:
    """The reason when ``schema`` is missing or wrong, else None (the cheap, exact check)."""
    try:
        doc = json.loads(value)
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(doc, dict):
        return None
    if "schema" not in doc:
        return f"missing `schema` field (expected {expected!r})"
    schema = doc["schema"]
    if schema == expected:
        return None
    if isinstance(schema, str) and schema in SCHEMAS:
        return f"schema {schema!r} is not accepted on {topic_role} (expected {expected!r})"
    return f"unknown schema {schema!r} (expected {expected!r})"


def _statement_id_of(value: bytes) -> str | None:
    """The statement id of a rejected value, when it can be read (for the invalid event)."""
    try:
        doc = json.loads(value)
    except (UnicodeDecodeError, ValueError):
        return None
    if isinstance(doc, dict):
        sid = doc.get("statement_id")
        if isinstance(sid, str) and sid:
            return sid[:200]
    return None


def _reason_of(exc: ValidationError, value: bytes, expected: str, topic_role: str) -> str:
    """Turn a pydantic error into one precise reason, most fundamental problem first."""
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0]
    if first["type"] in ("json_invalid", "json_type"):
        try:
            value.decode("utf-8")
        except UnicodeDecodeError as uexc:
            return f"value is not UTF-8: {uexc.reason} at byte {uexc.start}"
        return f"value is not JSON: {_clean(first['msg'])}"
    if first["type"] == "model_type" and not first["loc"]:
        return "value is not a JSON object"
    schema_reason = _schema_reason(value, expected, topic_role)
    if schema_reason is not None:
        return schema_reason
    parts = []
    for err in errors[:_MAX_FIELD_ERRORS]:
        where = _loc(err["loc"])
        msg = _clean(err["msg"])
        parts.append(f"field `{where}`: {msg}" if where else msg)
    more = len(errors) - _MAX_FIELD_ERRORS
    if more > 0:
        parts.append(f"and {more} more error(s)")
    return "; ".join(parts)


def parse_statement(value: bytes | None) -> StatementReceived:
    """Validate one ``statements.received`` value; raise ``InvalidInput`` with the reason."""
    if value is None:
        raise InvalidInput("null value (tombstone): statements.received carries no deletions")
    try:
        return _WireStatement.model_validate_json(value)
    except ValidationError as exc:
        reason = _reason_of(exc, value, RECEIVED_SCHEMA, "statements.received")
        raise InvalidInput(reason, _statement_id_of(value)) from None


def parse_state(value: bytes) -> IbanStateEvent:
    """Validate one ``iban.state`` value (not a tombstone); raise ``InvalidInput``."""
    try:
        return _WireState.model_validate_json(value)
    except ValidationError as exc:
        raise InvalidInput(_reason_of(exc, value, STATE_SCHEMA, "iban.state")) from None


def decode_key(key: bytes | None) -> str | None:
    """A record key as text, or None when absent or not UTF-8."""
    if key is None:
        return None
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return None


# --- the IBAN state as kept in the Table ------------------------------------------------


def state_to_table(event: IbanStateEvent) -> dict[str, Any]:
    """The Table value for an IBAN: the snapshot's fields as JSON-ready scalars.

    The IBAN itself is the Table key, and ``schema`` is implied; both are left out to keep
    a million states small (DESIGN §8).
    """
    return {
        "cabinet_id": event.cabinet_id,
        "client_ref": event.client_ref,
        "connector_id": event.connector_id,
        "connector_on_cabinet": event.connector_on_cabinet,
        "mandate_status": event.mandate_status.value,
        "version": event.version,
        "updated_at": event.updated_at.isoformat(),
    }


def state_from_table(iban: str, value: dict[str, Any]) -> IbanState:
    """The domain snapshot from a Table value written by :func:`state_to_table`."""
    return IbanState(
        iban=iban,
        cabinet_id=value["cabinet_id"],
        client_ref=value["client_ref"],
        connector_id=value["connector_id"],
        connector_on_cabinet=value["connector_on_cabinet"],
        mandate_status=MandateStatus(value["mandate_status"]),
        version=value["version"],
        updated_at=datetime.fromisoformat(value["updated_at"]),
    )


# --- encoding ---------------------------------------------------------------------------


def statement_fields(stmt: StatementReceived) -> dict[str, Any]:
    """The statement's contract fields as JSON scalars (the IBAN normalised)."""
    return {
        "statement_id": stmt.statement_id,
        "iban": stmt.iban,
        "format": stmt.format,
        "period_start": stmt.period_start.isoformat(),
        "period_end": stmt.period_end.isoformat(),
        "received_at": stmt.received_at.isoformat(),
        "content_b64": stmt.content_b64,
        "source": stmt.source,
        "content_sha256": stmt.content_sha256,
    }


def dumps(doc: Any) -> bytes:
    """Compact UTF-8 JSON, as every value on the topics.

    orjson, not the standard library: encoding the ~1 KB routed events was a third of the
    router's time per statement with ``json`` (docs/performance.md), about 1/10 with
    orjson. The output is the same compact, non-ASCII-preserving JSON.
    """
    return orjson.dumps(doc)


@dataclass(frozen=True, slots=True)
class SourceRef:
    """Where a record was read, for ``statement.invalid/v1``."""

    topic: str
    partition: int
    offset: int


def encode_invalid(
    *,
    value: bytes | None,
    key: bytes | None,
    reason: str,
    source: SourceRef,
    detected_at: str,
    statement_id: str | None = None,
    detected_by: str = "router",
) -> bytes:
    """A ``statement.invalid/v1`` value carrying the raw bytes and the precise reason.

    A key that is not UTF-8 is kept as base64 in ``raw_key`` with a ``base64:`` prefix,
    since the contract's keys are text.
    """
    raw_key: str | None
    if key is None:
        raw_key = None
    else:
        text = decode_key(key)
        raw_key = text if text is not None else "base64:" + base64.b64encode(key).decode()
    return dumps(
        {
            "schema": INVALID_SCHEMA,
            "reason": reason,
            "raw_b64": base64.b64encode(value or b"").decode("ascii"),
            "raw_key": raw_key,
            "source_topic": source.topic,
            "source_partition": source.partition,
            "source_offset": source.offset,
            "statement_id": statement_id,
            "detected_at": detected_at,
            "detected_by": detected_by,
        }
    )
