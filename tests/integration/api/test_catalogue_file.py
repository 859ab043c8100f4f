"""The API follows the connectors file (issue 14 item 10): a partner added to the file can
be added to a cabinet and bound at once, ``GET /connectors`` reports each adapter, and a
bad version of the file is refused while the API keeps serving the previous catalogue.
Real store (SQLite and PostgreSQL), real HTTP through httpx."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

from config.catalogue import Catalogue
from routing.domain.model import MandateStatus, Profile
from routing.entrypoints.api.app import create_app
from routing.store.migrate import upgrade
from routing.store.sql import SqlStateStore

IBAN = "FR7630006000011234567890189"


def write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".new")
    tmp.write_text(text)
    tmp.replace(path)


ACD = '[connectors.acd]\nname = "ACD"\nadapter = "webhook"\nurl = "https://x.example/"\n' \
      'secret_env = "ACD_WHSEC_ONLY_IN_THE_ADAPTERS"\n'
SAGE = '[connectors.sage]\nname = "Sage"\nadapter = "sftp"\n'


async def test_a_partner_added_to_the_file_is_bindable_without_a_restart(
    database_url: str, make_store: Callable[..., SqlStateStore], tmp_path: Path
) -> None:
    path = tmp_path / "connectors.toml"
    write(path, ACD)
    # Interval 0: every request looks at the file (the default looks at most once a second).
    live = Catalogue.from_file(path, check_interval=0)
    await upgrade(database_url)
    store = make_store(database_url, catalogue=live)
    await store.create_cabinet("cab-a", "Cabinet A")
    admin = await store.create_user("cab-a", Profile.ADMINISTRATEUR)
    await store.add_iban(IBAN, "cab-a", "client")
    await store.set_mandate(IBAN, MandateStatus.APPROVED)
    headers = {"Authorization": f"Bearer {admin.token}"}
    app = create_app(store, live)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        # The API never needs the adapters' secrets: ACD's secret variable is unset here.
        listed = await client.get("/connectors", headers=headers)
        assert listed.json() == [{"connector_id": "acd", "name": "ACD", "adapter": "webhook"}]
        refused = await client.post("/cabinets/cab-a/connectors",
                                    json={"connector_id": "sage"}, headers=headers)
        assert refused.status_code == 404
        assert refused.json()["error"] == "unknown_connector"

        write(path, ACD + SAGE)
        listed = await client.get("/connectors", headers=headers)
        assert listed.json()[1] == {"connector_id": "sage", "name": "Sage", "adapter": "sftp"}
        added = await client.post("/cabinets/cab-a/connectors",
                                  json={"connector_id": "sage"}, headers=headers)
        assert added.status_code == 201, added.text
        bound = await client.put(f"/ibans/{IBAN}/connector", json={"connector_id": "sage"},
                                 headers=headers)
        assert bound.status_code == 200, bound.text
        assert bound.json()["connector_id"] == "sage"
        diagnosis = await client.get(f"/ibans/{IBAN}/diagnosis", headers=headers)
        checks = {c["name"]: c["ok"] for c in diagnosis.json()["checks"]}
        assert checks["connector_configured"] is True

        # A bad version is refused: the API keeps the previous catalogue.
        write(path, ACD + SAGE.replace('"sftp"', '"ftps"'))
        listed = await client.get("/connectors", headers=headers)
        assert [c["connector_id"] for c in listed.json()] == ["acd", "sage"]
        assert live.refused is not None
        assert "connector sage: adapter: Input should be" in live.refused
