"""The connector catalogue as configuration (issue 14 item 10): the connectors file's
pydantic models, their one-line errors, the legacy form, the live ``Catalogue``."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.delivery import DeliveryConfigError, DirectoryEndpoint, WebhookEndpoint
from adapters.endpoints import load_connectors, read_connectors
from config.catalogue import (
    DEFAULT_FILE,
    Catalogue,
    CatalogueError,
    ConnectorSpec,
    default_catalogue,
    load_catalogue,
)
from config.settings import Settings
from tests.unit.delivery.factories import make_webhook_secret


def write(tmp_path: Path, text: str, name: str = "connectors.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_shipped_catalogue_is_a_file_not_code() -> None:
    assert DEFAULT_FILE.name == "connectors.default.toml"
    assert load_catalogue(DEFAULT_FILE) == default_catalogue() == {
        "acd": ConnectorSpec("acd", "ACD", "webhook"),
        "cegid": ConnectorSpec("cegid", "Cegid", "sftp"),
        "quadra": ConnectorSpec("quadra", "Quadra", "directory"),
        "pennylane": ConnectorSpec("pennylane", "Pennylane", "webhook"),
    }
    assert load_connectors(Settings(connectors_file=None)).endpoints == {}


def test_a_new_partner_is_a_table_with_its_adapter(tmp_path: Path) -> None:
    secret = make_webhook_secret()
    path = write(tmp_path, """
[connectors.sage]
name = "Sage"
adapter = "directory"
path = "drops/sage"

[connectors.tiime]
adapter = "webhook"
url = "https://hooks.tiime.example/in"
secret_env = "TIIME"

[connectors.later]
name = "Declared, no endpoint yet"
adapter = "sftp"
""")
    config = read_connectors(path, {"TIIME": secret})
    assert config.catalogue == {
        "sage": ConnectorSpec("sage", "Sage", "directory"),
        "tiime": ConnectorSpec("tiime", "tiime", "webhook"),
        "later": ConnectorSpec("later", "Declared, no endpoint yet", "sftp"),
    }
    assert not config.legacy
    assert config.endpoints["sage"] == DirectoryEndpoint(tmp_path / "drops" / "sage")
    assert isinstance(config.endpoints["tiime"], WebhookEndpoint)
    assert "later" not in config.endpoints  # bindable, but no worker runs it here


def test_a_file_naming_no_adapter_keeps_the_shipped_catalogue(tmp_path: Path) -> None:
    path = write(tmp_path, '[connectors.quadra]\npath = "/srv/quadra"\n')
    config = read_connectors(path, {})
    assert config.legacy and config.catalogue == default_catalogue()
    assert config.endpoints == {"quadra": DirectoryEndpoint(Path("/srv/quadra"))}


@pytest.mark.parametrize(("text", "message"), [
    ('[connectors.sage]\nadapter = "ftp"\n',
     "connector sage: adapter: Input should be 'webhook', 'sftp' or 'directory'"),
    ('[connectors.sage]\nadapter = "directory"\nname = ""\n',
     "connector sage: name: String should have at least 1 character"),
    ('[connectors.sage]\nadapter = "directory"\nname = 3\n',
     "connector sage: name: Input should be a valid string"),
    ('[connectors.sage]\nadapter = "directory"\npath = "/x"\n[connectors.acd]\nurl = "h"\n',
     "connector acd: adapter: missing (every connector names its adapter"),
    ('[connectors.sage]\nadapter = "directory"\nkind = "sftp"\n',
     "connector sage: adapter: 'directory' contradicts kind 'sftp'"),
    ('[connectors."Sage Co"]\nadapter = "directory"\n', "connector id"),
    ('[connectors]\nsage = 1\n', "connector sage: expected a table"),
    ('[partners.sage]\nadapter = "directory"\n', "unknown top-level key partners"),
    ("[connectors.sage\n", "is not valid TOML"),
])
def test_catalogue_errors_are_one_line_naming_connector_and_field(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(CatalogueError) as info:
        load_catalogue(path)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("text", "message"), [
    ('[connectors.sage]\nadapter = "sftp"\npath = "/x"\n',
     "connector sage (sftp): unknown sftp endpoint field(s): path"),
    ('[connectors.sage]\nadapter = "webhook"\nurl = "ftp://x"\nsecret_env = "S"\n',
     "connector sage (webhook): invalid webhook endpoint"),
    ('[connectors.sage]\nadapter = "webhook"\nurl = "https://x.example/"\nsecret_env = "NOPE"\n',
     "connector sage: environment variable NOPE"),
    ('[connectors.nope]\nurl = "https://x.example/"\n',
     "connector nope is not in the catalogue (acd, cegid, quadra, pennylane); declare its"),
])
def test_endpoint_errors_name_the_connector_and_its_adapter(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(DeliveryConfigError) as info:
        read_connectors(write(tmp_path, text), {"S": make_webhook_secret()})
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_a_live_catalogue_follows_its_file_and_refuses_a_bad_version(tmp_path: Path) -> None:
    path = write(tmp_path, '[connectors.acd]\nadapter = "webhook"\n')
    now = [0.0]
    live = Catalogue.from_file(path, check_interval=1.0, clock=lambda: now[0])
    assert list(live) == ["acd"] and "sage" not in live

    write(tmp_path, '[connectors.acd]\nadapter = "webhook"\n[connectors.sage]\n'
                    'name = "Sage"\nadapter = "sftp"\n')
    assert "sage" not in live  # not looked at again within the interval
    now[0] = 1.5
    assert "sage" in live and live["sage"] == ConnectorSpec("sage", "Sage", "sftp")

    write(tmp_path, '[connectors.sage]\nadapter = "ftp"\n')
    now[0] = 3.0
    assert list(live) == ["acd", "sage"]  # refused: the previous set stays
    assert live.refused is not None and "connector sage: adapter" in live.refused

    live.use_adapters({"sage": "directory"})  # what the process really runs
    assert live["sage"].adapter == "directory"


def test_the_first_read_of_a_bad_file_fails(tmp_path: Path) -> None:
    with pytest.raises(CatalogueError, match="cannot read the connectors file"):
        Catalogue.from_file(tmp_path / "absent.toml")


def test_a_reload_plan_restarts_only_what_changed(tmp_path: Path) -> None:
    from adapters.catalogue_reload import plan_reload

    drop_a, drop_b = DirectoryEndpoint(tmp_path / "a"), DirectoryEndpoint(tmp_path / "b")
    quadra = ConnectorSpec("quadra", "Quadra", "directory")
    running = {"quadra": (quadra, drop_a), "gone": (ConnectorSpec("gone", "G", "directory"),
                                                     drop_a),
               "moved": (ConnectorSpec("moved", "M", "directory"), drop_a)}
    wanted = {"quadra": (ConnectorSpec("quadra", "Quadra Compta", "directory"), drop_a),
              "moved": (ConnectorSpec("moved", "M", "directory"), drop_b),
              "sage": (ConnectorSpec("sage", "Sage", "directory"), drop_b)}
    plan = plan_reload(running, wanted)
    assert (plan.added, plan.removed, plan.restarted, plan.unchanged) == (
        ["sage"], ["gone"], ["moved"], ["quadra"])


def test_up_gives_a_declared_connector_without_endpoint_its_stand_in(tmp_path: Path) -> None:
    """``up`` follows the file with a default endpoint (the embedded drop); ``adapters``
    has none, so a connector without an endpoint runs no worker there."""
    from adapters.catalogue_reload import ConnectorsFileWatch, plan_reload
    from adapters.supervisor import FileFollow

    path = write(tmp_path, '[connectors.acd]\nname = "ACD"\nadapter = "webhook"\n'
                           '[connectors.quadra]\nname = "Q"\nadapter = "directory"\n'
                           'path = "q"\n')
    config = ConnectorsFileWatch(path).read()
    made: list[str] = []

    def stand_in(cid: str) -> DirectoryEndpoint:
        made.append(cid)
        return DirectoryEndpoint(tmp_path / "partners" / cid)

    up = FileFollow(ConnectorsFileWatch(path), default=stand_in).wanted(config)
    assert up["acd"] == (config.catalogue["acd"], DirectoryEndpoint(tmp_path / "partners/acd"))
    assert up["quadra"] == (config.catalogue["quadra"], DirectoryEndpoint(tmp_path / "q"))
    assert made == ["acd"]  # a configured partner gets no stand-in
    assert list(FileFollow(ConnectorsFileWatch(path)).wanted(config)) == ["quadra"]
    # The same stand-in at the next look: the connector's worker is left alone.
    again = FileFollow(ConnectorsFileWatch(path), default=stand_in).wanted(config)
    assert sorted(plan_reload(up, again).unchanged) == ["acd", "quadra"]


def test_an_empty_connectors_file_setting_means_the_shipped_catalogue(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONNECTORS_FILE", "")
    assert Settings().connectors_file is None
