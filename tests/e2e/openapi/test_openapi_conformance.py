"""The OpenAPI schema tells the truth: schemathesis (``--checks all``) against the served API.

The API is composed as ``statement-router api`` composes it (user routes, statements,
``/ops`` on the session's Tansu broker, the console), over a migrated SQLite store seeded
so that the routes can answer 2xx: cabinet ``cab-demo`` (the schema's example) with an
administrator, its IBANs, a statement in the ledger and in the global file. The
schemathesis CLI runs as a child process over real HTTP, with a fixed seed and a bounded
number of examples per operation, a cabinet user's token for the user routes and the
operator token under ``/ops`` (``schemathesis.toml``), and the two facts JSON Schema cannot
carry taught by ``hooks.py``. A recorder in front of the app keeps every answer, so the
test also proves each operation was exercised past authentication.

By hand, against any running API: ``SR_USER_TOKEN=… SR_OPERATOR_TOKEN=…
SCHEMATHESIS_HOOKS=tests.e2e.openapi.hooks schemathesis --config-file
tests/e2e/openapi/schemathesis.toml run http://127.0.0.1:8080/openapi.json --checks all``.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import sys
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from config.catalogue import default_catalogue
from events.topics import Topics
from routing.broker.admin import ensure_topics
from routing.broker.process import BrokerProcess
from routing.domain.model import MandateStatus, Profile
from routing.entrypoints.api.app import create_app
from routing.entrypoints.api.ops import new_operator_token, ops_router
from routing.entrypoints.console.app import mount_console
from routing.entrypoints.console.ops import OpsConsole
from routing.ports import OutcomeRecord
from routing.store.global_file import SqlGlobalFileStore
from routing.store.ledger import SqlDeliveryLedger
from routing.store.migrate import upgrade
from routing.store.sql import SqlStateStore
from tests.e2e.openapi.hooks import OTHER_CABINET_IBAN, OWN_IBANS
from tests.eventually import eventually
from tests.fixtures.broker import unique_prefix
from tests.integration.global_file.factories import entry

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
SEED = 20261204
MAX_EXAMPLES = 25
CABINET = "cab-demo"
STATEMENT = "stmt-2026-11-0001"


@dataclass
class Served:
    url: str
    user_token: str
    operator_token: str
    answers: dict[tuple[str, str], list[int]]  # (method, path template) → statuses


class Recorder:
    """Keeps the status of every answer, by method and OpenAPI path template."""

    def __init__(self, app: ASGIApp, templates: list[str]) -> None:
        self.app = app
        self.templates = [(compile_path(t)[0], t) for t in templates]
        self.answers: dict[tuple[str, str], list[int]] = defaultdict(list)

    def template(self, path: str) -> str:
        return next((t for regex, t in self.templates if regex.match(path)), path)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        key = (scope["method"], self.template(scope["path"]))

        async def recording(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.answers[key].append(message["status"])
            await send(message)

        await self.app(scope, receive, recording)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def seed(store: SqlStateStore) -> str:
    """The cabinet, its administrator (whose token is returned), IBANs and a statement."""
    await store.create_cabinet(CABINET, "Cabinet démo")
    await store.create_cabinet("cab-other", "Autre cabinet")
    admin = await store.create_user(CABINET, Profile.ADMINISTRATEUR)
    for iban in OWN_IBANS:
        await store.add_iban(iban, CABINET, "client-1")
        await store.set_mandate(iban, MandateStatus.APPROVED)
    await store.add_iban(OTHER_CABINET_IBAN, "cab-other", None)
    stored = entry(STATEMENT, cabinet_id=CABINET, period=("2026-11-02", "2026-11-02"))
    await SqlGlobalFileStore(store.engine).store([stored])
    routed = OutcomeRecord(
        statement_id=STATEMENT,
        outcome="global_file",
        at=datetime(2026, 11, 3, 6, 0, tzinfo=UTC),
        iban=stored.iban,
        cabinet_id=CABINET,
        detail="global-file:unbound",
    )
    await SqlDeliveryLedger(store.engine).record([routed, replace(routed, outcome="routed")])
    return admin.token


@pytest.fixture
async def served(tmp_path: Path, tansu_broker: BrokerProcess) -> AsyncIterator[Served]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'statement-router.db'}"
    await upgrade(url)
    store = SqlStateStore.from_url(url)
    catalogue = default_catalogue()
    topics = Topics(prefix=unique_prefix(), partitions=1)
    servers = tansu_broker.bootstrap_servers
    await ensure_topics(servers, topics.specs(list(catalogue)))
    operator, digest = new_operator_token()
    try:
        user = await seed(store)
        files, ledger = SqlGlobalFileStore(store.engine), SqlDeliveryLedger(store.engine)
        app = create_app(
            store,
            catalogue,
            global_file=files,
            ledger=ledger,
            ops=ops_router(
                topics, catalogue, bootstrap_servers=servers, operator_token_sha256=digest
            ),
        )
        mount_console(
            app,
            store,
            catalogue,
            global_file=files,
            ledger=ledger,
            ops=OpsConsole(topics, catalogue, servers, digest),
        )
        recorder = Recorder(app, list(app.openapi()["paths"]))
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(
                recorder,
                host="127.0.0.1",
                port=port,
                log_config=None,
                access_log=False,
                lifespan="off",
            )
        )
        task = asyncio.create_task(server.serve())
        try:

            def stopped_early() -> None:
                assert not task.done(), "uvicorn stopped before it started"

            await eventually(lambda: server.started, "uvicorn started", guard=stopped_early)
            yield Served(f"http://127.0.0.1:{port}", user, operator, recorder.answers)
        finally:
            server.should_exit = True
            await task
    finally:
        await store.close()


async def test_schemathesis_finds_no_mismatch(served: Served, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "SR_USER_TOKEN": served.user_token,
        "SR_OPERATOR_TOKEN": served.operator_token,
        "SCHEMATHESIS_HOOKS": "tests.e2e.openapi.hooks",
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    }
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(HERE / "schemathesis.toml"),
        "run",
        f"{served.url}/openapi.json",
        "--checks",
        "all",
        "--seed",
        str(SEED),
        "--max-examples",
        str(MAX_EXAMPLES),
        "--workers",
        "1",
        "--no-color",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output = (await child.communicate())[0].decode(errors="replace")
    assert child.returncode == 0, output
    summary = re.search(r"(\d+) generated, (\d+) passed", output)
    assert summary is not None, output
    assert int(summary[1]) > 0 and summary[1] == summary[2], output
    operations = {
        (method.upper(), path)
        for path, item in (await _schema_paths(served.url)).items()
        for method in item
    }
    count = len(operations)
    assert f"Selected: {count}/{count}" in output and f"Tested: {count}" in output, output

    # Each operation was answered past the token check: 2xx for all but the replay of
    # a dead letter that does not exist (404 from the topic, not from the gate).
    answers = served.answers
    for method, path in operations:
        statuses = answers.get((method, path), [])
        wanted = (404,) if path.endswith("/replay") else range(200, 300)
        assert any(s in wanted for s in statuses), (method, path, sorted(set(statuses)))
    # OPTIONS was asked, and answered from the schema's methods (204, never 405).
    options = {
        (path, s) for (method, path), found in answers.items() if method == "OPTIONS" for s in found
    }
    assert options and {s for _, s in options} == {204}, sorted(options)


async def _schema_paths(url: str) -> dict[str, dict[str, object]]:
    async with httpx.AsyncClient() as client:
        paths: dict[str, dict[str, object]] = (await client.get(f"{url}/openapi.json")).json()[
            "paths"
        ]
        return paths
