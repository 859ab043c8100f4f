"""``OPTIONS`` and unsupported methods, answered the same way on every path.

Starlette answers a method a path does not serve with the ``Allow`` of the *first* route
whose path matches, so ``OPTIONS /cabinets/x/connectors`` said ``Allow: GET`` although
``POST`` is served there too: clients generated from the schema, and schemathesis, saw a
server that contradicts its own OpenAPI document. This ASGI middleware looks at every
route whose path matches:

* some route serves the method: the request goes on untouched (token, body, route);
* ``OPTIONS``: 204 with ``Allow`` listing every method served at the path, plus
  ``OPTIONS``; no token needed, nothing read (the methods are in the public schema);
* any other method: 405 JSON ``method_not_allowed`` with the same ``Allow``;
* no route's path matches: the request goes on, to the app's 404.

A mount (the console's static files) serves every method it likes: its paths go on too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from fastapi.responses import JSONResponse
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from routing.entrypoints.api.errors import error_body

_METHODS = ("DELETE", "GET", "HEAD", "PATCH", "POST", "PUT", "TRACE")


class AllowedMethods:
    """The ASGI middleware described in the module docstring; ``routes`` returns the app's
    routes (read at each request, so routers included after this is added count)."""

    def __init__(self, app: ASGIApp, *, routes: Callable[[], Sequence[BaseRoute]]) -> None:
        self.app = app
        self._routes = routes

    def _served(self, scope: Scope, method: str) -> bool:
        probe = {**scope, "method": method}
        return any(route.matches(probe)[0] is Match.FULL for route in self._routes())

    def allowed(self, scope: Scope) -> set[str] | None:
        """The methods served at the request's path; None when the request's own method
        is served (or a mount takes the path, or no route matches).

        Each method is probed through the routes' own matching (FastAPI nests included
        routers, whose routes only answer ``matches``), so the answer is the router's."""
        if self._served(scope, scope["method"]):
            return None
        return {m for m in _METHODS if self._served(scope, m)} or None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        methods = self.allowed(scope)
        if methods is None:
            await self.app(scope, receive, send)
            return
        allow = ", ".join(sorted(methods | {"OPTIONS"}))
        response: Response
        if scope["method"] == "OPTIONS":
            response = Response(status_code=204, headers={"Allow": allow})
        else:
            detail = f"{scope['method']} is not served at this path; it serves {allow}"
            response = JSONResponse(
                error_body("method_not_allowed", detail), status_code=405, headers={"Allow": allow}
            )
        await response(scope, receive, send)
