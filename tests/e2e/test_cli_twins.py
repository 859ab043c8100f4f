"""The CLI and its API twins return the same data; ``trace`` takes a unique id prefix."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from config.catalogue import default_catalogue
from routing.entrypoints.api.app import create_app
from routing.ports import OutcomeRecord
from routing.store.ledger import SqlDeliveryLedger
from routing.store.sql import SqlStateStore
from tests.e2e.up_process import cli, ok, up_environment

BOUND = "FR7630006000011234567890189"
UNBOUND = "FR7630004008250001234567886"
EXIT_NOT_FOUND = 5
EXIT_INVALID = 7


@dataclass
class Twins:
    env: dict[str, str]
    token: str
    api: httpx.AsyncClient

    def cli_json(self, *args: str) -> object:
        return json.loads(ok(cli(self.env, *args, "--json", "--token", self.token)))

    async def api_json(self, path: str) -> object:
        response = await self.api.get(path, headers={"Authorization": f"Bearer {self.token}"})
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture
async def twins(tmp_path: Path) -> AsyncIterator[Twins]:
    env = up_environment(tmp_path / "var")
    ok(cli(env, "cabinet", "create", "cab-t", "--name", "Twins"))
    created = ok(cli(env, "user", "create", "--cabinet", "cab-t", "--profile", "administrateur"))
    token = created.strip().splitlines()[-1]
    ok(cli(env, "cabinet", "connectors", "add", "cab-t", "acd", "--token", token))
    for iban in (BOUND, UNBOUND):
        ok(cli(env, "iban", "add", iban, "--cabinet", "cab-t"))
    ok(cli(env, "iban", "bind", BOUND, "acd", "--token", token))
    ok(cli(env, "mandate", "set", BOUND, "approved"))
    store = SqlStateStore.from_url(
        f"sqlite+aiosqlite:///{tmp_path / 'var' / 'statement-router.db'}"
    )
    ledger = SqlDeliveryLedger(store.engine)
    at = datetime(2026, 3, 1, 12, tzinfo=UTC)
    await ledger.record(
        [
            OutcomeRecord(sid, outcome, at, iban=BOUND, cabinet_id="cab-t", connector_id="acd")
            for sid in ("mt940-4f0a17c2e9", "mt940-4f9b00d1aa")
            for outcome in ("routed", "delivered")
        ]
    )
    app = create_app(store, default_catalogue(), ledger=ledger)
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield Twins(env, token, client)
    finally:
        await store.close()


async def test_iban_list_is_its_api_twin(twins: Twins) -> None:
    listed = twins.cli_json("iban", "list", "cab-t")
    assert listed == await twins.api_json("/cabinets/cab-t/ibans")
    assert isinstance(listed, dict)
    assert [i["iban"] for i in listed["ibans"]] == sorted([BOUND, UNBOUND])


async def test_diagnose_lists_the_recent_statements_as_the_api_does(twins: Twins) -> None:
    diagnosis = twins.cli_json("diagnose", BOUND)
    assert diagnosis == await twins.api_json(f"/ibans/{BOUND}/diagnosis")
    assert isinstance(diagnosis, dict)
    assert {s["statement_id"] for s in diagnosis["recent_statements"]} == {
        "mt940-4f0a17c2e9",
        "mt940-4f9b00d1aa",
    }


async def test_cabinet_connectors_list_is_its_api_twin(twins: Twins) -> None:
    listed = twins.cli_json("cabinet", "connectors", "list", "cab-t")
    assert listed == await twins.api_json("/cabinets/cab-t/connectors")


async def test_trace_takes_a_unique_prefix(twins: Twins) -> None:
    traced = twins.cli_json("trace", "mt940-4f0")
    assert isinstance(traced, dict)
    assert traced["statement_id"] == "mt940-4f0a17c2e9"
    ambiguous = cli(twins.env, "trace", "mt940-4f", "--token", twins.token)
    assert ambiguous.returncode == EXIT_INVALID
    assert "mt940-4f0a17c2e9" in ambiguous.stderr and "mt940-4f9b00d1aa" in ambiguous.stderr
    unknown = cli(twins.env, "trace", "mt940-zz", "--token", twins.token)
    assert unknown.returncode == EXIT_NOT_FOUND, unknown.stderr
