"""Cabinet, connector and user ids (issue 13, item 5): one rule (``routing.domain.ids``),
enforced by the store, the API and the CLI, and traversal attempts through every place an
id reaches the file system: the download's file name (API and CLI), the embedded
directory endpoints and the connectors file (the directory and SFTP drops, where statement
ids become file names: tests/integration/delivery/test_id_traversal.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from adapters.endpoints import embedded_endpoints
from adapters.global_file import build_download
from config.catalogue import default_catalogue
from config.connectors import ConnectorsFileError, load_connectors_file
from routing.domain.errors import InvalidIdentifier
from routing.domain.ids import ID_PATTERN, ID_RULE
from routing.domain.model import Profile
from routing.entrypoints.api.app import create_app
from routing.store.global_file import SqlGlobalFileStore
from routing.store.sql import SqlStateStore
from tests.integration.global_file.factories import entry

TRAVERSALS = ("../evil", "..", "a/b", "/etc", "a\\..\\b", "a\x00b", "a\nb", "Cab-A", "a b")


def refusal(kind: str, value: str) -> str:
    return f"{kind} id {value!r} is not allowed: use {ID_RULE}"


# --- the store ------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", TRAVERSALS)
async def test_the_store_refuses_them_everywhere_an_id_comes_in(
    store: SqlStateStore, bad: str
) -> None:
    await store.create_cabinet("cab-a", "A")
    actor = await store.authenticate(
        (await store.create_user("cab-a", Profile.ADMINISTRATEUR)).token
    )
    files = SqlGlobalFileStore(store.engine)
    calls = [
        ("cabinet", store.create_cabinet(bad, "X")),
        ("cabinet", store.create_user(bad, Profile.COLLABORATEUR)),
        ("cabinet", store.add_iban("FR7630006000011234567890189", bad, None)),
        ("cabinet", store.list_cabinet_connectors(actor, bad)),
        ("cabinet", store.add_cabinet_connector(actor, bad, "acd")),
        ("connector", store.add_cabinet_connector(actor, "cab-a", bad)),
        ("cabinet", store.remove_cabinet_connector(actor, bad, "acd")),
        ("connector", store.bind_iban(actor, "FR7630006000011234567890189", bad)),
        ("cabinet", files.statements(actor, bad, date(2026, 1, 1), date(2026, 1, 2))),
    ]
    for kind, call in calls:
        with pytest.raises(InvalidIdentifier) as refused:
            await call
        assert refused.value.message == refusal(kind, bad)
    with pytest.raises(InvalidIdentifier):
        SqlStateStore(store.engine, catalogue=["acd", bad], owns_engine=False)


# --- the API --------------------------------------------------------------------------------


@pytest.fixture
async def client(store: SqlStateStore) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    await store.create_cabinet("cab-a", "A")
    admin = await store.create_user("cab-a", Profile.ADMINISTRATEUR)
    app = create_app(store, default_catalogue(), global_file=SqlGlobalFileStore(store.engine))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http, {"Authorization": f"Bearer {admin.token}"}


@pytest.mark.parametrize("bad", TRAVERSALS)
async def test_the_api_refuses_them_in_paths_and_bodies(
    client: tuple[httpx.AsyncClient, dict[str, str]], bad: str
) -> None:
    http, admin = client
    quoted = quote(bad, safe="")
    iban_path = "/ibans/FR7630006000011234567890189/connector"
    period = "from=2026-01-01&to=2026-01-02"
    for where, method, path, body, kind in (
        ("path", "GET", f"/cabinets/{quoted}/connectors", None, "cabinet"),
        ("path", "POST", f"/cabinets/{quoted}/connectors", {"connector_id": "acd"}, "cabinet"),
        ("path", "DELETE", f"/cabinets/cab-a/connectors/{quoted}", None, "connector"),
        ("path", "GET", f"/cabinets/{quoted}/global-file?{period}", None, "cabinet"),
        ("body", "POST", "/cabinets/cab-a/connectors", {"connector_id": bad}, "connector"),
        ("body", "PUT", iban_path, {"connector_id": bad}, "connector"),
    ):
        response = await http.request(method, path, json=body, headers=admin)
        if where == "path" and ("/" in bad or bad == ".."):
            # A "/" (decoded) or a dot segment (resolved by any HTTP client) changes the
            # path itself: it reaches another route or none, never a file.
            assert response.status_code in (200, 404, 405), (method, path, response.text)
            continue
        assert response.status_code == 422, (method, path, response.text)
        assert response.json()["error"] == "invalid_request"
        assert refusal(kind, bad) in response.json()["detail"]


async def test_the_openapi_schema_declares_the_rule(
    client: tuple[httpx.AsyncClient, dict[str, str]],
) -> None:
    http, _ = client
    schema = (await http.get("/openapi.json")).json()
    params = schema["paths"]["/cabinets/{cabinet_id}/connectors/{connector_id}"]["delete"][
        "parameters"
    ]
    assert {p["name"]: p["schema"]["pattern"] for p in params} == {
        "cabinet_id": ID_PATTERN,
        "connector_id": ID_PATTERN,
    }
    body = schema["components"]["schemas"]["AddConnector"]["properties"]["connector_id"]
    assert body["pattern"] == ID_PATTERN


# --- the file system ------------------------------------------------------------------------


@pytest.mark.parametrize("bad", TRAVERSALS)
def test_a_download_name_never_leaves_its_directory(bad: str) -> None:
    """A cabinet id from before the rule (rows are never rewritten) still names a plain
    file: the download's name keeps only safe characters."""
    for entries in ([entry("s1")], [entry("s1"), entry("x1", fmt="camt053", content=b"<D/>")]):
        download = build_download(bad, date(2026, 1, 1), date(2026, 1, 2), entries)
        assert "/" not in download.filename and "\\" not in download.filename
        assert ".." not in download.filename
        assert download.filename.isprintable() and " " not in download.filename


def test_the_cli_refuses_them_with_exit_7_and_writes_nothing(tmp_path: Path) -> None:
    env = {
        k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "STATEMENT_ROUTER_TOKEN"}
    }
    env["DATA_DIR"] = str(tmp_path / "var")
    script = Path(sys.executable).with_name("statement-router")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(script), *args], env=env, capture_output=True, text=True, timeout=120, check=False
        )

    assert cli("cabinet", "create", "cab-a", "--name", "A").returncode == 0
    token = cli("user", "create", "--cabinet", "cab-a", "--profile", "administrateur")
    token_line = token.stdout.strip().splitlines()[-1]
    out = tmp_path / "out"
    out.mkdir()
    for args, kind, bad in (
        (("cabinet", "create", "../evil", "--name", "X"), "cabinet", "../evil"),
        (("cabinet", "create", "a\nb", "--name", "X"), "cabinet", "a\nb"),
        (
            (
                "global-file",
                "download",
                "--cabinet",
                "../../evil",
                "--from",
                "2026-01-01",
                "--to",
                "2026-01-02",
                "--output",
                str(out),
                "--token",
                token_line,
            ),
            "cabinet",
            "../../evil",
        ),
    ):
        result = cli(*args)
        assert result.returncode == 7, result.stderr
        assert refusal(kind, bad) in result.stderr
    assert list(out.iterdir()) == []
    assert not (tmp_path / "evil").exists() and not (tmp_path.parent / "evil").exists()


def test_connector_ids_cannot_name_a_directory_outside_partners(tmp_path: Path) -> None:
    endpoints = embedded_endpoints(tmp_path, default_catalogue())
    assert sorted(p.name for p in (tmp_path / "partners").iterdir()) == sorted(endpoints)
    toml = tmp_path / "connectors.toml"
    for bad in ("../evil", "a/b", "ACD", "a\\nb"):
        toml.write_text(f'[connectors."{bad}"]\npath = "inbox"\n')
        with pytest.raises(ConnectorsFileError, match="is not allowed"):
            load_connectors_file(toml)
    assert not (tmp_path.parent / "evil").exists()
