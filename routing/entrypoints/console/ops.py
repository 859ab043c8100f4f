"""The operators' pages (``/console/ops``): pipeline overview, dead letters with
« Rejouer », and a search by statement id or IBAN.

Signed in with the operator token (checked against ``OPERATOR_TOKEN_SHA256`` exactly as
``/ops`` does); a cabinet user's session is refused. The pages call what ``/ops`` calls:
the shared ``MonitorService``, ``list_dead_letters`` and ``replay_dead_letters``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from adapters.dlq import DeadLetterError, list_dead_letters, replay_dead_letters
from config.catalogue import ConnectorSpec
from events.topics import Topics
from routing.broker.errors import BrokerError
from routing.domain.decide import diagnose
from routing.domain.errors import DomainError, InvalidIban
from routing.domain.iban import normalise_iban
from routing.domain.identity import is_statement_key
from routing.domain.model import Actor, Profile
from routing.entrypoints.api.ops import operator_token_matches
from routing.entrypoints.console.cabinet import signin_page
from routing.entrypoints.console.sessions import SIGNIN_COOKIE, Session, SessionStore, csrf_matches
from routing.entrypoints.console.web import (
    PREFIX,
    CsrfRefused,
    check_csrf,
    form_of,
    redirect,
    render,
    session_of,
    set_session_cookie,
)
from routing.observability.monitor.model import DeadLetterLedger, MonitorSnapshot
from routing.observability.monitor.service import MonitorService, monitor_service
from routing.ports import AmbiguousStatement, DeliveryLedger, StateStore, UnknownStatement

REFRESH_SECONDS = 10
HOUR = 3600.0


@dataclass
class LagHistory:
    """Total consumer lag per sample over the last hour, for the overview's chart.

    Fed with every snapshot the overview takes (the monitor keeps only its latest), so
    the chart covers the last hour the console was watched.
    """

    window: float = HOUR
    samples: deque[tuple[float, datetime, dict[str, int]]] = field(default_factory=deque)

    def add(self, snap: MonitorSnapshot) -> None:
        if self.samples and self.samples[-1][1] == snap.taken_at:
            return
        self.samples.append(
            (time.monotonic(), snap.taken_at, {g.group_id: g.lag for g in snap.groups})
        )
        cutoff = time.monotonic() - self.window
        while self.samples and self.samples[0][0] < cutoff:
            self.samples.popleft()

    def svg(self, width: int = 640, height: int = 160) -> dict[str, Any]:
        """The chart's polyline points and labels, scaled to ``width`` × ``height``."""
        totals = [(at, sum(lags.values())) for _, at, lags in self.samples]
        peak = max((t for _, t in totals), default=0) or 1
        n = len(totals)
        points = " ".join(
            f"{(i * width / max(n - 1, 1)):.1f},{height - (t * (height - 10) / peak):.1f}"
            for i, (_, t) in enumerate(totals)
        )
        return {
            "width": width,
            "height": height,
            "points": points,
            "peak": peak if totals else 0,
            "count": n,
            "first": totals[0][0] if totals else None,
            "last": totals[-1][0] if totals else None,
            "latest": totals[-1][1] if totals else None,
        }


@dataclass
class OpsConsole:
    """What the operators' pages need: the same settings ``ops_router`` gets."""

    topics: Topics
    catalogue: Mapping[str, ConnectorSpec]
    bootstrap_servers: str | None
    operator_token_sha256: str | None
    monitor: MonitorService | None = None
    history: LagHistory = field(default_factory=LagHistory)
    # Counts open dead letters for a monitor made here (``monitor`` None); null without.
    dead_letter_ledger: DeadLetterLedger | None = None

    def service(self) -> MonitorService:
        if self.monitor is None:
            if not self.bootstrap_servers:
                raise BrokerError("this API process has no Kafka bootstrap servers configured")
            self.monitor = monitor_service(
                self.bootstrap_servers, self.topics, list(self.catalogue),
                ledger=self.dead_letter_ledger,
            )
        return self.monitor

    def broker(self) -> str:
        if not self.bootstrap_servers:
            raise BrokerError("this API process has no Kafka bootstrap servers configured")
        return self.bootstrap_servers


def ops_pages(
    sessions: SessionStore,
    ops: OpsConsole | None,
    *,
    store: StateStore,
    ledger: DeliveryLedger | None,
    catalogue: Mapping[str, ConnectorSpec],
) -> APIRouter:
    router = APIRouter(prefix=f"{PREFIX}/ops", include_in_schema=False)

    def base(session: Session, page: str, **extra: Any) -> dict[str, Any]:
        return {"page": page, "operator": True, "csrf": session.csrf, **extra}

    def gate(request: Request) -> Session | Response:
        session = session_of(request, sessions)
        if session is None:
            return redirect("/ops/connexion")
        if not session.operator:
            return render(
                "error.html",
                {
                    "message": "Ces pages sont réservées aux opérateurs de So bank : votre "
                    "session de cabinet n'y donne pas accès."
                },
                403,
            )
        return session

    @router.get("/connexion")
    async def signin_form() -> HTMLResponse:
        return signin_page("ops/connexion", "Connexion opérateur")

    @router.post("/connexion")
    async def signin(request: Request) -> Response:
        form = await form_of(request)
        if not csrf_matches(request.cookies.get(SIGNIN_COOKIE, ""), form.get("csrf")):
            raise CsrfRefused
        expected = ops.operator_token_sha256 if ops is not None else None
        if not operator_token_matches(form.get("token", "").strip(), expected):
            message = (
                "Ce n'est pas le jeton opérateur."
                if expected
                else "L'accès opérateur n'est pas configuré (OPERATOR_TOKEN_SHA256)."
            )
            return signin_page("ops/connexion", "Connexion opérateur", message, 401)
        session_id, _ = sessions.open(None)
        response = redirect("/ops")
        set_session_cookie(response, request, session_id)
        return response

    @router.get("")
    async def overview(request: Request) -> Response:
        session = gate(request)
        if not isinstance(session, Session):
            return session
        snap, error = None, None
        deliveries = {}
        if ledger is not None:
            since = datetime.now(UTC) - timedelta(seconds=HOUR)
            deliveries = {d.connector_id: d for d in await ledger.connector_deliveries(since)}
        if ops is not None:
            try:
                snap = await ops.service().snapshot(counts=True)
                ops.history.add(snap)
            except BrokerError as exc:
                error = f"Broker indisponible : {exc.message}"
        return render(
            "ops_overview.html",
            base(
                session,
                "ops",
                deliveries=deliveries,
                snap=snap,
                error=error,
                refresh=REFRESH_SECONDS,
                chart=ops.history.svg() if ops is not None else None,
            ),
        )

    async def dlq_view(
        session: Session,
        status: int = 200,
        error: str | None = None,
        notice: str | None = None,
    ) -> HTMLResponse:
        lists: list[dict[str, Any]] = []
        if ops is not None:
            try:
                for connector_id in ops.catalogue:
                    entries = await list_dead_letters(ops.broker(), ops.topics, connector_id)
                    lists.append(
                        {
                            "connector_id": connector_id,
                            "entries": [e.summary() for e in entries],
                            "open": sum(1 for e in entries if e.open),
                        }
                    )
            except BrokerError as exc:
                error = f"Broker indisponible : {exc.message}"
                status = 503
        return render(
            "ops_dlq.html", base(session, "dlq", lists=lists, error=error, notice=notice), status
        )

    @router.get("/dlq")
    async def dead_letters(request: Request) -> Response:
        session = gate(request)
        if not isinstance(session, Session):
            return session
        return await dlq_view(session)

    @router.post("/dlq/{connector_id}/rejouer")
    async def replay(request: Request, connector_id: str) -> Response:
        session = gate(request)
        if not isinstance(session, Session):
            return session
        form = await form_of(request)
        check_csrf(session, form)
        if ops is None or connector_id not in ops.catalogue:
            return await dlq_view(session, 404, error="Connecteur inconnu.")
        statement_id = form.get("statement_id") or None
        try:
            report = await replay_dead_letters(
                ops.broker(),
                ops.topics,
                connector_id,
                statement_ids=None if statement_id is None else [statement_id],
            )
        except DeadLetterError as exc:
            return await dlq_view(session, 409, error=f"Rejeu refusé : {exc.message}")
        except BrokerError as exc:
            return await dlq_view(session, 503, error=f"Broker indisponible : {exc.message}")
        done = ", ".join(report.replayed) or "aucun"
        return await dlq_view(
            session,
            notice=f"Rejoué vers {connector_id} (même clé d'idempotence) : {done}.",
        )

    @router.get("/recherche")
    async def search(request: Request) -> Response:
        session = gate(request)
        if not isinstance(session, Session):
            return session
        query = request.query_params.get("q", "").strip()
        context = base(
            session,
            "search",
            q=query,
            state=None,
            diagnosis=None,
            trace=None,
            recent=[],
            error=None,
        )
        if not query:
            return render("ops_search.html", context)
        try:
            iban = normalise_iban(query)
        except (InvalidIban, ValueError):
            iban = None
        if iban is not None:
            state = await store.iban_state(iban)
            context.update(state=state, diagnosis=diagnose(state, catalogue))
            if state is not None and ledger is not None:
                # Operators read any cabinet: the ledger is asked as a read-only member of
                # the IBAN's own cabinet, the only reader its rules know.
                reader = Actor("operator", state.cabinet_id, Profile.COLLABORATEUR)
                context["recent"] = await ledger.recent_statements(reader, iban, limit=10)
            return render("ops_search.html", context)
        if ledger is None:
            context["error"] = "Le registre des livraisons n'est pas disponible."
            return render("ops_search.html", context, 404)
        key = request.query_params.get("key") or None
        try:
            if key is not None and not is_statement_key(key):
                raise UnknownStatement(query)
            context["trace"] = await ledger.operator_trace(query, key)
        except UnknownStatement:
            context["trace"] = None
        except AmbiguousStatement as exc:
            # An id several accounts use, or one reused: list them to choose by key.
            context["candidates"] = exc.candidates
            return render("ops_search.html", context, 409)
        except DomainError as exc:
            context["error"] = exc.message
            return render("ops_search.html", context, 400)
        if context["trace"] is None:
            context["error"] = "Aucun relevé ni IBAN ne correspond à cette recherche."
            return render("ops_search.html", context, 404)
        return render("ops_search.html", context)

    return router
