"""Two processes upgrading one fresh database at once: the database's own lock serializes
them (PostgreSQL's transaction-level advisory lock, SQLite's ``BEGIN IMMEDIATE``).

The in-process ``asyncio.Lock`` of ``routing.store.migrate`` cannot help here: each process
has its own. Without the database lock, both would find an empty schema and the second
would fail on "table already exists" (or a duplicate ``alembic_version`` row). The processes
start together at a barrier (a file both wait for), so their upgrades overlap.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from sqlalchemy import text

from routing.store.engine import create_store_engine
from routing.store.migrate import current_revision, head_revision
from tests.eventually import eventually

PROCESSES = 4

CHILD = """
import asyncio, os, sys, time
from pathlib import Path
from routing.store.migrate import upgrade
go, ready = Path(sys.argv[2]), Path(sys.argv[3])
ready.touch()
while not go.exists():
    time.sleep(0.005)
asyncio.run(upgrade(sys.argv[1]))
"""


async def _upgrade_in_processes(url: str, tmp_path: Path) -> list[tuple[int, str]]:
    go = tmp_path / "go"
    readies = [tmp_path / f"ready-{n}" for n in range(PROCESSES)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", CHILD, url, str(go), str(ready),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
        )
        for ready in readies
    ]
    try:
        await eventually(
            lambda: all(r.exists() for r in readies), "every process at the barrier",
            within=120,
        )
        go.touch()
        results = []
        for child in children:
            _, err = await asyncio.wait_for(child.communicate(), 180)
            assert child.returncode is not None
            results.append((child.returncode, err.decode(errors="replace")))
        return results
    finally:
        for child in children:
            if child.returncode is None:
                child.kill()
                await child.wait()


async def test_processes_upgrading_a_fresh_database_at_once_take_turns(
    database_url: str, tmp_path: Path
) -> None:
    results = await _upgrade_in_processes(database_url, tmp_path)

    failures = [err for code, err in results if code != 0]
    assert failures == [], failures[0][-2000:] if failures else ""
    assert await current_revision(database_url) == head_revision()
    engine = create_store_engine(database_url)
    try:
        async with engine.connect() as connection:
            versions = (await connection.execute(text("SELECT version_num FROM alembic_version")))
            assert [row[0] for row in versions] == [head_revision()]
    finally:
        await engine.dispose()
