"""The statements' routes: the cabinet's global file (« Relevés », « Télécharger ») and a
statement's trace (where is it, and why).

Built by :func:`statements_router` and included by ``create_app`` when it is given a
``GlobalFileStore`` and/or a ``DeliveryLedger``; without them the routes do not exist
(the API then behaves as before). Authorisation is the ports' (``OtherCabinet`` → 403 for
another cabinet's global file; another cabinet's statement is an ``UnknownStatement``, 404;
an id naming several of the caller's statements is an ``AmbiguousStatement``, 409, listing
them), like every other route: the routes only translate HTTP.

No ``from __future__ import annotations`` here: FastAPI resolves the dependency
annotations at runtime, and ``ActorDep`` is local to the factory (as in ``app.py``).
"""

import re
from collections.abc import Awaitable, Callable
from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field

from adapters.global_file import build_download
from routing.domain.identity import KEY_PATTERN
from routing.domain.model import Actor
from routing.entrypoints.api.models import CabinetIdPath
from routing.entrypoints.api.responses import AUTHENTICATED, error_responses
from routing.ports import DeliveryLedger, GlobalFileStore, StatementTrace

_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")

ActorDependency = Callable[..., Awaitable[Actor]]


class CheckTraceOut(BaseModel):
    name: str
    ok: bool


class RoutingOut(BaseModel):
    """The router's decision for the statement (its latest one, after a release)."""

    destination: Literal["partner", "global-file", "held"] | None
    reason: str | None = Field(description="bound, unbound, mandate_pending, …")
    connector_id: str | None
    checks: list[CheckTraceOut] | None = Field(
        description="The FAQ checks in its order; null when the source does not carry them."
    )
    state_version: int | None
    decided_at: datetime | None
    source: Literal["outcome", "global_file", "outcome_detail"] = Field(
        description="Where the trace comes from: a routing field on the router's outcome, "
        "the global-file event's trace, or only the router outcome's detail text "
        "(destination and reason, no checks or state version)."
    )


class OutcomeOut(BaseModel):
    """One step of the statement's life, as recorded by the ledger."""

    outcome: str
    at: datetime
    attempt: int | None
    connector_id: str | None
    detail: str | None


class GlobalFilePlaceOut(BaseModel):
    cabinet_id: str
    format: str
    period_start: date
    period_end: date
    stored_at: datetime | None
    kafka_topic: str
    kafka_partition: int
    kafka_offset: int


class StatementTraceOut(BaseModel):
    statement_id: str
    key: str | None = Field(
        description="The statement key (16 hex digits of its IBAN, id and content): which "
        "statement this is when an id is shared; null when no record named its content."
    )
    content_sha256: str | None
    other_contents: list[str] = Field(
        description="SHA-256 of the other contents its account sent under the same id "
        "(a reused id); each is a statement of its own, traced with its key."
    )
    cabinet_id: str
    iban: str | None
    status: Literal[
        "delivered",
        "in_global_file",
        "dead_lettered",
        "retrying",
        "replayed",
        "routed",
        "held",
        "unknown",
    ]
    summary: str = Field(description="One line for a person: the status and its last reason.")
    routing: RoutingOut | None
    outcomes: list[OutcomeOut] = Field(description="Every recorded step, in time order.")
    global_file: GlobalFilePlaceOut | None

    @classmethod
    def of(cls, trace: StatementTrace) -> "StatementTraceOut":
        stored = trace.global_file
        return cls(
            statement_id=trace.statement_id,
            key=trace.key,
            content_sha256=trace.content_sha256,
            other_contents=list(trace.other_contents),
            cabinet_id=trace.cabinet_id,
            iban=trace.iban,
            status=trace.status,
            summary=summary_line(trace),
            routing=None if trace.routing is None else _routing(trace.routing),
            outcomes=[OutcomeOut.model_validate(e, from_attributes=True) for e in trace.entries],
            global_file=None
            if stored is None
            else GlobalFilePlaceOut.model_validate(stored, from_attributes=True),
        )


def _routing(doc: dict[str, Any]) -> RoutingOut:
    checks = doc.get("checks")
    return RoutingOut(
        destination=doc.get("destination"),
        reason=doc.get("reason"),
        connector_id=doc.get("connector_id"),
        checks=None if checks is None else [CheckTraceOut(**c) for c in checks],
        state_version=doc.get("state_version"),
        decided_at=doc.get("decided_at"),
        source=doc.get("source", "outcome"),
    )


def summary_line(trace: StatementTrace) -> str:
    """« status: what the last step said », e.g. ``retrying: attempt 3 — HTTP 503``."""
    last = trace.entries[-1] if trace.entries else None
    if trace.status == "in_global_file":
        return f"in_global_file: in the global file of cabinet {trace.cabinet_id}"
    if last is None:
        return trace.status
    parts = []
    if last.attempt is not None:
        parts.append(f"attempt {last.attempt}")
    if last.connector_id:
        parts.append(f"connector {last.connector_id}")
    if last.detail:
        parts.append(last.detail)
    return f"{trace.status}: {', '.join(parts)}" if parts else trace.status


def parse_period(start: str, end: str) -> tuple[date, date]:
    """``from``/``to`` as ISO dates (YYYY-MM-DD), ``from`` ≤ ``to``; 422 otherwise."""
    errors: list[dict[str, Any]] = []
    parsed: dict[str, date] = {}
    for name, text in (("from", start), ("to", end)):
        try:
            if not _DATE.fullmatch(text):
                raise ValueError("expected a date as YYYY-MM-DD")
            parsed[name] = date.fromisoformat(text)
        except ValueError as exc:
            errors.append({"loc": ("query", name), "msg": str(exc), "type": "value_error"})
    if not errors and parsed["from"] > parsed["to"]:
        errors.append(
            {
                "loc": ("query", "to"),
                "msg": f"the period ends ({parsed['to']}) before it starts ({parsed['from']})",
                "type": "value_error",
            }
        )
    if errors:
        raise RequestValidationError(errors)
    return parsed["from"], parsed["to"]


async def global_file_download(
    files: GlobalFileStore, actor: Actor, cabinet_id: str, first: date, last: date
) -> Response:
    """The global file for [first, last] as an attachment: the API's download and the
    console's « Télécharger » both answer with this, so they serve the same bytes."""
    entries = await files.statements(actor, cabinet_id, first, last)
    download = build_download(cabinet_id, first, last, entries)
    return Response(
        content=download.content,
        media_type=download.media_type,
        headers={
            "Content-Disposition": f'attachment; filename="{download.filename}"',
            "X-Statement-Count": str(download.statements),
        },
    )


_DAY_SCHEMA: dict[str, Any] = {"format": "date"}

_FILE_RESPONSES: dict[int | str, dict[str, Any]] = {
    **error_responses(
        *AUTHENTICATED, 403, 422,
        _422="A malformed cabinet id, a `from` or `to` that is not a date (YYYY-MM-DD), or a "
        "period that ends before it starts (`invalid_request`).",
    ),
    200: {
        "description": "The global file for the period: a CFONB 120 .txt (records joined "
        "with CRLF), or a .zip when other formats are present. Empty .txt if none.",
        "content": {"text/plain": {}, "application/zip": {}},
        "headers": {
            "Content-Disposition": {"description": "attachment; filename=releves-….txt|zip"},
            "X-Statement-Count": {"description": "How many statements the file holds."},
        },
    }
}


def statements_router(
    current_actor: ActorDependency,
    *,
    global_file: GlobalFileStore | None = None,
    ledger: DeliveryLedger | None = None,
) -> APIRouter:
    """The routes served by the given services (a route whose service is None is absent).

    ``current_actor`` is the app's bearer-token dependency, so authentication is the same
    as everywhere else.
    """
    router = APIRouter()
    ActorDep = Annotated[Actor, Depends(current_actor)]

    if global_file is not None:
        files = global_file

        @router.get(
            "/cabinets/{cabinet_id}/global-file",
            tags=["statements"],
            response_class=Response,
            responses=_FILE_RESPONSES,
        )
        async def download_global_file(
            cabinet_id: CabinetIdPath,
            actor: ActorDep,
            start: Annotated[
                str,
                Query(
                    alias="from",
                    description="First day (YYYY-MM-DD), inclusive; not after `to`.",
                    json_schema_extra=_DAY_SCHEMA,
                    examples=["2026-11-01"],
                ),
            ],
            end: Annotated[
                str,
                Query(
                    alias="to",
                    description="Last day (YYYY-MM-DD), inclusive; not before `from`.",
                    json_schema_extra=_DAY_SCHEMA,
                    examples=["2026-11-30"],
                ),
            ],
        ) -> Response:
            """« Relevés » → « Télécharger »: the cabinet's statements whose period overlaps
            [from, to]. Any profile, own cabinet only (403 otherwise)."""
            first, last = parse_period(start, end)
            return await global_file_download(files, actor, cabinet_id, first, last)

    if ledger is not None:
        book = ledger

        @router.get(
            "/statements/{statement_id}",
            tags=["statements"],
            responses=error_responses(
                *AUTHENTICATED, 404, 409, 422,
                _409="`ambiguous_statement`: the id names several statements of your cabinet "
                "(several accounts use it, or one re-used it for another content); "
                "`candidates` lists them (key, masked IBAN, content_sha256, status, "
                "first_seen): ask again with `?key=`.",
            ),
        )
        async def statement_trace(
            statement_id: Annotated[
                str, Path(min_length=1, max_length=200, examples=["stmt-2026-11-0001"])
            ],
            actor: ActorDep,
            key: Annotated[
                str | None,
                Query(
                    pattern=KEY_PATTERN,
                    description="The statement key, to choose one statement when the id "
                    "names several of your cabinet's (see the 409 answer).",
                ),
            ] = None,
        ) -> StatementTraceOut:
            """Where a statement is and why: its routing trace, every recorded step in time
            order, and a one-word status. Users of the statement's cabinet only. A
            statement is its account and its id: other cabinets' statements under the same
            id are never shown nor counted."""
            return StatementTraceOut.of(await book.trace(actor, statement_id, key))

    return router
