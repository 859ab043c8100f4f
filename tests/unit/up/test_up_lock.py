"""The data directory's lock and the API port check of ``statement-router up``."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from routing.entrypoints.up_lock import (
    UpRefused,
    api_port_problem,
    hold_up_lock,
    lock_path,
    running_up,
)


def test_a_second_holder_is_refused_and_told_who_runs(tmp_path: Path) -> None:
    path = lock_path(tmp_path, demo=False)
    with hold_up_lock(path, {"api_url": "http://127.0.0.1:8080"}):
        assert running_up(path) is not None
        with (
            pytest.raises(UpRefused) as refused,
            hold_up_lock(path, {"api_url": "http://127.0.0.1:9999"}),
        ):
            pytest.fail("two holders of one data directory's lock")
        message = str(refused.value)
        assert f"pid {os.getpid()}" in message
        assert "API http://127.0.0.1:8080" in message
        assert str(tmp_path) in message
    assert running_up(path) is None
    with hold_up_lock(path, {}):  # released: the next start may take it
        pass


def test_the_demo_has_its_own_lock(tmp_path: Path) -> None:
    with (
        hold_up_lock(lock_path(tmp_path, demo=False), {}),
        hold_up_lock(lock_path(tmp_path, demo=True), {}),
    ):
        assert running_up(lock_path(tmp_path, demo=True)) is not None


def _time_wait_port() -> int:
    """A port whose only trace is a connection in TIME_WAIT (its listener closed)."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = int(listener.getsockname()[1])
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = listener.accept()
    accepted.close()  # the side that closes first keeps the TIME_WAIT
    client.close()
    listener.close()
    return port


def test_a_port_in_time_wait_is_free() -> None:
    port = _time_wait_port()
    # What the old check did (no SO_REUSEADDR): it called the port busy.
    with socket.socket() as plain, pytest.raises(OSError):
        plain.bind(("127.0.0.1", port))
    assert api_port_problem("127.0.0.1", port) is None


def test_a_listening_port_is_a_problem_that_names_it() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        problem = api_port_problem("127.0.0.1", port)
    assert problem is not None
    assert f"127.0.0.1:{port}" in problem and "API_PORT" in problem
