"""The FastAPI application factory. It holds no global state: the composition root passes
the store and the catalogue in, so tests build an app on any store.
"""


from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated

from fastapi import Depends, FastAPI, Request, Response, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from config.catalogue import ConnectorSpec
from routing.domain.decide import Verdict, diagnose
from routing.domain.errors import AuthenticationFailed, ConnectorNotOnCabinet, NotFound
from routing.domain.model import Actor
from routing.entrypoints.api.bodies import Gate, TokenThenBody, principal_of
from routing.entrypoints.api.docs import add_docs
from routing.entrypoints.api.errors import install_error_handlers
from routing.entrypoints.api.methods import AllowedMethods
from routing.entrypoints.api.models import (
    AddConnector,
    BindConnector,
    CabinetConnectorAdded,
    CabinetConnectorsOut,
    CabinetIbansOut,
    CabinetIdPath,
    ConnectorIdPath,
    ConnectorOut,
    DiagnosisOut,
    IbanPath,
    IbanStateOut,
)
from routing.entrypoints.api.ops import OpsRouter
from routing.entrypoints.api.responses import AUTHENTICATED, error_responses
from routing.entrypoints.api.statements import statements_router
from routing.ports import DeliveryLedger, GlobalFileStore, StateStore

_bearer = HTTPBearer(auto_error=False, description="A user's token (statement-router user create).")


def create_app(
    store: StateStore,
    catalogue: Mapping[str, ConnectorSpec],
    unavailable: tuple[type[Exception], ...] = (),
    *,
    global_file: GlobalFileStore | None = None,
    ledger: DeliveryLedger | None = None,
    ops: OpsRouter | None = None,  # routing.entrypoints.api.ops.ops_router(...): operator endpoints
) -> FastAPI:
    """Build the API over ``store``. ``unavailable`` lists the store's outage errors (→ 503).

    ``global_file`` adds the download route, ``ledger`` the statement trace and the
    diagnosis's recent statements (``routing.entrypoints.api.statements``); without them,
    neither."""
    app = FastAPI(
        title="statement-router",
        version="1",
        summary="Routes bank statements to partner connectors or to the cabinet's global file.",
        docs_url=None,  # served by add_docs, with local assets (no CDN)
        redoc_url=None,
    )
    add_docs(app, title=app.title)
    install_error_handlers(app, unavailable)

    async def user_gate(token: str | None) -> Actor:
        if token is None:
            raise AuthenticationFailed("a bearer token is required (Authorization: Bearer …)")
        return await store.authenticate(token)

    gates: dict[str, Gate] = {"/": user_gate}
    if ops is not None:
        gates["/ops/"] = ops.gate
    # Added first, so the Cache-Control middleware below wraps its answers too.
    app.add_middleware(
        TokenThenBody, paths=lambda: app.openapi()["paths"], gates=gates, unavailable=unavailable
    )
    # Outside the token gate: OPTIONS and a method the path does not serve need no token.
    app.add_middleware(AllowedMethods, routes=lambda: app.router.routes)

    async def current_actor(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Actor:
        checked = principal_of(request.state)  # the body gate checked the token already
        if isinstance(checked, Actor):
            return checked
        if credentials is None or credentials.scheme.lower() != "bearer":
            return await user_gate(None)
        return await user_gate(credentials.credentials)

    ActorDep = Annotated[Actor, Depends(current_actor)]

    def spec_out(connector_id: str) -> ConnectorOut:
        spec = catalogue.get(connector_id)
        if spec is None:  # a connector withdrawn from the catalogue but still recorded
            return ConnectorOut(connector_id=connector_id, name=connector_id, adapter="unknown")
        return ConnectorOut(connector_id=spec.connector_id, name=spec.name, adapter=spec.adapter)

    @app.get("/healthz", tags=["ops"], responses=error_responses(413))
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/connectors", tags=["connectors"], responses=error_responses(*AUTHENTICATED))
    async def list_connectors(_: ActorDep) -> list[ConnectorOut]:
        """The connector catalogue: what a cabinet may add."""
        return [spec_out(connector_id) for connector_id in catalogue]

    @app.get(
        "/cabinets/{cabinet_id}/connectors",
        tags=["connectors"],
        responses=error_responses(*AUTHENTICATED, 403, 422),
    )
    async def cabinet_connectors(
        cabinet_id: CabinetIdPath, actor: ActorDep
    ) -> CabinetConnectorsOut:
        ids = await store.list_cabinet_connectors(actor, cabinet_id)
        return CabinetConnectorsOut(cabinet_id=cabinet_id, connectors=[spec_out(i) for i in ids])

    @app.post(
        "/cabinets/{cabinet_id}/connectors",
        tags=["connectors"],
        status_code=status.HTTP_201_CREATED,
        responses={
            200: {"model": CabinetConnectorAdded, "description": "Already there."},
            **error_responses(*AUTHENTICATED, 400, 403, 404, 422),
        },
    )
    async def add_cabinet_connector(
        cabinet_id: CabinetIdPath, body: AddConnector, actor: ActorDep, response: Response
    ) -> CabinetConnectorAdded:
        """Rule 1: a superviseur or an administrateur adds a connector (201; 200 if present)."""
        added = await store.add_cabinet_connector(actor, cabinet_id, body.connector_id)
        if not added:
            response.status_code = status.HTTP_200_OK
        return CabinetConnectorAdded(
            cabinet_id=cabinet_id, connector_id=body.connector_id, added=added
        )

    @app.delete(
        "/cabinets/{cabinet_id}/connectors/{connector_id}",
        tags=["connectors"],
        status_code=status.HTTP_204_NO_CONTENT,
        responses=error_responses(
            *AUTHENTICATED, 403, 404, 409, 422,
            _409="IBANs of the cabinet are still bound to it (`bound_ibans` says how many).",
        ),
    )
    async def remove_cabinet_connector(
        cabinet_id: CabinetIdPath, connector_id: ConnectorIdPath, actor: ActorDep
    ) -> Response:
        """Rule 2: only when no IBAN of the cabinet is bound to it (409 says how many are)."""
        try:
            await store.remove_cabinet_connector(actor, cabinet_id, connector_id)
        except ConnectorNotOnCabinet as exc:
            raise NotFound(exc.message) from None
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    @app.get(
        "/cabinets/{cabinet_id}/ibans",
        tags=["ibans"],
        responses=error_responses(*AUTHENTICATED, 403, 404, 422),
    )
    async def cabinet_ibans(cabinet_id: CabinetIdPath, actor: ActorDep) -> CabinetIbansOut:
        """The cabinet's IBANs with their connector and mandate (the FAQ's « page IBAN »)."""
        states = await store.list_ibans(actor, cabinet_id)
        return CabinetIbansOut(cabinet_id=cabinet_id, ibans=[IbanStateOut.of(s) for s in states])

    @app.get("/ibans/{iban}", tags=["ibans"], responses=error_responses(*AUTHENTICATED, 404, 422))
    async def get_iban(iban: IbanPath, actor: ActorDep) -> IbanStateOut:
        return IbanStateOut.of(await store.get_iban(actor, iban))

    @app.put(
        "/ibans/{iban}/connector",
        tags=["ibans"],
        responses=error_responses(
            *AUTHENTICATED, 400, 404, 409, 422,
            _409="The connector has not been added to the IBAN's cabinet.",
        ),
    )
    async def bind_iban(iban: IbanPath, body: BindConnector, actor: ActorDep) -> IbanStateOut:
        """Rules 3 and 4: bind to a connector of the cabinet, or null for « Aucun connecteur »."""
        return IbanStateOut.of(await store.bind_iban(actor, iban, body.connector_id))

    @app.get(
        "/ibans/{iban}/diagnosis",
        tags=["ibans"],
        responses=error_responses(*AUTHENTICATED, 404, 422),
    )
    async def diagnosis(iban: IbanPath, actor: ActorDep) -> DiagnosisOut:
        """The FAQ checklist « mes relevés ne sont pas récupérés dans mon outil de production »."""
        state = await store.get_iban(actor, iban)
        result = diagnose(state, catalogue)
        if ledger is None or result.verdict is not Verdict.CONTACT_SUPPORT:
            return DiagnosisOut.of(state.iban, result)
        # Every check passes: say what became of the last statements (DESIGN §2 rule 7).
        recent = await ledger.recent_statements(actor, state.iban, limit=5)
        return DiagnosisOut.of(state.iban, result, recent)

    app.include_router(statements_router(current_actor, global_file=global_file, ledger=ledger))
    if ops is not None:
        app.include_router(ops)

    @app.middleware("http")
    async def _no_store(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    return app
