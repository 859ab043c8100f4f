"""The CLI contract, run as the installed console script against a real SQLite file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

BOUND = "FR7630006000011234567890189"
OTHER = "FR7630004008250001234567886"

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "STATEMENT_ROUTER_TOKEN"}
    }
    env["DATA_DIR"] = str(tmp_path / "var")
    script = Path(sys.executable).with_name("statement-router")

    def run(*args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
        extra = ["--token", token] if token else []
        return subprocess.run(
            [str(script), *args, *extra],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    return run


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_faq_through_the_cli(cli: Cli) -> None:
    assert "latest schema" in ok(cli("db", "upgrade"))
    ok(cli("cabinet", "create", "cab-a", "--name", "Cabinet A"))
    admin = ok(cli("user", "create", "--cabinet", "cab-a", "--profile", "administrateur"))
    admin_token = admin.strip().splitlines()[-1]
    assert admin_token.startswith("srt_")
    collab_token = ok(
        cli("user", "create", "--cabinet", "cab-a", "--profile", "collaborateur")
    ).strip().splitlines()[-1]
    ok(cli("iban", "add", "fr76 3000 6000 0112 3456 7890 189", "--cabinet", "cab-a"))
    ok(cli("mandate", "set", BOUND, "approved"))

    refused = cli("cabinet", "connectors", "add", "cab-a", "acd", token=collab_token)
    assert refused.returncode == 4
    assert "only a superviseur or an administrateur can add a connector" in refused.stderr

    assert "added to" in ok(cli("cabinet", "connectors", "add", "cab-a", "acd", token=admin_token))
    assert "already on" in ok(
        cli("cabinet", "connectors", "add", "cab-a", "acd", token=admin_token)
    )
    not_on_cabinet = cli("iban", "bind", BOUND, "cegid", token=collab_token)
    assert not_on_cabinet.returncode == 6
    assert "has not been added to cabinet cab-a" in not_on_cabinet.stderr

    state = json.loads(ok(cli("iban", "bind", BOUND, "acd", "--json", token=collab_token)))
    assert state["connector_id"] == "acd"

    diagnosis = json.loads(ok(cli("diagnose", BOUND, "--json", token=collab_token)))
    assert diagnosis["verdict"] == "contact_support"

    still_bound = cli("cabinet", "connectors", "remove", "cab-a", "acd", token=admin_token)
    assert still_bound.returncode == 6
    assert "still bound to 1 IBAN of cabinet cab-a" in still_bound.stderr

    ok(cli("iban", "unbind", BOUND, token=collab_token))
    ok(cli("cabinet", "connectors", "remove", "cab-a", "acd", token=admin_token))
    listed = json.loads(ok(cli("cabinet", "connectors", "list", "cab-a", "--json",
                               token=admin_token)))
    assert listed == {"cabinet_id": "cab-a", "connectors": []}


def test_refusals_exit_non_zero_with_the_reason(cli: Cli) -> None:
    ok(cli("cabinet", "create", "cab-a", "--name", "A"))
    bad_iban = cli("iban", "add", "FR7630006000011234567890188", "--cabinet", "cab-a")
    assert bad_iban.returncode == 7
    assert "invalid" in bad_iban.stderr
    unknown_cabinet = cli("iban", "add", OTHER, "--cabinet", "nope")
    assert unknown_cabinet.returncode == 5
    assert "cabinet nope does not exist" in unknown_cabinet.stderr
    bad_token = cli("iban", "show", OTHER, token="srt_wrong")
    assert bad_token.returncode == 3
    no_token = cli("diagnose", OTHER)
    assert no_token.returncode == 3
    assert "--token" in no_token.stderr
    duplicate = cli("cabinet", "create", "cab-a", "--name", "A")
    assert duplicate.returncode == 6
