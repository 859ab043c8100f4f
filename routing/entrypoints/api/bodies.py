"""The gate in front of every route: the token first, then the body, within its route's cap.

FastAPI reads a request's body before it solves the route's dependencies, so a bearer-token
dependency alone lets anyone make the server read (and hold) a body of any size. This ASGI
middleware runs before the app:

1. it finds the route among the app's OpenAPI paths (a request that matches none goes
   through untouched: the app answers 404 or 405, or serves a public page such as
   ``/metrics``, without reading anything);
2. on a route that needs a token, it checks the token before reading any byte of the body
   (401 JSON otherwise); the authenticated principal is left in ``scope["state"]`` so the
   route's own dependency does not look it up again;
3. it refuses a ``Content-Length`` over the route's cap at once, and reads a body without
   one (chunked) only up to the cap plus one byte: 413 JSON ``body_too_large`` either way.
   The body read is handed to the app as is, so memory stays bounded by the cap.

The caps are per route (:data:`BODY_LIMITS`); a route that takes no body accepts none.
docs/api.md and docs/operations.md state them.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any

import structlog
from fastapi.responses import JSONResponse
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from routing.domain.errors import AuthenticationFailed
from routing.entrypoints.api.errors import domain_error_response, error_body

log = structlog.get_logger(__name__)

#: The largest JSON body a user or operator route takes: its fields are ids and flags.
JSON_BODY_LIMIT = 4096

#: ``(METHOD, route path)`` → the largest body accepted, in bytes; absent routes take none.
BODY_LIMITS: Mapping[tuple[str, str], int] = {
    ("POST", "/cabinets/{cabinet_id}/connectors"): JSON_BODY_LIMIT,
    ("PUT", "/ibans/{iban}/connector"): JSON_BODY_LIMIT,
    ("POST", "/ops/dlq/{connector_id}/replay"): JSON_BODY_LIMIT,
}

#: Routes served without a token (the rest need a user's, or under /ops the operator's).
PUBLIC_PATHS = frozenset(
    {"/healthz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
)

#: Checks a bearer token (None: no usable ``Authorization: Bearer``); returns who it is,
#: or raises ``AuthenticationFailed``.
Gate = Callable[[str | None], Awaitable[object]]

PRINCIPAL_KEY = "principal"

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"})


def bearer_token(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            text: str = value.decode("latin-1")
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def too_large(limit: int) -> JSONResponse:
    detail = (
        "this route takes no request body"
        if limit == 0
        else f"the request body is larger than this route accepts ({limit} bytes)"
    )
    return JSONResponse(
        error_body("body_too_large", detail), status_code=413, headers={"Connection": "close"}
    )


class TokenThenBody:
    """The ASGI middleware described in the module docstring.

    ``paths`` returns the app's routes as ``{path template: methods}`` (its OpenAPI
    paths; read at the first request, once every router is included). ``gates`` maps a
    path prefix to the gate of the routes under it, longest prefix first; ``unavailable``
    lists the store's outage errors (→ 503).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        paths: Callable[[], Mapping[str, Collection[str]]],
        gates: Mapping[str, Gate],
        unavailable: tuple[type[Exception], ...] = (),
        limits: Mapping[tuple[str, str], int] = BODY_LIMITS,
    ) -> None:
        self.app = app
        self._paths = paths
        self._compiled: list[tuple[re.Pattern[str], str, frozenset[str]]] | None = None
        self._gates = sorted(gates.items(), key=lambda item: -len(item[0]))
        self._unavailable = unavailable
        self._limits = limits

    def _route_path(self, scope: Scope) -> str | None:
        if self._compiled is None:
            self._compiled = [
                (compile_path(path)[0], path, frozenset(m.upper() for m in methods) & _METHODS)
                for path, methods in self._paths().items()
            ]
        method = scope["method"]
        for regex, path, methods in self._compiled:
            if method in methods and regex.match(scope["path"]):
                return path
        return None

    def _gate(self, path: str) -> Gate | None:
        return next((gate for prefix, gate in self._gates if path.startswith(prefix)), None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = self._route_path(scope)
        if route is None:
            await self.app(scope, receive, send)
            return
        if route not in PUBLIC_PATHS:
            gate = self._gate(route)
            try:
                if gate is None:
                    raise AuthenticationFailed("this route has no way to check a token")
                principal = await gate(bearer_token(scope))
            except AuthenticationFailed as exc:
                await domain_error_response(exc)(scope, receive, send)
                return
            except self._unavailable as exc:
                log.error("store_unavailable", error=str(exc))
                down = "the state store is unavailable; retry later"
                body = error_body("store_unavailable", down)
                await JSONResponse(body, status_code=503)(scope, receive, send)
                return
            scope.setdefault("state", {})[PRINCIPAL_KEY] = principal
        limit = self._limits.get((scope["method"], route), 0)
        declared = _declared_length(scope)
        if declared is not None and declared > limit:
            await too_large(limit)(scope, receive, send)
            return
        if declared == 0:
            await self.app(scope, receive, send)
            return
        messages, size = await _read_at_most(receive, limit)
        if size > limit:
            await too_large(limit)(scope, receive, send)
            return
        await self.app(scope, _replay(messages, receive), send)


async def _read_at_most(receive: Receive, limit: int) -> tuple[list[Message], int]:
    """The body's messages until its end or until more than ``limit`` bytes came."""
    messages: list[Message] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, size
        size += len(message.get("body", b""))
        if size > limit or not message.get("more_body", False):
            return messages, size


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


def principal_of(state: Any) -> object | None:
    """The principal the gate left on the request's state, if any."""
    return getattr(state, PRINCIPAL_KEY, None)
