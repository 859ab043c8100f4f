"""The operator API through the real app, for the tests of the ``/ops`` routes.

``operator_api(bootstrap, topics, sqlite_url)``: the real app on a freshly migrated SQLite
store with one cabinet and its administrator, the operator routes (``/ops/...``) on
``topics`` at ``bootstrap`` behind a new operator token; yields an ``Ops`` whose client
talks to the app in-process. A context manager, for a test that needs another bootstrap
address (a broker that is down, say); the ``ops`` fixture (``tests/integration/conftest.py``)
is it on the session broker.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx

from config.catalogue import default_catalogue
from events.topics import Topics
from routing.domain.model import Profile
from routing.entrypoints.api.app import create_app
from routing.entrypoints.api.ops import new_operator_token, ops_router
from routing.store.ledger import SqlDeliveryLedger
from routing.store.migrate import upgrade
from routing.store.sql import SqlStateStore


@dataclass
class Ops:
    client: httpx.AsyncClient
    operator: dict[str, str]  # the operator's headers
    admin: dict[str, str]  # a cabinet administrator's headers: not the operator


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@contextlib.asynccontextmanager
async def operator_api(bootstrap: str, topics: Topics, sqlite_url: str) -> AsyncIterator[Ops]:
    await upgrade(sqlite_url)
    store = SqlStateStore.from_url(sqlite_url)
    token, digest = new_operator_token()
    try:
        await store.create_cabinet("cab-1", "Cabinet 1")
        admin = await store.create_user("cab-1", Profile.ADMINISTRATEUR)
        router = ops_router(
            topics, default_catalogue(), bootstrap_servers=bootstrap, operator_token_sha256=digest,
            ledger=SqlDeliveryLedger(store.engine),
        )
        app = create_app(store, default_catalogue(), ops=router)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield Ops(client, bearer(token), bearer(admin.token))
    finally:
        await store.close()
