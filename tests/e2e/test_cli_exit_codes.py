"""Exit codes of the command line (docs/api.md#exit-codes), run as the console script.

Every long-running role refuses a missing or unreachable broker the same way: one line
``error: …`` on stderr, exit 8, no traceback. Usage errors exit 2.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from routing.entrypoints.up_lock import hold_up_lock, lock_path

EXIT_USAGE = 2
EXIT_UNAVAILABLE = 8
UNREACHABLE = "127.0.0.1:1"  # nothing listens on port 1
BANK_FILE = Path(__file__).parents[2] / "examples" / "bank-files" / "camt053-multi.xml"

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    base = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "STATEMENT_ROUTER_TOKEN",
                       "CONNECTORS_FILE"}
    }
    base["DATA_DIR"] = str(tmp_path / "var")
    inbox = tmp_path / "quadra"
    inbox.mkdir()
    connectors = tmp_path / "connectors.toml"
    connectors.write_text(f'[connectors.quadra]\npath = "{inbox}"\n', encoding="utf-8")
    base["CONNECTORS_FILE"] = str(connectors)
    script = Path(sys.executable).with_name("statement-router")

    def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(script), *args],
            env={**base, **env},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    return run


ROLES = [
    ("relay",),
    ("router",),
    ("global-file", "build"),
    ("ledger",),
    ("adapters",),
    ("ingest", "--keep", str(BANK_FILE)),
]


def one_line_refusal(result: subprocess.CompletedProcess[str]) -> str:
    output = (result.stdout + result.stderr).strip()
    assert "Traceback" not in output and "╭" not in output, output
    assert len(output.splitlines()) == 1, output
    assert output.startswith("error: "), output
    return output


@pytest.mark.parametrize("command", ROLES, ids=lambda c: " ".join(c[:2]))
def test_an_unreachable_broker_is_one_line_and_exit_8(cli: Cli, command: tuple[str, ...]) -> None:
    result = cli(*command, KAFKA_BOOTSTRAP_SERVERS=UNREACHABLE)

    assert result.returncode == EXIT_UNAVAILABLE, result.stdout + result.stderr
    message = one_line_refusal(result)
    assert UNREACHABLE in message


@pytest.mark.parametrize("command", ROLES, ids=lambda c: " ".join(c[:2]))
def test_no_broker_configured_is_exit_8_with_advice(cli: Cli, command: tuple[str, ...]) -> None:
    result = cli(*command)

    assert result.returncode == EXIT_UNAVAILABLE, result.stdout + result.stderr
    message = one_line_refusal(result)
    assert "KAFKA_BOOTSTRAP_SERVERS is not set" in message
    assert "statement-router up" in message


@pytest.mark.parametrize("command", ROLES, ids=lambda c: " ".join(c[:2]))
def test_while_up_runs_the_advice_is_its_broker_not_to_run_up(
    cli: Cli, command: tuple[str, ...], tmp_path: Path
) -> None:
    lock = lock_path(tmp_path / "var", demo=True)
    with hold_up_lock(lock, {"data_dir": str(lock.parent), "broker": "127.0.0.1:40999"}):
        result = cli(*command)

    assert result.returncode == EXIT_UNAVAILABLE, result.stdout + result.stderr
    message = one_line_refusal(result)
    assert "127.0.0.1:40999" in message
    assert "run `statement-router up`" not in message


def test_dlq_replay_without_a_choice_is_a_usage_error(cli: Cli) -> None:
    result = cli("dlq", "replay", "--connector", "quadra")

    assert result.returncode == EXIT_USAGE, result.stderr
    assert "--statement" in result.stderr and "--all" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_exit_code_table_lists_every_code_the_cli_uses() -> None:
    from routing.entrypoints.cli import common

    docs = (Path(__file__).parents[2] / "docs" / "api.md").read_text(encoding="utf-8")
    table = docs.split("### Exit codes", 1)[1].split("\n\n")[2]
    documented = {int(row.split("|")[1]) for row in table.splitlines()[2:]}
    used = {value for name, value in vars(common).items() if name.startswith("EXIT_")}
    assert used | {0} == documented
    assert common.EXIT_USAGE == EXIT_USAGE and common.EXIT_UNAVAILABLE == EXIT_UNAVAILABLE
