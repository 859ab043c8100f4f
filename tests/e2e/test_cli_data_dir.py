"""The CLI finds the data it is pointed at, or says where it is; it never invents a database."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.up_process import cli, ok, up_environment

EXIT_UNAVAILABLE = 8
IBAN = "FR7630006000011234567890189"


@pytest.mark.parametrize(
    "command",
    [
        ("iban", "show", IBAN),
        ("diagnose", IBAN),
        ("cabinet", "connectors", "list", "cab-a"),
        ("trace", "some-statement"),
        ("mandate", "set", IBAN, "approved"),
    ],
)
def test_a_read_without_a_database_says_so_and_creates_none(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    env = up_environment(tmp_path / "var")
    result = cli(env, *command, *(() if command[0] == "mandate" else ("--token", "srt_x")))
    assert result.returncode == EXIT_UNAVAILABLE, result.stderr
    assert "no such database" in result.stderr
    assert "token" not in result.stderr.split("no such database")[0]
    assert not (tmp_path / "var" / "statement-router.db").exists()


def test_the_refusal_points_at_the_demo_data(tmp_path: Path) -> None:
    demo_env = up_environment(tmp_path / "var" / "demo")
    ok(cli(demo_env, "cabinet", "create", "cab-demo", "--name", "Demo"))
    result = cli(up_environment(tmp_path / "var"), "iban", "show", IBAN, "--token", "srt_x")
    assert result.returncode == EXIT_UNAVAILABLE
    assert f"the demo's data is under DATA_DIR={tmp_path / 'var' / 'demo'}" in result.stderr


def test_cabinet_create_still_sets_up_a_new_database(tmp_path: Path) -> None:
    env = up_environment(tmp_path / "var")
    ok(cli(env, "cabinet", "create", "cab-a", "--name", "A"))
    assert (tmp_path / "var" / "statement-router.db").exists()


def test_a_bad_iban_is_refused_without_echoing_it(tmp_path: Path) -> None:
    env = up_environment(tmp_path / "var")
    ok(cli(env, "cabinet", "create", "cab-a", "--name", "A"))
    result = cli(env, "iban", "add", "hello", "--cabinet", "cab-a")
    assert result.returncode == 7
    assert "is invalid: Invalid characters in IBAN" in result.stderr
    assert "HELLO" not in result.stderr and "hello" not in result.stderr
