"""What every console page shares: templates, the session cookie, CSRF and French errors.

The console is a thin HTML skin over the same ports the JSON API uses: every action calls
the store (or the ledger, the global file, the dead-letter functions) with the signed-in
``Actor``, and the store enforces the FAQ rules. This module only translates refusals into
French sentences and HTTP statuses; it decides nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from routing.domain.errors import (
    AuthenticationFailed,
    ConnectorNotOnCabinet,
    ConnectorStillBound,
    DomainError,
    InvalidIban,
    OtherCabinet,
    ProfileNotAllowed,
    UnknownCabinet,
    UnknownConnector,
    UnknownIban,
)
from routing.entrypoints.api.errors import status_for
from routing.entrypoints.console.sessions import (
    COOKIE,
    SIGNIN_COOKIE,
    Session,
    SessionStore,
    csrf_matches,
)
from routing.ports import UnknownStatement

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
PREFIX = "/console"

_templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)

MANDATE_FR = {
    "pending": "en attente",
    "approved": "approuvé",
    "rejected": "refusé",
    "revoked": "révoqué",
}
PROFILE_FR = {
    "collaborateur": "Collaborateur",
    "superviseur": "Superviseur",
    "administrateur": "Administrateur",
}
_templates.globals.update(mandate_fr=MANDATE_FR, profile_fr=PROFILE_FR, prefix=PREFIX)


class CsrfRefused(Exception):
    """A POST without the session's CSRF token (→ 403)."""


def render(
    name: str,
    context: Mapping[str, Any],
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> HTMLResponse:
    html = _templates.get_template(name).render(**context)
    response = HTMLResponse(html, status_code=status, headers=dict(headers or {}))
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'"
    )
    return response


def french(exc: DomainError) -> tuple[int, str]:
    """The status and the sentence a console user reads for a refusal.

    Another cabinet's resource answers exactly like an unknown one (404, same words), so
    editing an id in a URL tells nothing about other cabinets.
    """
    if isinstance(exc, OtherCabinet | UnknownIban | UnknownCabinet):
        return 404, "Cette ressource n'existe pas dans votre cabinet."
    if isinstance(exc, UnknownStatement):
        return 404, "Ce relevé n'existe pas dans votre cabinet."
    if isinstance(exc, ConnectorStillBound):
        n = exc.bound_ibans
        ibans = "IBAN y est encore rattaché" if n == 1 else "IBAN y sont encore rattachés"
        return 409, (
            f"Suppression impossible : {n} {ibans}. Choisissez « Aucun connecteur » sur "
            "ces IBAN (page « IBAN ») avant de supprimer le connecteur."
        )
    if isinstance(exc, ConnectorNotOnCabinet):
        return 409, (
            "Ce connecteur n'a pas été ajouté à votre cabinet : un « Superviseur » ou un "
            "« Administrateur » doit d'abord l'ajouter sur la page « Cabinet »."
        )
    if isinstance(exc, ProfileNotAllowed):
        return 403, (
            "Seul un « Superviseur » ou un « Administrateur » peut ajouter ou supprimer "
            "un connecteur du cabinet."
        )
    if isinstance(exc, UnknownConnector):
        return 404, "Ce connecteur n'existe pas dans le catalogue."
    if isinstance(exc, InvalidIban):
        return 422, "Cet IBAN n'est pas valide."
    if isinstance(exc, AuthenticationFailed):
        return 401, "Jeton inconnu : vérifiez le jeton qui vous a été remis."
    return status_for(exc), exc.message


async def form_of(request: Request) -> dict[str, str]:
    """The url-encoded form body (the console's forms post nothing else)."""
    body = (await request.body()).decode("utf-8", errors="replace")
    return {k: v[-1] for k, v in parse_qs(body, keep_blank_values=True).items()}


def session_of(request: Request, sessions: SessionStore) -> Session | None:
    return sessions.get(request.cookies.get(COOKIE))


def check_csrf(session: Session, form: Mapping[str, str]) -> None:
    if not csrf_matches(session.csrf, form.get("csrf")):
        raise CsrfRefused


def set_session_cookie(response: Response, request: Request, session_id: str) -> None:
    response.set_cookie(
        COOKIE,
        session_id,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path=PREFIX,
    )
    response.delete_cookie(SIGNIN_COOKIE, path=PREFIX)


def redirect(path: str) -> RedirectResponse:
    return RedirectResponse(PREFIX + path, status_code=303)
