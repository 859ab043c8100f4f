"""The Makefile's promises (README, Quick start): `make run` installs the runtime only,
`make test` the dev tools, and `make clean` never deletes the non-demo state silently."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

MAKEFILE = Path(__file__).parents[2] / "Makefile"

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def make(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "-f", str(MAKEFILE), "-C", str(directory), *args],
                          capture_output=True, text=True, timeout=60, check=False)


def test_run_installs_the_runtime_only_and_test_the_dev_tools(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("", encoding="utf-8")
    run = make(tmp_path, "-n", "run").stdout
    test = make(tmp_path, "-n", "test").stdout

    assert "pip install --quiet -e .\n" in run and "[dev]" not in run
    assert "statement-router up --demo" in run
    assert "pip install --quiet -e '.[dev]'" in test


def test_clean_deletes_the_demo_and_keeps_the_rest_of_var_saying_so(tmp_path: Path) -> None:
    (tmp_path / "var" / "demo").mkdir(parents=True)
    (tmp_path / "var" / "demo" / "statement-router.db").write_bytes(b"demo")
    (tmp_path / "var" / "up-demo.lock").write_bytes(b"")
    (tmp_path / "var" / "statement-router.db").write_bytes(b"state")
    (tmp_path / ".venv").mkdir()

    result = make(tmp_path, "clean")

    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "var" / "demo").exists() and not (tmp_path / ".venv").exists()
    assert not (tmp_path / "var" / "up-demo.lock").exists()
    assert (tmp_path / "var" / "statement-router.db").read_bytes() == b"state"
    assert "kept var/" in result.stdout and "statement-router.db" in result.stdout
    assert "make clean-data CONFIRM=yes" in result.stdout


def test_clean_data_asks_for_confirmation(tmp_path: Path) -> None:
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "statement-router.db").write_bytes(b"state")

    refused = make(tmp_path, "clean-data")
    assert refused.returncode != 0
    assert (tmp_path / "var" / "statement-router.db").exists()
    assert "CONFIRM=yes" in refused.stdout

    assert make(tmp_path, "clean-data", "CONFIRM=yes").returncode == 0
    assert not (tmp_path / "var").exists()


def test_clean_is_quiet_when_only_the_demo_was_there(tmp_path: Path) -> None:
    (tmp_path / "var" / "demo").mkdir(parents=True)

    result = make(tmp_path, "clean")

    assert result.returncode == 0 and "kept" not in result.stdout
