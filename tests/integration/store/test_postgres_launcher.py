"""The test session's own PostgreSQL stops when the session's process dies, even by a signal
that skips every teardown, and the next session removes the directory it left
(tests/fixtures/postgres_server.py)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest

from tests.eventually import eventually
from tests.fixtures.postgres_server import sweep_stale_roots

ROOT = Path(__file__).resolve().parents[3]
LAUNCH = """
import json, sys, time
from tests.fixtures.postgres_server import _LocalPostgres
pg = _LocalPostgres()
server = pg.start()
assert pg.proc is not None
print(json.dumps({"pid": pg.proc.pid, "port": server.port, "root": str(pg.root)}), flush=True)
time.sleep(600)
"""


def running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (an exited child nobody reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def swept_an_hour_later(root: Path) -> tuple[bool, bool]:
    """(swept, still there): the launcher's sweep, once ``root`` is an hour old."""
    an_hour_ago = time.time() - 3600
    os.utime(root, (an_hour_ago, an_hour_ago))
    return root in sweep_stale_roots(), root.is_dir()


@pytest.mark.skipif(os.environ.get("TEST_DATABASE_URL") is not None,
                    reason="TEST_DATABASE_URL names a server: the session starts none")
async def test_a_killed_session_does_not_leave_its_server_running() -> None:
    session = await asyncio.create_subprocess_exec(
        sys.executable, "-c", LAUNCH, cwd=ROOT, stdout=asyncio.subprocess.PIPE)
    started: dict[str, object] = {}
    try:
        assert session.stdout is not None
        started = json.loads(await asyncio.wait_for(session.stdout.readline(), 120))
        pid = int(str(started["pid"]))
        assert running(pid)

        # A running server's directory is never swept, however old.
        root = Path(str(started["root"]))
        assert swept_an_hour_later(root) == (False, True)

        session.send_signal(signal.SIGKILL)  # no teardown, no atexit
        await asyncio.wait_for(session.wait(), 30)

        await eventually(lambda: running(pid), f"PostgreSQL (pid {pid}) to stop",
                         within=30, done=lambda alive: not alive)
        # Its directory is left behind; the next session's launcher removes it.
        assert swept_an_hour_later(root) == (True, False)
    finally:
        if session.returncode is None:
            session.kill()
            await session.wait()
        if "pid" in started and running(int(str(started["pid"]))):
            os.kill(int(str(started["pid"])), signal.SIGINT)  # the test failed: stop it here
        if "root" in started:
            shutil.rmtree(str(started["root"]), ignore_errors=True)
