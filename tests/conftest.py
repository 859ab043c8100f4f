"""Project-wide pytest configuration: the fixture plugins, and guards against leaks.

As in faust's own suite, a test that leaves a task running or a child process alive
fails: such leaks are how a "passing" async test hides a message it never processed.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

pytest_plugins = [
    "tests.fixtures.broker",
    "tests.fixtures.postgres_server",
    "tests.fixtures.databases",
    "tests.fixtures.receiver",
]


@pytest.fixture(autouse=True)
async def _no_leaked_tasks() -> AsyncIterator[None]:
    before = set(asyncio.all_tasks())
    yield
    await asyncio.sleep(0)
    leaked = [
        task
        for task in asyncio.all_tasks()
        if task not in before and task is not asyncio.current_task() and not task.done()
    ]
    for task in leaked:
        task.cancel()
    assert not leaked, f"the test left tasks running: {[t.get_coro() for t in leaked]}"


def _children(parent: int) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == parent and fields[0] != "Z":
                found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except (OSError, IndexError, ValueError):
            continue
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if any child process outlived the tests (the broker's own guard and
    its teardown run before this)."""
    del exitstatus
    alive = _children(os.getpid())
    if alive:
        session.exitstatus = 1
        print(f"\nchild processes left behind by the tests: {alive}")
