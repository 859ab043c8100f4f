"""Mounting the console on the API app: its pages, its static files and its 403 page."""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from config.catalogue import ConnectorSpec
from routing.entrypoints.console.cabinet import cabinet_pages
from routing.entrypoints.console.ops import OpsConsole, ops_pages
from routing.entrypoints.console.sessions import SessionStore
from routing.entrypoints.console.web import PREFIX, STATIC_DIR, CsrfRefused, render
from routing.ports import DeliveryLedger, GlobalFileStore, StateStore


def mount_console(
    app: FastAPI,
    store: StateStore,
    catalogue: Mapping[str, ConnectorSpec],
    *,
    global_file: GlobalFileStore | None = None,
    ledger: DeliveryLedger | None = None,
    ops: OpsConsole | None = None,
    sessions: SessionStore | None = None,
) -> SessionStore:
    """Serve ``/console`` (cabinet users) and ``/console/ops`` (operators) from ``app``.

    Returns the session store (tests inspect it; it holds only hashes of session ids).
    """
    sessions = sessions or SessionStore()

    @app.exception_handler(CsrfRefused)
    async def _csrf(_: Request, __: CsrfRefused) -> HTMLResponse:
        return render(
            "error.html",
            {
                "message": "Formulaire refusé : jeton anti-falsification (CSRF) absent ou "
                "invalide. Rechargez la page et recommencez."
            },
            403,
        )

    app.mount(f"{PREFIX}/static", StaticFiles(directory=STATIC_DIR), name="console-static")
    app.include_router(
        ops_pages(sessions, ops, store=store, ledger=ledger, catalogue=catalogue)
    )
    app.include_router(
        cabinet_pages(store, catalogue, sessions, global_file=global_file, ledger=ledger)
    )
    return sessions
