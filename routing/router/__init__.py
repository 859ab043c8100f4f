"""The router (DESIGN §3): iban.state in a faust Table, statements routed by ``decide()``.

Public API: :func:`create_router_app` (build a worker), :func:`serve_router` (run a built
one in the current loop until a stop event; ``routing.entrypoints.bootstrap.run_router`` does both),
:class:`RouterApp`, :class:`RouterTuning`.
"""

from routing.router.app import (
    RouterApp,
    RouterCrashed,
    RouterTuning,
    create_router_app,
    serve_router,
)

__all__ = [
    "RouterApp",
    "RouterCrashed",
    "RouterTuning",
    "create_router_app",
    "serve_router",
]
