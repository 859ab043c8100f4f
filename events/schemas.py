"""Pydantic models of every event on the topics (DESIGN §4). This module is the contract.

Values are UTF-8 JSON objects with a ``schema`` field ``"<name>/v<major>"``. Readers
ignore fields they do not know, so producers may add fields within a major version;
removing or changing a field means a new major version. The JSON Schema files under
``docs/schemas/`` are exported from these models (``statement-router schemas export``).
"""

from __future__ import annotations

import binascii
import hashlib
from datetime import date
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)

from routing.domain.errors import InvalidIban
from routing.domain.iban import normalise_iban
from routing.domain.model import IbanState, MandateStatus

StatementFormat = Literal["cfonb120", "camt053", "mt940"]


def _valid_iban(value: str) -> str:
    try:
        return normalise_iban(value)
    except InvalidIban as exc:
        raise ValueError(exc.message) from None


Iban = Annotated[
    str,
    Field(min_length=5, max_length=42, description="Normalised IBAN: upper case, no spaces."),
    AfterValidator(_valid_iban),
]
StatementId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9._:\-]+$",
        description="The producer's stable id; a re-sent statement carries the same id.",
    ),
]
ConnectorId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")]


class Event(BaseModel):
    """Base of every event: frozen, tolerant of unknown fields (compatible extension)."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()


class StatementFields(Event):
    """The statement as the bank feed sent it; every routed event carries these fields."""

    statement_id: StatementId
    iban: Iban
    format: StatementFormat
    period_start: date
    period_end: date
    received_at: AwareDatetime
    content_b64: str = Field(description="The statement file's bytes, base64 (RFC 4648).")
    source: str = Field(min_length=1, max_length=200, description="The bank feed's name.")
    content_sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="Lower-case hex SHA-256 of the decoded content."
    )

    @model_validator(mode="after")
    def _check_consistency(self) -> StatementFields:
        if self.period_end < self.period_start:
            raise ValueError(
                f"period_end {self.period_end} is before period_start {self.period_start}"
            )
        try:
            # strict_mode: what b64decode(validate=True) checks, without its Python regex.
            content = binascii.a2b_base64(self.content_b64, strict_mode=True)
        except ValueError:  # binascii.Error, or a non-ASCII string
            raise ValueError("content_b64 is not valid base64") from None
        if hashlib.sha256(content).hexdigest() != self.content_sha256:
            raise ValueError("content_sha256 does not match the decoded content_b64")
        return self


class StatementReceived(StatementFields):
    """``statement.received/v1``: a bank feed delivered a statement."""

    schema_: Literal["statement.received/v1"] = Field(
        default="statement.received/v1", alias="schema"
    )


class CheckTrace(Event):
    name: str
    ok: bool


class RoutingTrace(Event):
    """Why the router sent a statement where it did."""

    destination: Literal["partner", "global-file", "held"]
    reason: str = Field(description="e.g. bound, unbound, unknown_iban, mandate_pending.")
    checks: tuple[CheckTrace, ...] = Field(description="The FAQ checks, in the FAQ's order.")
    state_version: int | None = Field(description="iban.state version used; null if unknown.")
    decided_at: AwareDatetime


class StatementRouted(StatementFields):
    routing: RoutingTrace


class StatementPartnerDelivery(StatementRouted):
    """``statement.partner-delivery/v1``: deliver this statement to the connector's partner."""

    schema_: Literal["statement.partner-delivery/v1"] = Field(
        default="statement.partner-delivery/v1", alias="schema"
    )
    connector_id: ConnectorId
    cabinet_id: str
    client_ref: str | None = None
    released_from_held: bool = Field(
        default=False,
        description="True when the statement was held first and is routed now that its "
        "IBAN became routable; absent (false) otherwise.",
    )


class StatementGlobalFile(StatementRouted):
    """``statement.global-file/v1``: add this statement to the cabinet's global file."""

    schema_: Literal["statement.global-file/v1"] = Field(
        default="statement.global-file/v1", alias="schema"
    )
    cabinet_id: str
    client_ref: str | None = None
    released_from_held: bool = Field(
        default=False,
        description="True when the statement was held first and is routed now that its "
        "IBAN became routable; absent (false) otherwise.",
    )


class StatementHeld(StatementRouted):
    """``statement.held/v1``: parked until the IBAN becomes routable (audit record)."""

    schema_: Literal["statement.held/v1"] = Field(default="statement.held/v1", alias="schema")
    cabinet_id: str | None = None
    connector_id: ConnectorId | None = Field(
        default=None,
        description="The IBAN's connector when the reason is about it "
        "(connector_not_on_cabinet, connector_not_in_catalogue); absent otherwise.",
    )


class StatementInvalid(Event):
    """``statement.invalid/v1``: input that could not be processed, kept whole with the reason."""

    schema_: Literal["statement.invalid/v1"] = Field(
        default="statement.invalid/v1", alias="schema"
    )
    reason: str = Field(description="A precise, human-readable reason.")
    raw_b64: str = Field(
        description="The rejected value's bytes, base64; empty when payload_omitted."
    )
    raw_key: str | None = Field(default=None, description="The rejected record's key, if any.")
    source_topic: str | None = None
    source_partition: int | None = None
    source_offset: int | None = None
    statement_id: str | None = Field(default=None, description="When it could be read.")
    detected_at: AwareDatetime
    detected_by: str = Field(description="The process that rejected it: router, ingest, …")
    payload_bytes: int | None = Field(
        default=None, ge=0, description="The rejected value's size in bytes; null for none."
    )
    payload_omitted: bool = Field(
        default=False,
        description=(
            "True when the value was too large to copy (park and refer): raw_b64 is empty, "
            "read the value at source_topic, source_partition, source_offset."
        ),
    )
    key_omitted: bool = Field(
        default=False,
        description="True when the key was too large to copy: raw_key is null.",
    )


class DeliveryAttempt(Event):
    attempt: int = Field(ge=1)
    at: AwareDatetime
    error: str
    status_code: int | None = None


class ParkedRecord(Event):
    """Where a parked record is: it was not copied (too large, or unwritable as a copy)."""

    topic: str = Field(min_length=1)
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)
    payload_bytes: int = Field(ge=0, description="The size of the record's value.")
    iban: str | None = Field(default=None, description="Masked.")
    cabinet_id: str | None = None
    key: str = Field(
        pattern=r"^[0-9a-f]{16}$",
        description="The statement key (IBAN, id and content: docs/delivery.md), which "
        "tells two statements under one id apart without the copy.",
    )


class StatementDeadLetter(Event):
    """``statement.dead-letter/v1``: a delivery that failed for good, with every attempt.

    Either ``delivery`` (a copy of the record, replayed as is) or ``parked`` (a reference
    to it in its partner topic, for a record that could not be copied: its dead letter
    would exceed the size rule, the broker refused the copy, or the worker crashed on it
    ``ADAPTER_MAX_CRASHES`` times). Exactly one of the two is set.
    """

    schema_: Literal["statement.dead-letter/v1"] = Field(
        default="statement.dead-letter/v1", alias="schema"
    )
    connector_id: ConnectorId
    statement_id: StatementId
    reason: str
    attempts: tuple[DeliveryAttempt, ...]
    dead_lettered_at: AwareDatetime
    delivery: StatementPartnerDelivery | None = Field(
        default=None, description="The failed delivery, byte for byte; absent when parked."
    )
    parked: ParkedRecord | None = Field(
        default=None,
        description="Set instead of delivery: where the record is; replay re-reads it there.",
    )

    @model_validator(mode="after")
    def _copy_or_reference(self) -> StatementDeadLetter:
        if (self.delivery is None) == (self.parked is None):
            raise ValueError("a dead letter has exactly one of delivery and parked")
        return self


OutcomeKind = Literal[
    "routed", "held", "delivered", "retrying", "dead_lettered", "stored_global_file", "replayed"
]


class DeliveryOutcome(Event):
    """``delivery.outcome/v1``: one step in a statement's life, for the ledger."""

    schema_: Literal["delivery.outcome/v1"] = Field(default="delivery.outcome/v1", alias="schema")
    statement_id: StatementId
    outcome: OutcomeKind
    at: AwareDatetime
    iban: str | None = None
    cabinet_id: str | None = None
    connector_id: str | None = None
    attempt: int | None = None
    detail: str | None = None
    routing: RoutingTrace | None = Field(
        default=None, description="On routed and held outcomes: the router's decision trace."
    )
    content_sha256: str | None = Field(
        default=None,
        description=(
            "The statement's content_sha256: with the IBAN and the id, which statement the "
            "step is about when an id is shared (two accounts, or a reused id)."
        ),
    )


class IbanStateEvent(Event):
    """``iban.state/v1``: the full state of one IBAN; the newest ``version`` wins."""

    schema_: Literal["iban.state/v1"] = Field(default="iban.state/v1", alias="schema")
    iban: Iban
    cabinet_id: str = Field(min_length=1)
    client_ref: str | None = None
    connector_id: ConnectorId | None = Field(description="null when unbound.")
    connector_on_cabinet: bool = Field(
        description=(
            "FAQ check 1: for a bound IBAN, its connector is on the cabinet; for an unbound "
            "one, the cabinet has at least one connector."
        )
    )
    mandate_status: MandateStatus
    version: int = Field(ge=0, description="Monotonic per IBAN; older versions are ignored.")
    updated_at: AwareDatetime

    @classmethod
    def from_domain(cls, state: IbanState) -> IbanStateEvent:
        return cls(**state.as_fields())

    def to_domain(self) -> IbanState:
        return IbanState.from_fields(dict(self))


AdapterControlKind = Literal["enable", "worker_state", "crash_count"]
WorkerState = Literal["running", "stopped", "disabled"]


class AdapterControl(Event):
    """``adapter.control/v1``: the adapters' control topic (``adapters.supervisor``).

    * ``enable``: an operator asks the adapters process running ``connector_id`` to
      restart its worker (after a 410 or a fatal error);
    * ``worker_state``: a worker's state, as its process last reported it;
    * ``crash_count``: how many times a worker started handling ``partition``/``offset``
      and never finished (the crash count behind ``ADAPTER_MAX_CRASHES``).
    """

    schema_: Literal["adapter.control/v1"] = Field(default="adapter.control/v1", alias="schema")
    kind: AdapterControlKind
    connector_id: ConnectorId
    at: AwareDatetime
    state: WorkerState | None = None
    reason: str | None = None
    partition: int | None = Field(default=None, ge=0)
    offset: int | None = Field(default=None, ge=0)
    crashes: int | None = Field(default=None, ge=0)
    requested_by: str | None = None


SCHEMAS: dict[str, type[Event]] = {
    "statement.received/v1": StatementReceived,
    "iban.state/v1": IbanStateEvent,
    "statement.partner-delivery/v1": StatementPartnerDelivery,
    "statement.global-file/v1": StatementGlobalFile,
    "statement.held/v1": StatementHeld,
    "statement.invalid/v1": StatementInvalid,
    "statement.dead-letter/v1": StatementDeadLetter,
    "delivery.outcome/v1": DeliveryOutcome,
    "adapter.control/v1": AdapterControl,
}
