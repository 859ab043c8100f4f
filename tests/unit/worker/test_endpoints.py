"""Connector endpoints: the TOML connectors file, secret references, the embedded drops."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.delivery import DirectoryEndpoint, SftpEndpoint, WebhookEndpoint
from adapters.delivery.errors import DeliveryConfigError
from adapters.endpoints import embedded_endpoints, load_endpoints, parse_endpoints
from config.catalogue import default_catalogue
from config.connectors import ConnectorsFileError, load_connectors_file
from config.settings import Settings
from routing.entrypoints.api.ops import new_operator_token, operator_token_matches, token_sha256
from tests.unit.delivery.factories import make_webhook_secret


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "connectors.toml"
    path.write_text(text)
    return path


def test_a_full_file_resolves_secret_files_and_environment_references(tmp_path: Path) -> None:
    new, old = make_webhook_secret(), make_webhook_secret()
    (tmp_path / "acd_whsec").write_text(new + "\n")
    path = write(tmp_path, """
[connectors.acd]
url = "https://hooks.acd.example/sobank?token=abc"
secrets = [{ file = "acd_whsec" }, { env = "ACD_OLD" }]

[connectors.cegid]
host = "sftp.cegid.example"
username = "sobank"
private_key_path = "keys/cegid"
known_hosts_path = "/etc/sr/known_hosts"
remote_directory = "inbox"
passphrase_env = "CEGID_PASS"

[connectors.quadra]
path = "drops/quadra"
metadata_sidecar = true
""")
    tables = load_connectors_file(path, {"ACD_OLD": old, "CEGID_PASS": "pass-phrase"})
    endpoints = parse_endpoints(tables, default_catalogue())

    acd = endpoints["acd"]
    assert isinstance(acd, WebhookEndpoint)
    assert [s.get_secret_value() for s in acd.secrets] == [new, old]
    assert new not in repr(acd) and "token=abc" not in repr(acd)
    cegid = endpoints["cegid"]
    assert isinstance(cegid, SftpEndpoint)
    assert cegid.private_key_path == tmp_path / "keys" / "cegid"
    assert cegid.known_hosts_path == Path("/etc/sr/known_hosts")
    assert cegid.passphrase is not None and "pass-phrase" not in repr(cegid)
    assert endpoints["quadra"] == DirectoryEndpoint(tmp_path / "drops" / "quadra", True)


@pytest.mark.parametrize(("text", "message"), [
    ('[connectors.acd]\nurl = "https://x.example/"\nsecrets = ["whsec_inline"]\n',
     "by reference"),
    ('[connectors.acd]\nurl = "https://x.example/"\nsecret = "whsec_inline"\n', "inline"),
    ('[connectors.acd]\nurl = "https://x.example/"\nsecret_env = "MISSING"\n', "MISSING"),
    ('[connectors.acd]\nurl = "https://x.example/"\nsecret_file = "nope"\n', "cannot read"),
    ("[partners.acd]\n", "unknown top-level"),
    ("not toml [", "not valid TOML"),
])
def test_refusals_name_the_problem_not_the_secret(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConnectorsFileError, match=message) as info:
        load_connectors_file(write(tmp_path, text), {})
    assert "whsec_inline" not in str(info.value)


def test_unknown_connectors_and_wrong_kinds_are_refused_together(tmp_path: Path) -> None:
    tables = {"nope": {"path": "/x"}, "acd": {"path": "/x"}}
    with pytest.raises(DeliveryConfigError) as info:
        parse_endpoints(tables, default_catalogue())
    assert "connector nope is not in the catalogue" in str(info.value)
    assert "connector acd (webhook)" in str(info.value)


def test_load_endpoints_reads_the_configured_file(tmp_path: Path) -> None:
    assert load_endpoints(Settings(connectors_file=None), default_catalogue()) == {}
    path = write(tmp_path, '[connectors.quadra]\npath = "/srv/quadra"\n')
    endpoints = load_endpoints(Settings(connectors_file=path), default_catalogue())
    assert endpoints == {"quadra": DirectoryEndpoint(Path("/srv/quadra"))}
    with pytest.raises(DeliveryConfigError, match="cannot read"):
        load_endpoints(Settings(connectors_file=tmp_path / "absent.toml"), default_catalogue())


def test_embedded_endpoints_are_a_drop_per_connector(tmp_path: Path) -> None:
    endpoints = embedded_endpoints(tmp_path, default_catalogue())
    assert set(endpoints) == set(default_catalogue())
    for connector_id, endpoint in endpoints.items():
        assert endpoint == DirectoryEndpoint(tmp_path / "partners" / connector_id)
        assert (tmp_path / "partners" / connector_id).is_dir()


def test_operator_tokens_are_checked_against_their_hash_only() -> None:
    token, digest = new_operator_token()
    assert token.startswith("sro_") and digest == token_sha256(token) and len(digest) == 64
    assert operator_token_matches(token, digest)
    assert not operator_token_matches(token + "x", digest)
    assert not operator_token_matches(token, None)
    settings = Settings(operator_token_sha256=digest)
    assert token not in repr(settings)
