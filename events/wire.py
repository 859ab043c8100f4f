"""The one strict wire decoder: a record's bytes become a contract event, or a reason.

Every consumer of our topics (the router, the adapter workers, the global-file builder,
the ledger) reads its input through :func:`decode`, so a record is accepted or refused
by the same rules everywhere, with the same words. It is stricter than the models of
``events.schemas`` on one point: the models give ``schema`` a default so that Python code
may build events without it, but a record *on the wire* without ``schema``, or with
another one, is not the event its topic carries (DESIGN §4).

A refusal raises :class:`InvalidEvent` whose ``reason`` names the first fault found, the
most fundamental first: no value, not UTF-8, not JSON (including JSON nested deeper than
the parser reads: a fault of the input, never an internal error), not a JSON object,
missing or unexpected ``schema``, then at most three failing fields.

:func:`encode_invalid` builds the ``statement.invalid/v1`` record for a refused input,
and it always fits the size rule (``events.limits``): base64 makes a copy a third larger
than its source, and a copy too large for the producer would fail the very record meant to
report the fault. So it copies the raw value only up to
:data:`~events.limits.MAX_INVALID_COPY_BYTES`; a larger value is referred to by its topic,
partition, offset and size instead ("park and refer": ``payload_omitted``), and the reason
says so. A key over :data:`~events.limits.MAX_INVALID_KEY_BYTES` is not copied either, and
the reason is cut to :data:`~events.limits.MAX_REASON_CHARS`.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal, Protocol, TypeVar, cast

import orjson
from pydantic import Field, ValidationError, create_model

from events.limits import MAX_INVALID_COPY_BYTES, MAX_INVALID_KEY_BYTES, MAX_REASON_CHARS
from events.schemas import SCHEMAS, Event

E = TypeVar("E", bound=Event)

INVALID_SCHEMA = "statement.invalid/v1"


_MAX_FIELD_ERRORS = 3  # a reason names at most this many failing fields


class InvalidEvent(Exception):
    """A record that is not the event its topic carries; ``reason`` says precisely why."""

    def __init__(self, reason: str, statement_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.statement_id = statement_id


_SCHEMA_OF: dict[type[Event], str] = {model: name for name, model in SCHEMAS.items()}


def schema_of(model: type[Event]) -> str:
    """The ``schema`` value that names ``model`` on the wire."""
    return _SCHEMA_OF[model]


@cache
def _wire_model(model: type[E]) -> type[E]:
    """``model`` with its ``schema`` field required (and still a Literal of its name)."""
    expected = schema_of(model)
    literal: Any = Literal[expected]
    return create_model(
        f"Wire{model.__name__}", __base__=model, schema_=(literal, Field(alias="schema"))
    )


def _clean(msg: str) -> str:
    # pydantic prefixes errors raised by validators with "Value error, "; the rest is ours.
    return msg.removeprefix("Value error, ").removeprefix("Invalid JSON: ")


def _document(value: bytes) -> Any:
    """The parsed JSON, or None when it cannot be read (orjson bounds the depth)."""
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return None


def statement_id_of(value: bytes | None) -> str | None:
    """The statement id of a refused value, when it can be read (for the invalid event)."""
    if not value:
        return None
    doc = _document(value)
    if isinstance(doc, dict):
        sid = doc.get("statement_id")
        if isinstance(sid, str) and sid:
            return sid[:200]
    return None


_STATEMENT_ID_FIELD = re.compile(rb'"statement_id"\s*:\s*"([A-Za-z0-9._:\-]{1,200})"')
_SCAN_BYTES = 65_536


def statement_id_of_large(value: bytes | None) -> str | None:
    """The statement id of a value too large to parse, found in its first or last 64 KiB.

    A value over the size rule is refused unparsed (parsing 20 MB to report it costs what
    the rule is there to avoid), but the id still tells an operator which statement it was.
    """
    if not value:
        return None
    for part in (value[:_SCAN_BYTES], value[-_SCAN_BYTES:]):
        found = _STATEMENT_ID_FIELD.search(part)
        if found is not None:
            return found.group(1).decode("ascii")
    return None


def _schema_reason(doc: Any, expected: str, where: str) -> str | None:
    if not isinstance(doc, dict):
        return None
    if "schema" not in doc:
        return f"missing `schema` field (expected {expected!r})"
    schema = doc["schema"]
    if schema == expected:
        return None
    if isinstance(schema, str) and schema in SCHEMAS:
        return f"schema {schema!r} is not accepted on {where} (expected {expected!r})"
    shown = repr(schema)
    if len(shown) > 100:  # a hostile value may be megabytes long
        shown = f"{shown[:80]}… ({len(shown)} characters)"
    return f"unknown schema {shown} (expected {expected!r})"


def _reason_of(exc: ValidationError, value: bytes, expected: str, where: str) -> str:
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0]
    if first["type"] in ("json_invalid", "json_type"):
        try:
            value.decode("utf-8")
        except UnicodeDecodeError as uexc:
            return f"value is not UTF-8: {uexc.reason} at byte {uexc.start}"
        message = _clean(first["msg"])
        if "recursion limit" in message:
            return f"value is not JSON this system reads: nested too deeply ({message})"
        return f"value is not JSON: {message}"
    if first["type"] == "model_type" and not first["loc"]:
        return "value is not a JSON object"
    schema_reason = _schema_reason(_document(value), expected, where)
    if schema_reason is not None:
        return schema_reason
    parts = []
    for err in errors[:_MAX_FIELD_ERRORS]:
        loc = ".".join(str(part) for part in err["loc"])
        msg = _clean(err["msg"])
        parts.append(f"field `{loc}`: {msg}" if loc else msg)
    more = len(errors) - _MAX_FIELD_ERRORS
    if more > 0:
        parts.append(f"and {more} more error(s)")
    return "; ".join(parts)


def decode(value: bytes | None, model: type[E], *, where: str | None = None) -> E:
    """Decode one record value as ``model``; raise :class:`InvalidEvent` with the reason.

    ``where`` names the topic in a reason ("statements.received"); it defaults to the
    expected schema's name.
    """
    expected = schema_of(model)
    if value is None:
        raise InvalidEvent(f"null value (tombstone): expected {expected!r}")
    try:
        return cast("E", _wire_model(model).model_validate_json(value))
    except ValidationError as exc:
        reason = _reason_of(exc, value, expected, where or f"a {expected} topic")
        raise InvalidEvent(reason, statement_id_of(value)) from None


# --- keys -------------------------------------------------------------------------------


def key_text(key: bytes | None) -> str | None:
    """A record key as text, or None when absent or not UTF-8 (see :func:`key_fault`)."""
    if key is None:
        return None
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return None


def key_fault(key: bytes | None) -> str | None:
    """What is wrong with a key that must be text: "no key", "a key that is not UTF-8 …"."""
    if key is None or key == b"":
        return "no key"
    try:
        key.decode("utf-8")
    except UnicodeDecodeError as exc:
        return (
            f"a key that is not UTF-8 ({exc.reason} at byte {exc.start}; kept as base64 in raw_key)"
        )
    return None


# --- the invalid record -----------------------------------------------------------------


class SourceRecord(Protocol):
    """One consumed record, as every role reads it: an aiokafka ``ConsumerRecord``, a faust
    message, or the router's own ``Record`` (a held statement being released)."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...

    @property
    def key(self) -> bytes | None: ...

    @property
    def value(self) -> bytes | None: ...


@dataclass(frozen=True, slots=True)
class SourceRef:
    """Where a record was read, for ``statement.invalid/v1``."""

    topic: str
    partition: int
    offset: int


def cut_reason(reason: str, limit: int = MAX_REASON_CHARS) -> str:
    """``reason`` cut to ``limit`` characters, saying how much was left out."""
    if len(reason) <= limit:
        return reason
    return f"{reason[: limit - 40]}… ({len(reason) - limit + 40} more characters)"


def encode_invalid(
    *,
    value: bytes | None,
    key: bytes | None,
    reason: str,
    source: SourceRef,
    detected_at: str,
    statement_id: str | None = None,
    detected_by: str = "router",
    copy_limit: int = MAX_INVALID_COPY_BYTES,
) -> bytes:
    """A ``statement.invalid/v1`` value with the precise reason and the raw bytes.

    A key that is not UTF-8 is kept as base64 in ``raw_key`` with a ``base64:`` prefix,
    since the contract's keys are text. A value over ``copy_limit`` bytes is not copied
    (``raw_b64`` is empty, ``payload_omitted`` true): the reason gives its size and where
    to read it, and ``payload_bytes`` its size. A key over ``MAX_INVALID_KEY_BYTES`` is not
    copied either (``key_omitted``). Use :func:`invalid_key` as the record's own key.
    """
    raw_key: str | None
    key_omitted = key is not None and len(key) > MAX_INVALID_KEY_BYTES
    if key is None or key_omitted:
        raw_key = None
    else:
        text = key_text(key)
        raw_key = text if text is not None else "base64:" + base64.b64encode(key).decode()
    reason = cut_reason(reason)
    raw = value or b""
    omitted = len(raw) > copy_limit
    if omitted:
        reason = (
            f"{reason} (the value, {len(raw)} bytes, is not copied here: read it at "
            f"{source.topic} partition {source.partition} offset {source.offset})"
        )
        raw_b64 = ""
    else:
        raw_b64 = binascii.b2a_base64(raw, newline=False).decode("ascii")
    if key_omitted:
        assert key is not None
        reason = f"{reason} (the key, {len(key)} bytes, is not copied here)"
    return orjson.dumps(
        {
            "schema": INVALID_SCHEMA,
            "reason": reason,
            "raw_b64": raw_b64,
            "raw_key": raw_key,
            "source_topic": source.topic,
            "source_partition": source.partition,
            "source_offset": source.offset,
            "statement_id": statement_id,
            "detected_at": detected_at,
            "detected_by": detected_by,
            "payload_bytes": None if value is None else len(value),
            "payload_omitted": omitted,
            "key_omitted": key_omitted,
        }
    )


def invalid_key(key: bytes | None) -> bytes:
    """The key of a ``statement.invalid/v1`` record: the refused record's own key when it
    can be copied (so an operator finds it where the input's key would put it), else empty."""
    if key is None or len(key) > MAX_INVALID_KEY_BYTES:
        return b""
    return key
