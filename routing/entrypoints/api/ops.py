"""Operator endpoints: dead-letter listing and replay, behind the operator token.

Operators are So bank's staff, not cabinet users, so they authenticate differently: one
operator token whose SHA-256 is configured (``OPERATOR_TOKEN_SHA256``). Only the hash is
stored anywhere, so a leaked environment does not leak the token; a cabinet user's token
never matches it (401), whatever that user's profile. Without a configured hash the
routes refuse everyone: operator access is opt-in.

``statement-router operator token`` makes a token and prints the hash to configure.
Every error is the API's JSON ``{"error", "detail"}``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, model_validator

from adapters.control import request_enable
from adapters.dlq import (
    AlreadyReplayed,
    DeadLetterError,
    NoSuchDeadLetter,
    RecordGone,
    list_dead_letters,
    replay_dead_letters,
)
from config.catalogue import ConnectorSpec
from events.topics import Topics
from routing.broker.adapters_control import read_control, worker_states
from routing.broker.errors import BrokerError
from routing.domain.errors import AuthenticationFailed, UnknownConnector
from routing.entrypoints.api.bodies import Gate
from routing.entrypoints.api.errors import error_body
from routing.entrypoints.api.models import ConnectorIdPath, ErrorOut
from routing.entrypoints.api.responses import error_responses
from routing.observability.monitor.model import DeadLetterLedger
from routing.observability.monitor.service import MonitorService, monitor_service

OPERATOR_TOKEN_PREFIX = "sro_"  # noqa: S105 - a prefix, not a secret

_operator_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="OperatorToken",
    description="The operator token (statement-router operator token); not a user's token.",
)


def new_operator_token() -> tuple[str, str]:
    """A fresh operator token and the SHA-256 hex to configure as OPERATOR_TOKEN_SHA256."""
    token = OPERATOR_TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, token_sha256(token)


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def operator_token_matches(token: str, expected_sha256: str | None) -> bool:
    """Constant-time check of a presented token against the configured hash."""
    if not expected_sha256:
        return False
    return hmac.compare_digest(token_sha256(token), expected_sha256.lower())


def operator_gate(operator_token_sha256: str | None) -> Gate:
    """The operator-token check, shared by the routes' dependency and the body gate
    (``routing.entrypoints.api.bodies``), which runs it before any request body is read."""

    async def check(token: str | None) -> None:
        if not operator_token_sha256:
            raise AuthenticationFailed(
                "operator access is not configured on this server (OPERATOR_TOKEN_SHA256)"
            )
        if token is None:
            raise AuthenticationFailed("an operator token is required (Authorization: Bearer …)")
        if not operator_token_matches(token, operator_token_sha256):
            raise AuthenticationFailed("this is not the operator token")

    return check


class OpsRouter(APIRouter):
    """The ``/ops`` routes, with the gate ``create_app`` puts in front of their bodies."""

    def __init__(self, gate: Gate, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gate = gate


class DeadLetterOut(BaseModel):
    statement_id: str
    key: str = Field(
        description="The statement key (16 hex digits of its IBAN, id and content): which "
        "statement, when two share an id."
    )
    iban: str = Field(description="Masked.")
    cabinet_id: str
    reason: str
    attempts: int
    last_status_code: int | None
    dead_lettered_at: str
    partition: int
    offset: int
    replayed_at: str | None
    parked: dict[str, Any] | None = Field(
        default=None,
        description="Set for a parked dead letter (not copied): topic, partition, offset and "
        "payload_bytes of the record in the partner topic, which replay re-reads.",
    )


class DeadLettersOut(BaseModel):
    connector_id: str
    open: int
    dead_letters: list[DeadLetterOut]


class ReplayIn(BaseModel):
    """Exactly one of ``statement_id`` or ``all``; ``force`` resends a replayed one.

    The ``oneOf`` says the same in the schema, so a generated client cannot send both."""

    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                {
                    "required": ["statement_id"],
                    "properties": {"statement_id": {"type": "string"}, "all": {"const": False}},
                },
                {
                    "required": ["all"],
                    "properties": {"all": {"const": True}, "statement_id": {"type": "null"}},
                },
            ]
        }
    )

    statement_id: str | None = None
    all: bool = False
    force: bool = False

    @model_validator(mode="after")
    def _one_target(self) -> ReplayIn:
        if (self.statement_id is None) == (not self.all):
            raise ValueError('give either "statement_id" or "all": true')
        return self


class ReplayOut(BaseModel):
    connector_id: str
    replayed: list[str]
    count: int
    dead_letters_closed: int
    gone: list[str] = Field(
        default_factory=list,
        description="With all: parked dead letters whose record the topic no longer holds.",
    )


class EnableOut(BaseModel):
    connector_id: str
    requested_at: str
    worker: str | None = Field(
        description="The worker's state as last published before this request (running, "
        "stopped, disabled; null: never reported). The restart shows in GET /ops/topics."
    )


def _dlq_error(exc: DeadLetterError) -> JSONResponse:
    status = 404 if isinstance(exc, NoSuchDeadLetter) else 409
    if isinstance(exc, RecordGone):
        status = 410
    elif not isinstance(exc, NoSuchDeadLetter | AlreadyReplayed):
        status = 400
    return JSONResponse(error_body(exc.code, exc.message), status_code=status)


def _broker_error(exc: BrokerError) -> JSONResponse:
    return JSONResponse(error_body(exc.code, exc.message), status_code=503)


def ops_router(
    topics: Topics,
    catalogue: Mapping[str, ConnectorSpec],
    *,
    bootstrap_servers: str | None,
    operator_token_sha256: str | None,
    monitor: MonitorService | None = None,
    ledger: DeadLetterLedger | None = None,
) -> OpsRouter:
    """The ``/ops`` routes; include it with ``app.include_router``.

    ``bootstrap_servers`` None (no broker known to this API process) answers 503.
    ``monitor`` serves ``/ops/topics`` and ``/ops/lag``; pass the one the process's
    Prometheus collector uses so both share samples (default: one of its own, counting
    open dead letters in ``ledger``).
    """

    gate = operator_gate(operator_token_sha256)

    async def operator(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_operator_bearer)],
    ) -> None:
        bearer = credentials is not None and credentials.scheme.lower() == "bearer"
        await gate(credentials.credentials if credentials is not None and bearer else None)

    router = OpsRouter(gate, prefix="/ops", tags=["ops"], dependencies=[Depends(operator)])

    def known(connector_id: str) -> str:
        if connector_id not in catalogue:
            raise UnknownConnector(connector_id)
        return connector_id

    def broker() -> str:
        if not bootstrap_servers:
            raise BrokerError("this API process has no Kafka bootstrap servers configured")
        return bootstrap_servers

    monitors: list[MonitorService] = [] if monitor is None else [monitor]

    def topic_monitor() -> MonitorService:
        if not monitors:
            monitors.append(monitor_service(broker(), topics, list(catalogue), ledger=ledger))
        return monitors[0]

    monitor_responses = error_responses(
        401, 413, 503,
        _401="Not the operator token.",
        _503="The broker is unavailable (`broker_unavailable`, the reason in detail).",
    )

    @router.get("/topics", response_model=None, responses=monitor_responses)
    async def topic_status() -> dict[str, Any] | JSONResponse:
        """Per topic and partition: start/end offsets and rates; held, invalid and dead
        letters per connector (docs/operations.md, Monitoring, says what each means)."""
        try:
            snapshot = await topic_monitor().snapshot(counts=True)
        except BrokerError as exc:
            return _broker_error(exc)
        return snapshot.topics_dict()

    @router.get("/lag", response_model=None, responses=monitor_responses)
    async def consumer_lag() -> dict[str, Any] | JSONResponse:
        """Per consumer group of the pipeline: committed offset, end offset and lag."""
        try:
            snapshot = await topic_monitor().snapshot(counts=False)
        except BrokerError as exc:
            return _broker_error(exc)
        return snapshot.lag_dict()

    responses = error_responses(
        401, 404, 413, 422, 503,
        _401="Not the operator token.",
        _404="Unknown connector, or (replay) no such dead letter.",
        _503="The broker is unavailable (`broker_unavailable`, the reason in detail).",
    )

    @router.get("/dlq/{connector_id}", response_model=DeadLettersOut, responses=responses)
    async def dead_letters(connector_id: ConnectorIdPath) -> DeadLettersOut | JSONResponse:
        """The connector's dead letters (IBANs masked, no content), replayed or not."""
        try:
            entries = await list_dead_letters(broker(), topics, known(connector_id))
        except BrokerError as exc:
            return _broker_error(exc)
        return DeadLettersOut(
            connector_id=connector_id,
            open=sum(1 for e in entries if e.open),
            dead_letters=[DeadLetterOut(**e.summary()) for e in entries],
        )

    @router.post(
        "/dlq/{connector_id}/replay",
        response_model=ReplayOut,
        responses={
            **responses,
            **error_responses(
                400, 409,
                _400="The body is not JSON (`invalid_json`), or the dead letter cannot be "
                "replayed (the detail says why).",
                _409="Already replayed (use force).",
            ),
            410: {"model": ErrorOut,
                  "description": "A parked dead letter whose record is gone from its topic "
                  "(`dead_letter_record_gone`): it cannot be replayed."},
        },
    )
    async def replay(connector_id: ConnectorIdPath, body: ReplayIn) -> ReplayOut | JSONResponse:
        """Re-publish dead letters to the partner topic (same statement id, same key)."""
        try:
            report = await replay_dead_letters(
                broker(), topics, known(connector_id),
                statement_ids=None if body.all else [str(body.statement_id)],
                force=body.force,
            )
        except DeadLetterError as exc:
            return _dlq_error(exc)
        except BrokerError as exc:
            return _broker_error(exc)
        return ReplayOut(**report.as_dict())

    @router.post(
        "/connectors/{connector_id}/enable",
        response_model=EnableOut,
        status_code=202,
        responses=responses,
    )
    async def enable(connector_id: ConnectorIdPath) -> EnableOut | JSONResponse:
        """Resume a connector whose worker was stopped by a fatal error or disabled by a 410,
        without restarting the adapters process (docs/operations.md): an enable command on
        the adapters' control topic; its process restarts the worker from its committed
        offset."""
        try:
            cid = known(connector_id)
            before = worker_states(await read_control(broker(), topics)).get(cid)
            command = await request_enable(broker(), topics, cid, requested_by="api")
        except BrokerError as exc:
            return _broker_error(exc)
        return EnableOut(connector_id=cid, requested_at=command.at.isoformat(),
                         worker=before.state if before is not None else None)

    return router
