"""The CLI reads the catalogue from ``CONNECTORS_FILE`` as the API does (issue 14 item 10):
``connectors --json`` is ``GET /connectors``'s twin, adapter included; a partner declared
only in the file can be added to a cabinet and bound; a bad file is one line and exit 7."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from config.catalogue import Catalogue
from routing.entrypoints.api.app import create_app
from routing.store.sql import SqlStateStore
from tests.e2e.up_process import cli, ok, up_environment

IBAN = "FR7630006000011234567890189"
EXIT_INVALID = 7

FILE = """
[connectors.acd]
name = "ACD"
adapter = "webhook"
url = "https://hooks.acd.example/in"
secret_env = "ONLY_THE_ADAPTERS_HAVE_IT"

[connectors.sage]
name = "Sage"
adapter = "sftp"
"""


async def test_the_cli_and_the_api_list_the_files_catalogue(tmp_path: Path) -> None:
    connectors = tmp_path / "connectors.toml"
    connectors.write_text(FILE)
    env = up_environment(tmp_path / "var", CONNECTORS_FILE=str(connectors))

    listed = json.loads(ok(cli(env, "connectors", "--json")))
    assert listed == [
        {"connector_id": "acd", "name": "ACD", "adapter": "webhook"},
        {"connector_id": "sage", "name": "Sage", "adapter": "sftp"},
    ]

    ok(cli(env, "cabinet", "create", "cab-s", "--name", "Sage users"))
    created = ok(cli(env, "user", "create", "--cabinet", "cab-s", "--profile", "administrateur"))
    token = created.strip().splitlines()[-1]
    ok(cli(env, "cabinet", "connectors", "add", "cab-s", "sage", "--token", token))
    ok(cli(env, "iban", "add", IBAN, "--cabinet", "cab-s"))
    ok(cli(env, "iban", "bind", IBAN, "sage", "--token", token))
    cabinet = json.loads(ok(cli(env, "cabinet", "connectors", "list", "cab-s", "--json",
                                "--token", token)))
    refused = cli(env, "cabinet", "connectors", "add", "cab-s", "pennylane", "--token", token)
    assert refused.returncode != 0 and "pennylane is not in the connector catalogue" in (
        refused.stderr)

    store = SqlStateStore.from_url(
        f"sqlite+aiosqlite:///{tmp_path / 'var' / 'statement-router.db'}",
        catalogue=Catalogue.from_file(connectors))
    try:
        app = create_app(store, Catalogue.from_file(connectors))
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.get("/connectors", headers=headers)).json() == listed
            twin = await client.get("/cabinets/cab-s/connectors", headers=headers)
            assert twin.json() == cabinet
    finally:
        await store.close()


def test_a_bad_catalogue_is_one_line_and_exit_7(tmp_path: Path) -> None:
    connectors = tmp_path / "connectors.toml"
    connectors.write_text(FILE.replace('adapter = "sftp"', 'adapter = "ftp"'))
    env = up_environment(tmp_path / "var", CONNECTORS_FILE=str(connectors))
    for args in (("connectors",), ("topics", "list")):
        result = cli(env, *args)
        assert result.returncode == EXIT_INVALID, result.stderr
        assert result.stderr.strip() == (
            "error: connector sage: adapter: Input should be 'webhook', 'sftp' or 'directory'")
        assert "Traceback" not in result.stderr
