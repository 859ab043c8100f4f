"""Parsing and encoding of the router's events, on the hot path.

Input is decoded by the pipeline's one strict wire decoder (``events.wire``), so the
router accepts exactly what the contract says, and refuses with the same reasons as every
other consumer. A plainly valid statement goes through a fast path first
(``events.received_fast_path``), which accepts only what the strict decoder accepts and
leaves every other record to it.

Output is encoded by hand with orjson over plain dicts instead of building
pydantic models and calling ``model_dump_json``: the dicts carry exactly the contract's
fields (the unit tests validate every encoded event against the models), and skipping
model construction is a large part of the per-statement budget (docs/performance.md).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from events.received_fast_path import plainly_valid_statement_fields
from events.schemas import IbanStateEvent, StatementReceived
from events.wire import (
    INVALID_SCHEMA,
    InvalidEvent,
    SourceRef,
    decode,
    encode_invalid,
    key_fault,
    key_text,
)
from routing.domain.model import IbanState, MandateStatus

RECEIVED_SCHEMA = "statement.received/v1"
STATE_SCHEMA = "iban.state/v1"
PARTNER_SCHEMA = "statement.partner-delivery/v1"
GLOBAL_FILE_SCHEMA = "statement.global-file/v1"
HELD_SCHEMA = "statement.held/v1"


InvalidInput = InvalidEvent
"""The router's name for a refused record (the wire decoder's :class:`InvalidEvent`)."""


def parse_statement(value: bytes | None) -> StatementReceived:
    """Validate one ``statements.received`` value; raise ``InvalidInput`` with the reason."""
    if value is None:
        raise InvalidInput("null value (tombstone): statements.received carries no deletions")
    return decode(value, StatementReceived, where="statements.received")


def statement_fields_of(value: bytes | None) -> dict[str, Any]:
    """The contract fields of one ``statements.received`` value (:func:`statement_fields`);
    raise ``InvalidInput`` with the reason.

    A plainly valid record takes the fast path (``events.received_fast_path``), which
    gives the same fields for about half the cost; any other is decoded strictly, so a
    refusal has the strict decoder's reason.
    """
    if value is not None:
        fields = plainly_valid_statement_fields(value)
        if fields is not None:
            return fields
    return statement_fields(parse_statement(value))


def parse_state(value: bytes) -> IbanStateEvent:
    """Validate one ``iban.state`` value (not a tombstone); raise ``InvalidInput``."""
    return decode(value, IbanStateEvent, where="iban.state")


def decode_key(key: bytes | None) -> str | None:
    """A record key as text, or None when absent or not UTF-8."""
    return key_text(key)


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


_MANDATE_STATUSES = {status.value: status for status in MandateStatus}


def state_from_table(iban: str, value: dict[str, Any]) -> IbanState:
    """The domain snapshot from a Table value written by :func:`state_to_table`.

    Built field by field, not through ``IbanState.from_fields``: the router does this for
    each IBAN it sees first (a state-cache miss), and the intermediate dicts and the enum
    call were a third of that lookup. Every field is a required keyword, so a field added
    to ``IbanState`` cannot be forgotten here (mypy, and the call itself, refuse it).
    """
    return IbanState(
        iban=iban,
        cabinet_id=value["cabinet_id"],
        client_ref=value["client_ref"],
        connector_id=value["connector_id"],
        connector_on_cabinet=value["connector_on_cabinet"],
        mandate_status=_MANDATE_STATUSES[value["mandate_status"]],
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


__all__ = [
    "GLOBAL_FILE_SCHEMA",
    "HELD_SCHEMA",
    "INVALID_SCHEMA",
    "PARTNER_SCHEMA",
    "RECEIVED_SCHEMA",
    "STATE_SCHEMA",
    "InvalidInput",
    "SourceRef",
    "decode_key",
    "dumps",
    "encode_invalid",
    "key_fault",
    "parse_state",
    "parse_statement",
    "state_from_table",
    "state_to_table",
    "statement_fields",
    "statement_fields_of",
]
