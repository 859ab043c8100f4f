"""Bad setting values on the command line: one line on stderr, exit 7, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(sys.executable).with_name("statement-router")
TOKEN = "sro_" + "x" * 43


def run_cli(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("STATEMENT_ROUTER_")}
    base.update(DATA_DIR=str(tmp_path / "var"), **env)
    return subprocess.run(
        [str(SCRIPT), "connectors"], env=base, capture_output=True, text=True, timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("API_PORT", "abc", "API_PORT must be an integer from 0 to 65535"),
        ("LOG_LEVEL", "verbose", "LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR"),
        ("OPERATOR_TOKEN_SHA256", TOKEN, "OPERATOR_TOKEN_SHA256 must be the hex SHA-256"),
        ("KAFKA_EXACTLY_ONCE", "maybe", "KAFKA_EXACTLY_ONCE must be true or false"),
    ],
)
def test_a_bad_value_is_one_line_and_exit_7(
    tmp_path: Path, variable: str, value: str, expected: str
) -> None:
    result = run_cli(tmp_path, **{variable: value})
    assert result.returncode == 7, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: invalid setting: ")
    assert expected in lines[0]
    assert "Traceback" not in result.stderr
    assert value not in result.stderr  # a pasted token is never echoed
    assert result.stdout == ""


@pytest.mark.parametrize(("variable", "value"), [("LOG_LEVEL", "debug"), ("LOG_FORMAT", "JSON")])
def test_a_harmless_case_difference_is_accepted(tmp_path: Path, variable: str, value: str) -> None:
    result = run_cli(tmp_path, **{variable: value})
    assert result.returncode == 0, result.stderr
    assert "acd" in result.stdout


def test_an_unknown_prefixed_variable_is_warned_about(tmp_path: Path) -> None:
    result = run_cli(tmp_path, STATEMENT_ROUTER_LOG_LEVEL="DEBUG")
    assert result.returncode == 0, result.stderr
    assert (
        "warning: STATEMENT_ROUTER_LOG_LEVEL is not a setting and is ignored "
        "(settings have no prefix: did you mean LOG_LEVEL?)"
    ) in result.stderr
    assert "acd" in result.stdout
