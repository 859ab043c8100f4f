"""One ``statement-router up`` per data directory, and the API port checked before start.

Two ``up`` on one data directory would run two brokers and two relays on one SQLite file,
and ``up --demo`` would wipe the demo's directory under a running demo. So ``up`` holds an
exclusive ``flock`` on ``<data_dir>/up.lock`` (``up-demo.lock`` for the demo) for as long
as it runs, and writes in it who holds it: a second ``up`` refuses to start and names the
first. The kernel drops the lock with the process, however it ends, so a stale file never
blocks a start. The file also tells the CLI where the running ``up`` is (``running_up``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["UpRefused", "api_port_problem", "hold_up_lock", "lock_path", "running_up"]


class UpRefused(Exception):
    """``up`` cannot start: another one runs on the data directory, or its port is taken."""


def lock_path(data_dir: Path, *, demo: bool) -> Path:
    return data_dir / ("up-demo.lock" if demo else "up.lock")


def _read(fd: int) -> dict[str, Any]:
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        data = json.loads(os.read(fd, 65536).decode("utf-8") or "{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _describe(holder: dict[str, Any]) -> str:
    parts = [f"pid {holder.get('pid', '?')}"]
    if holder.get("started_at"):
        parts.append(f"started {holder['started_at']}")
    if holder.get("api_url"):
        parts.append(f"API {holder['api_url']}")
    return ", ".join(parts)


@contextlib.contextmanager
def hold_up_lock(path: Path, facts: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Hold the lock while the block runs; ``UpRefused`` if another process holds it.

    ``facts`` (the API's URL, the data directory, …) are written into the file with our pid;
    the dict yielded can be updated and saved again with ``save`` once more is known.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            holder = _read(fd)
            raise UpRefused(
                f"another `statement-router up` already runs on {path.parent} "
                f"({_describe(holder)}); stop it first (Ctrl-C in its terminal, or "
                f"kill {holder.get('pid', '<pid>')})"
            ) from None
        record = {"pid": os.getpid(), "started_at": datetime.now(UTC).isoformat(), **facts}
        _write(fd, record)
        try:
            yield record
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def save(path: Path, record: dict[str, Any]) -> None:
    """Rewrite the facts of the lock we hold (e.g. the broker's address once it runs)."""
    fd = os.open(path, os.O_RDWR)
    try:
        _write(fd, record)
    finally:
        os.close(fd)


def _write(fd: int, record: dict[str, Any]) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(record).encode("utf-8"))


def running_up(path: Path) -> dict[str, Any] | None:
    """What the ``up`` holding ``path`` wrote about itself; None when none runs."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return _read(fd)  # held: an up runs
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def api_port_problem(host: str, port: int) -> str | None:
    """Why the API cannot listen on ``host:port``, or None when it can.

    The probe binds with ``SO_REUSEADDR``, as uvicorn does: connections of an earlier run
    left in TIME_WAIT do not make the port busy, a listening socket does.
    """
    if port == 0:
        return None
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return (
                f"the API cannot listen on {host}:{port}: {exc.strerror or exc} (another "
                "process uses it; stop it, or set API_PORT to a free port)"
            )
    return None
