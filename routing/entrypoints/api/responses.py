"""The error answers each route documents in the OpenAPI schema, with the JSON error model.

Partners generate clients from ``/openapi.json``, so a route lists exactly the statuses it
can answer (schemathesis checks it in ``tests/e2e/test_openapi_conformance.py``). Every
error body is :class:`~routing.entrypoints.api.models.ErrorOut`; the sentences here say when each
status happens.
"""

from __future__ import annotations

from typing import Any

from routing.entrypoints.api.models import ErrorOut

_WHEN: dict[int, str] = {
    400: "The body is not JSON (not UTF-8, or not parsable): `invalid_json`.",
    401: "No token, an unknown token, or (under /ops) not the operator token: `unauthenticated`.",
    403: "The caller's profile lacks the right, or the cabinet is not the caller's.",
    404: "Unknown, or another cabinet's (answered alike).",
    409: "A rule refuses the change (the detail says which).",
    413: "The body is larger than this route accepts (none for a route without a body): "
    "`body_too_large`.",
    422: "A parameter or the body does not validate (`invalid_request`, `invalid_iban`, "
    "`invalid_id`).",
    503: "The state store or the broker is unavailable; retry later.",
}

#: What every route that checks a token can answer, besides its own.
AUTHENTICATED = (401, 413, 503)


def error_responses(*codes: int, **overrides: str) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: each status with :class:`ErrorOut` and when it happens.

    ``overrides`` replace a status's sentence (``_409="Already replayed."``).
    """
    answers: dict[int | str, dict[str, Any]] = {}
    for code in sorted(set(codes)):
        when = overrides.get(f"_{code}", _WHEN[code])
        answers[code] = {"model": ErrorOut, "description": when}
    return answers
