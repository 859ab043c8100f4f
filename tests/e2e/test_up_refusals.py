"""``statement-router up`` refuses to start beside another one, or on a taken API port."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.e2e.up_process import UpProcess, cli, up_environment

EXIT_CONFLICT = 6
EXIT_INVALID = 7


async def test_a_second_up_on_the_same_data_directory_refuses(tmp_path: Path) -> None:
    env = up_environment(tmp_path / "var")
    first = UpProcess(env, tmp_path / "logs", "first")
    try:
        await first.ready()
        second = cli({**up_environment(tmp_path / "var")}, "up")
        assert second.returncode == EXIT_CONFLICT, second.stderr
        assert "another `statement-router up` already runs" in second.stderr
        assert f"pid {first.proc.pid}" in second.stderr
        assert "Traceback" not in second.stderr
        assert first.proc.poll() is None  # the running one is untouched
        assert await first.interrupt() == 0, first.report()
    finally:
        first.stop_if_running()


def test_a_taken_api_port_stops_up_with_an_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        env = {**up_environment(tmp_path / "var"), "API_PORT": str(port)}
        result = cli(env, "up")
    assert result.returncode == EXIT_CONFLICT, result.stdout + result.stderr
    assert f"the API cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "var" / "broker").exists()  # refused before starting anything


def test_a_bad_connectors_file_fails_up_fast_as_adapters_does(tmp_path: Path) -> None:
    connectors = tmp_path / "connectors.toml"
    connectors.write_text(
        '[connectors.acd]\nurl = "https://hooks.acd.example/sobank"\n'
        'secret_env = "ACD_WHSEC_NOT_SET"\n'
    )
    env = {**up_environment(tmp_path / "var"), "CONNECTORS_FILE": str(connectors)}
    env.pop("ACD_WHSEC_NOT_SET", None)
    adapters = cli({**env, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}, "adapters")
    up = cli(env, "up")
    assert adapters.returncode == EXIT_INVALID, adapters.stderr
    assert "ACD_WHSEC_NOT_SET" in adapters.stderr
    assert (up.returncode, up.stderr) == (adapters.returncode, adapters.stderr)
    assert not (tmp_path / "var" / "broker").exists()  # nothing was started
