"""``--help`` and ``--version`` of the console script: plain metavars, grouped commands."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import typer.main

from routing.entrypoints.cli.help import BACK_OFFICE, PROCESSES, USER, humanise
from routing.entrypoints.cli.main import app

PYTHON_TYPE = re.compile(r"<(bool|str|int|float|Path|path|dir|file|list\[[^\]]*\]|[a-z]+ range)>")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("statement-router")
    env = {**os.environ, "COLUMNS": "100"}
    return subprocess.run([str(script), *args], env=env, capture_output=True, text=True,
                          timeout=60, check=False)


def test_top_level_help_groups_the_commands_and_shows_no_python_type() -> None:
    result = cli("--help")

    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert not PYTHON_TYPE.search(out), out
    for panel in (BACK_OFFICE, USER, PROCESSES):
        assert panel in out
    back_office, user, processes = (out.index(p) for p in (BACK_OFFICE, USER, PROCESSES))
    assert "--version" in out

    def panel_of(command: str) -> str:
        at = re.search(rf"│ {re.escape(command)}\s", out)
        assert at is not None, command
        starts = {back_office: BACK_OFFICE, user: USER, processes: PROCESSES}
        return starts[max(s for s in starts if s < at.start())]

    assert panel_of("mandate") == BACK_OFFICE
    assert panel_of("diagnose") == USER
    assert panel_of("router") == PROCESSES


def test_option_values_are_shown_as_words() -> None:
    result = cli("ingest", "--help")

    assert result.returncode == 0, result.stderr
    assert not PYTHON_TYPE.search(result.stdout), result.stdout
    assert re.search(r"files\.\.\.\s+PATH", result.stdout)
    assert re.search(r"--source\s+TEXT", result.stdout)
    assert re.search(r"--keep\s+Move no FILE", result.stdout)  # a flag: no value


def test_version() -> None:
    result = cli("--version")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"statement-router {metadata.version('statement-router')}"


def _paths(command: object, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    for name, sub in getattr(command, "commands", {}).items():
        found += _paths(sub, (*path, name))
    return found


def test_no_command_help_shows_a_python_type(capsys: pytest.CaptureFixture[str]) -> None:
    command = typer.main.get_command(app)
    humanise(command)
    paths = _paths(command)
    assert ("global-file", "download") in paths and len(paths) > 30
    for path in paths:
        with contextlib.suppress(SystemExit):
            command.main([*path, "--help"], prog_name="statement-router")
        out = capsys.readouterr().out
        assert "Usage: statement-router" in out, path
        assert not PYTHON_TYPE.search(out), (path, out)


HEAVY = ("aiokafka", "sqlalchemy", "alembic", "fastapi", "asyncssh", "aiohttp", "uvicorn")
PROBE = """
import sys
sys.argv = ["statement-router", *{args!r}]
from routing.entrypoints.cli.main import main
try:
    main()
except SystemExit:
    pass
print("LOADED", " ".join(sorted(m for m in {heavy!r} if m in sys.modules)), file=sys.stderr)
"""


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["connectors"], ["iban", "--help"]])
def test_help_and_light_commands_import_no_heavy_library(args: list[str], tmp_path: Path) -> None:
    """The CLI starts without Kafka, SQL, HTTP or SSH clients unless the command uses one
    (benchmarks/cli_startup.py measures what that saves)."""
    env = {**os.environ, "DATA_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", PROBE.format(args=args, heavy=HEAVY)],
                            env=env, capture_output=True, text=True, timeout=60, check=False)

    loaded = result.stderr.strip().splitlines()[-1]
    assert loaded == "LOADED", result.stderr[-2000:]
