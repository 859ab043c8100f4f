"""The cabinet users' pages (``/console``): Cabinet, IBAN, Relevés and the troubleshooting
checklist « Mes relevés n'arrivent pas », after a sign-in with the user's token.

Every page reads and acts through the ports with the session's ``Actor`` (the store
applies the FAQ rules, the same ones the API goes through); the cabinet is always the
actor's own, never one taken from the URL.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from datetime import date, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from config.catalogue import ConnectorSpec
from routing.domain.decide import diagnose
from routing.domain.errors import DomainError
from routing.domain.identity import is_statement_key
from routing.domain.model import Actor
from routing.entrypoints.api.statements import global_file_download
from routing.entrypoints.console.sessions import (
    COOKIE,
    SIGNIN_COOKIE,
    Session,
    SessionStore,
    csrf_matches,
)
from routing.entrypoints.console.web import (
    PREFIX,
    CsrfRefused,
    check_csrf,
    form_of,
    french,
    redirect,
    render,
    session_of,
    set_session_cookie,
)
from routing.ports import (
    AmbiguousStatement,
    DeliveryLedger,
    GlobalFileStore,
    StateStore,
    UnknownStatement,
)


def _period(values: Mapping[str, str], latest: date | None) -> tuple[date, date, str | None]:
    """The « Relevés » period and an error sentence if it is bad.

    Without one, the page opens on the month of the cabinet's latest statement up to
    today (the last 31 days when the file is empty), so it never opens on an empty page
    while the file holds statements.
    """
    today = date.today()
    start = latest.replace(day=1) if latest else today - timedelta(days=31)
    try:
        first = date.fromisoformat(values.get("from") or start.isoformat())
        last = date.fromisoformat(values.get("to") or max(today, start).isoformat())
    except ValueError:
        return start, today, "Dates invalides : utilisez AAAA-MM-JJ."
    if first > last:
        return first, last, "La période se termine avant de commencer."
    return first, last, None


def cabinet_pages(
    store: StateStore,
    catalogue: Mapping[str, ConnectorSpec],
    sessions: SessionStore,
    *,
    global_file: GlobalFileStore | None,
    ledger: DeliveryLedger | None,
) -> APIRouter:
    router = APIRouter(prefix=PREFIX, include_in_schema=False)

    def name_of(connector_id: str) -> str:
        spec = catalogue.get(connector_id)
        return spec.name if spec else connector_id

    def base(session: Session, page: str, **extra: Any) -> dict[str, Any]:
        assert session.actor is not None
        return {
            "page": page,
            "actor": session.actor,
            "csrf": session.csrf,
            "name_of": name_of,
            **extra,
        }

    def user(request: Request) -> Session | None:
        session = session_of(request, sessions)
        return session if session is not None and not session.operator else None

    async def cabinet_view(
        session: Session, status: int = 200, error: str | None = None, notice: str | None = None
    ) -> HTMLResponse:
        actor = session.actor
        assert actor is not None
        connectors = await store.list_cabinet_connectors(actor, actor.cabinet_id)
        ibans = await store.list_ibans(actor, actor.cabinet_id)
        bound = {c: sum(1 for i in ibans if i.connector_id == c) for c in connectors}
        addable = [c for c in catalogue if c not in connectors]
        return render(
            "cabinet.html",
            base(
                session,
                "cabinet",
                connectors=connectors,
                bound=bound,
                addable=addable,
                error=error,
                notice=notice,
            ),
            status,
        )

    async def ibans_view(
        session: Session, status: int = 200, error: str | None = None, notice: str | None = None
    ) -> HTMLResponse:
        actor = session.actor
        assert actor is not None
        return render(
            "ibans.html",
            base(
                session,
                "ibans",
                ibans=await store.list_ibans(actor, actor.cabinet_id),
                connectors=await store.list_cabinet_connectors(actor, actor.cabinet_id),
                error=error,
                notice=notice,
            ),
            status,
        )

    def refused(session: Session, exc: DomainError) -> HTMLResponse:
        status, message = french(exc)
        return render("error.html", base(session, "", message=message), status)

    # --- sign-in / sign-out -----------------------------------------------------------

    @router.get("")
    async def home(request: Request) -> Response:
        return redirect("/cabinet" if user(request) else "/connexion")

    @router.get("/connexion")
    async def signin_form(request: Request) -> HTMLResponse:
        return _signin_page("connexion", "Connexion au cabinet")

    @router.post("/connexion")
    async def signin(request: Request) -> Response:
        form = await form_of(request)
        if not csrf_matches(request.cookies.get(SIGNIN_COOKIE, ""), form.get("csrf")):
            raise CsrfRefused
        try:
            actor: Actor = await store.authenticate(form.get("token", "").strip())
        except DomainError as exc:
            _, message = french(exc)
            return _signin_page("connexion", "Connexion au cabinet", message, 401)
        session_id, _ = sessions.open(actor)
        response = redirect("/cabinet")
        set_session_cookie(response, request, session_id)
        return response

    @router.post("/deconnexion")
    async def signout(request: Request) -> Response:
        session = session_of(request, sessions)
        form = await form_of(request)
        if session is not None:
            check_csrf(session, form)
            sessions.close(request.cookies.get(COOKIE))
        response = redirect("/connexion")
        response.delete_cookie(COOKIE, path=PREFIX)
        return response

    # --- Cabinet ------------------------------------------------------------------------

    @router.get("/cabinet")
    async def cabinet(request: Request) -> Response:
        session = user(request)
        if session is None:
            return redirect("/connexion")
        return await cabinet_view(session)

    @router.post("/cabinet/connecteurs")
    async def add_connector(request: Request) -> Response:
        session = user(request)
        if session is None:
            return redirect("/connexion")
        form = await form_of(request)
        check_csrf(session, form)
        assert session.actor is not None
        connector_id = form.get("connector_id", "")
        try:
            added = await store.add_cabinet_connector(
                session.actor, session.actor.cabinet_id, connector_id
            )
        except DomainError as exc:
            status, message = french(exc)
            return await cabinet_view(session, status, error=message)
        notice = "ajouté au cabinet" if added else "était déjà sur le cabinet"
        return await cabinet_view(session, notice=f"Connecteur {name_of(connector_id)} {notice}.")

    @router.post("/cabinet/connecteurs/{connector_id}/supprimer")
    async def remove_connector(request: Request, connector_id: str) -> Response:
        session = user(request)
        if session is None:
            return redirect("/connexion")
        check_csrf(session, await form_of(request))
        assert session.actor is not None
        try:
            await store.remove_cabinet_connector(
                session.actor, session.actor.cabinet_id, connector_id
            )
        except DomainError as exc:
            status, message = french(exc)
            return await cabinet_view(session, status, error=message)
        return await cabinet_view(
            session, notice=f"Connecteur {name_of(connector_id)} supprimé du cabinet."
        )

    # --- IBAN ---------------------------------------------------------------------------

    @router.get("/ibans")
    async def ibans(request: Request) -> Response:
        session = user(request)
        if session is None:
            return redirect("/connexion")
        return await ibans_view(session)

    @router.get("/ibans/{iban}")
    async def iban_details(request: Request, iban: str) -> Response:
        session = user(request)
        if session is None:
            return redirect("/connexion")
        assert session.actor is not None
        try:
            state = await store.get_iban(session.actor, iban)
        except DomainError as exc:
            return refused(session, exc)
        connectors = await store.list_cabinet_connectors(session.actor, session.actor.cabinet_id)
        return render("iban.html", base(session, "ibans", iban=state, connectors=connectors))

    @router.post("/ibans")
    async def bind_from_plus(request: Request) -> Response:
        """The page's « + »: the IBAN and the connector come from the form."""
        form = await form_of(request)
        return await bind_form(request, form.get("iban", ""), form)

    @router.post("/ibans/{iban}/connecteur")
    async def bind(request: Request, iban: str) -> Response:
        return await bind_form(request, iban, await form_of(request))

    async def bind_form(request: Request, iban: str, form: Mapping[str, str]) -> Response:
        session = user(request)
        if session is None:
            return redirect("/connexion")
        check_csrf(session, form)
        assert session.actor is not None
        connector_id = form.get("connector_id") or None
        try:
            state = await store.bind_iban(session.actor, iban, connector_id)
        except DomainError as exc:
            status, message = french(exc)
            if status == 404:
                return refused(session, exc)
            return await ibans_view(session, status, error=message)
        target = name_of(connector_id) if connector_id else "« Aucun connecteur »"
        return await ibans_view(session, notice=f"IBAN {state.iban} : {target}.")

    # --- Relevés ------------------------------------------------------------------------

    @router.get("/releves")
    async def statements(request: Request) -> Response:
        session = user(request)
        if session is None:
            return redirect("/connexion")
        assert session.actor is not None
        latest = None
        if global_file is not None:
            latest = await global_file.latest_period_start(session.actor, session.actor.cabinet_id)
        first, last, error = _period(dict(request.query_params), latest)
        entries = []
        if global_file is not None and error is None:
            entries = await global_file.statements(
                session.actor, session.actor.cabinet_id, first, last
            )
        return render(
            "releves.html",
            base(
                session,
                "releves",
                first=first,
                last=last,
                entries=entries,
                error=error,
                available=global_file is not None,
            ),
            422 if error else 200,
        )

    @router.get("/releves/telecharger")
    async def download(request: Request) -> Response:
        session = user(request)
        if session is None:
            return redirect("/connexion")
        assert session.actor is not None
        first, last, error = _period(dict(request.query_params), None)
        if global_file is None or error is not None:
            return render(
                "error.html", base(session, "releves", message=error or "Indisponible."), 422
            )
        return await global_file_download(
            global_file, session.actor, session.actor.cabinet_id, first, last
        )

    # --- « Mes relevés n'arrivent pas » -------------------------------------------------

    @router.get("/diagnostic")
    async def troubleshoot(request: Request) -> Response:
        session = user(request)
        if session is None:
            return redirect("/connexion")
        assert session.actor is not None
        ibans = await store.list_ibans(session.actor, session.actor.cabinet_id)
        chosen = request.query_params.get("iban", "").strip()
        context = base(
            session,
            "diagnostic",
            ibans=ibans,
            chosen=chosen,
            diagnosis=None,
            failing=None,
            recent=[],
            state=None,
        )
        if not chosen:
            return render("diagnostic.html", context)
        try:
            state = await store.get_iban(session.actor, chosen)
            recent = (
                await ledger.recent_statements(session.actor, state.iban, limit=5)
                if ledger is not None
                else []
            )
        except DomainError as exc:
            return refused(session, exc)
        result = diagnose(state, catalogue)
        context.update(
            state=state,
            diagnosis=result,
            failing=next((c for c in result.checks if not c.ok), None),
            recent=recent,
        )
        return render("diagnostic.html", context)

    @router.get("/releves/{statement_id}")
    async def statement(request: Request, statement_id: str, key: str | None = None) -> Response:
        """A statement's trace; ``key`` chooses one when the id names several of the
        cabinet's statements, which are otherwise listed to choose from (as the API's 409)."""
        session = user(request)
        if session is None:
            return redirect("/connexion")
        assert session.actor is not None
        if ledger is None:
            return render("error.html", base(session, "", message="Indisponible."), 404)
        try:
            if key is not None and not is_statement_key(key):
                raise UnknownStatement(statement_id)
            trace = await ledger.trace(session.actor, statement_id, key)
        except AmbiguousStatement as exc:
            context = base(session, "releves", statement_id=statement_id,
                           candidates=exc.candidates)
            return render("trace_choices.html", context, 409)
        except DomainError as exc:
            return refused(session, exc)
        return render("trace.html", base(session, "releves", trace=trace))

    return router


def _signin_page(
    action: str, title: str, error: str | None = None, status: int = 200
) -> HTMLResponse:
    """The sign-in form, with a double-submit CSRF token (there is no session yet)."""
    token = secrets.token_urlsafe(24)
    response = render(
        "signin.html",
        {"page": "signin", "action": action, "title": title, "csrf": token, "error": error},
        status,
    )
    response.set_cookie(SIGNIN_COOKIE, token, httponly=True, samesite="strict", path=PREFIX)
    return response


signin_page = _signin_page
