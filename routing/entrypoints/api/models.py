"""Request and response bodies of the HTTP API (the edge where JSON becomes objects)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Depends, Path
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from routing.domain.decide import Check, Diagnosis
from routing.domain.errors import InvalidIban
from routing.domain.iban import mask_iban
from routing.domain.ids import ID_MAX_LENGTH, ID_PATTERN, ID_RULE, IdKind, id_problem
from routing.domain.model import IbanState, MandateStatus
from routing.ports import StatementSummary


def _allowed(kind: IdKind) -> AfterValidator:
    """The domain's id rule (``routing.domain.ids``) as a validator: 422 with its sentence."""

    def check(value: str) -> str:
        problem = id_problem(kind, value)
        if problem is not None:
            raise ValueError(problem)
        return value

    return AfterValidator(check)


#: The id rule as OpenAPI declares it, so generated clients check it too.
ID_SCHEMA: dict[str, Any] = {"pattern": ID_PATTERN, "minLength": 1, "maxLength": ID_MAX_LENGTH}

CabinetIdPath = Annotated[
    str,
    Path(
        description=f"A cabinet id: {ID_RULE}.",
        examples=["cab-demo"],
        json_schema_extra=ID_SCHEMA,
    ),
    _allowed("cabinet"),
]
ConnectorIdPath = Annotated[
    str,
    Path(description=f"A connector id: {ID_RULE}.", examples=["acd"], json_schema_extra=ID_SCHEMA),
    _allowed("connector"),
]
ConnectorId = Annotated[str, Field(json_schema_extra=ID_SCHEMA), _allowed("connector")]

#: An IBAN as a path segment, any case, compact or with single spaces as printed
#: (``FR76 3000 6000 …``, sent as ``%20``). The check digits (mod 97) and
#: the national rules (the French RIB key) cannot be said by a pattern: ``format: iban``
#: names them, and the server answers 422 ``invalid_iban`` when they fail.
IBAN_PATTERN = r"^[A-Za-z]{2}[0-9]{2}( ?[A-Za-z0-9]){11,30}$"
_IBAN = re.compile(IBAN_PATTERN)
IBAN_SCHEMA: dict[str, Any] = {"pattern": IBAN_PATTERN, "format": "iban"}


def iban_path(
    iban: Annotated[
        str,
        Path(
            description="An IBAN (ISO 13616), any case: 2 letters, 2 check digits, then 11 "
            "to 30 letters or digits, each optionally preceded by one space (the printed "
            "form). Its mod-97 check digits and national check (the French RIB key) must "
            "be right (422 `invalid_iban` otherwise).",
            examples=["FR7630006000011234567890189"],
            json_schema_extra=IBAN_SCHEMA,
        ),
    ],
) -> str:
    """The IBAN path segment, refused with ``invalid_iban`` (422) outside the declared
    pattern, so the schema and the server agree on every string."""
    if not _IBAN.fullmatch(iban):
        raise InvalidIban(
            f"IBAN {mask_iban(iban)} is malformed: give 2 letters, 2 check digits, then "
            "11 to 30 letters or digits, with at most single spaces between them"
        )
    return iban


IbanPath = Annotated[str, Depends(iban_path)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AddConnector(Body):
    connector_id: ConnectorId = Field(examples=["acd"])


class BindConnector(Body):
    """``{"connector_id": null}`` is « Aucun connecteur ». The field must be present."""

    connector_id: ConnectorId | None = Field(examples=["acd", None])


class ConnectorOut(BaseModel):
    connector_id: str
    name: str
    adapter: str


class CabinetConnectorsOut(BaseModel):
    cabinet_id: str
    connectors: list[ConnectorOut]


class CabinetConnectorAdded(BaseModel):
    cabinet_id: str
    connector_id: str
    added: bool = Field(description="False when the cabinet already had the connector.")


class IbanStateOut(BaseModel):
    iban: str
    cabinet_id: str
    client_ref: str | None
    connector_id: str | None
    connector_on_cabinet: bool
    mandate_status: MandateStatus
    active: bool
    version: int
    updated_at: datetime

    @classmethod
    def of(cls, state: IbanState) -> IbanStateOut:
        """The body from the snapshot's attributes, ``active`` included (a property)."""
        return cls.model_validate(state, from_attributes=True)


class CabinetIbansOut(BaseModel):
    cabinet_id: str
    ibans: list[IbanStateOut]


class CheckOut(BaseModel):
    step: int
    name: str
    ok: bool
    message_fr: str
    message_en: str


class RecentStatementOut(BaseModel):
    """One of the IBAN's last statements and where it is (from the delivery ledger)."""

    statement_id: str
    status: str = Field(description="delivered, in_global_file, dead_lettered, retrying, "
                        "replayed, routed or held.")
    last_outcome: str
    last_at: datetime
    connector_id: str | None
    attempt: int | None
    detail: str | None

    @classmethod
    def of(cls, summary: StatementSummary) -> RecentStatementOut:
        return cls.model_validate(summary, from_attributes=True)


class DiagnosisOut(BaseModel):
    iban: str
    checks: list[CheckOut]
    verdict: Literal[
        "unknown_iban", "add_connector_to_cabinet", "bind_iban", "approve_mandate",
        "contact_support",
    ]
    message_fr: str
    message_en: str
    recent_statements: list[RecentStatementOut] = Field(
        default=[],
        description="When every check passes: the IBAN's last statements and their delivery "
        "state, from the ledger (empty when no ledger is configured).",
    )

    @classmethod
    def of(
        cls, iban: str, diagnosis: Diagnosis, recent: Sequence[StatementSummary] = ()
    ) -> DiagnosisOut:
        return cls(
            iban=iban,
            checks=[_check(i, c) for i, c in enumerate(diagnosis.checks, start=1)],
            verdict=diagnosis.verdict.value,
            message_fr=diagnosis.message_fr,
            message_en=diagnosis.message_en,
            recent_statements=[RecentStatementOut.of(s) for s in recent],
        )


def _check(step: int, check: Check) -> CheckOut:
    return CheckOut(
        step=step,
        name=check.name.value,
        ok=check.ok,
        message_fr=check.message_fr,
        message_en=check.message_en,
    )


class StatementCandidateOut(BaseModel):
    """One of the statements an ambiguous id names (``ambiguous_statement``)."""

    key: str = Field(description="The statement key (16 hex digits), for `?key=`.")
    iban: str = Field(description="The account, masked.")
    content_sha256: str
    status: str
    first_seen: str | None = Field(description="ISO 8601, when the ledger first saw it.")


class ErrorOut(BaseModel):
    error: str = Field(description="Stable machine-readable code.")
    detail: str = Field(description="What went wrong, for a person.")
    bound_ibans: int | None = Field(
        default=None,
        description="On `connector_still_bound` (409) only: how many IBANs are bound.",
    )
    candidates: list[StatementCandidateOut] | None = Field(
        default=None,
        description="On `ambiguous_statement` (409) only: the statements the id names; "
        "ask again with `?key=` and one of their keys.",
    )
