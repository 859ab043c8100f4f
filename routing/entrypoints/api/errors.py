"""Every error the API answers is JSON ``{"error": code, "detail": message}``.

Bad input is a 4xx with a reason a person can act on, never a 500: request validation,
domain refusals and unknown routes all come through these handlers.
"""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from routing.domain.errors import (
    AuthenticationFailed,
    Conflict,
    ConnectorStillBound,
    DomainError,
    InvalidIban,
    InvalidIdentifier,
    NotFound,
    PermissionDenied,
)
from routing.ports import AmbiguousStatement

log = structlog.get_logger(__name__)

_STATUS: tuple[tuple[type[DomainError], int], ...] = (
    (AuthenticationFailed, 401),
    (PermissionDenied, 403),
    (NotFound, 404),
    (Conflict, 409),
    (InvalidIban, 422),
    (InvalidIdentifier, 422),
)


def status_for(exc: DomainError) -> int:
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            return status
    return 400


def error_body(code: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"error": code, "detail": detail, **extra}


def domain_error_response(exc: DomainError) -> JSONResponse:
    extra: dict[str, Any] = {}
    if isinstance(exc, ConnectorStillBound):
        extra["bound_ibans"] = exc.bound_ibans
    if isinstance(exc, AmbiguousStatement):
        extra["candidates"] = [
            {
                "key": c.key,
                "iban": c.iban,
                "content_sha256": c.content_sha256,
                "status": c.status,
                "first_seen": None if c.first_seen is None else c.first_seen.isoformat(),
            }
            for c in exc.candidates
        ]
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, AuthenticationFailed) else None
    return JSONResponse(
        error_body(exc.code, exc.message, **extra), status_code=status_for(exc), headers=headers
    )


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return "; ".join(parts) or "invalid request"


NOT_JSON = "the request body is not valid JSON"
_BODY_NOT_READ = "There was an error parsing the body"  # FastAPI's 400


def _unparsable(exc: RequestValidationError) -> str | None:
    """The reason a body could not be parsed at all (400), or None when it parsed and only
    failed validation (422): a client must fix its encoder in one case, its data in the
    other."""
    for error in exc.errors():
        if error.get("type") == "json_invalid":
            reason = (error.get("ctx") or {}).get("error") or "JSON decode error"
            where = error.get("loc", ())[1:]
            return f"{NOT_JSON}: {reason} (at character {where[0]})" if where else NOT_JSON
    return None


def install_error_handlers(app: FastAPI, unavailable: tuple[type[Exception], ...]) -> None:
    """Map domain refusals, validation errors and store outages to JSON answers."""

    @app.exception_handler(DomainError)
    async def _domain(_: Request, exc: DomainError) -> JSONResponse:
        return domain_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        unparsable = _unparsable(exc)
        if unparsable is not None:
            return JSONResponse(error_body("invalid_json", unparsable), status_code=400)
        return JSONResponse(
            error_body("invalid_request", _describe_validation(exc)), status_code=422
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.detail == _BODY_NOT_READ:  # FastAPI could not decode the body (not UTF-8, say)
            detail = f"{NOT_JSON}: it could not be decoded as UTF-8 JSON"
            return JSONResponse(error_body("invalid_json", detail), status_code=400)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(
            error_body(code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers
        )

    for kind in unavailable:

        @app.exception_handler(kind)
        async def _unavailable(_: Request, exc: Exception) -> JSONResponse:
            log.error("store_unavailable", error=str(exc))
            return JSONResponse(
                error_body("store_unavailable", "the state store is unavailable; retry later"),
                status_code=503,
            )
