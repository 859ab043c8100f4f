"""The router (DESIGN §3): iban.state in a faust Table, statements routed by ``decide()``.

Public API: :func:`create_router_app` (build a worker), :func:`run_router` (run one in the
current loop until a stop event), :class:`RouterApp`, :class:`RouterTuning`.
"""

from routing.router.app import (
    RouterApp,
    RouterCrashed,
    RouterTuning,
    create_router_app,
    run_router,
)

__all__ = [
    "RouterApp",
    "RouterCrashed",
    "RouterTuning",
    "create_router_app",
    "run_router",
]
