"""``statement-router up`` as a child process, for the e2e tests of restarts and locks."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from tests.eventually import eventually

SCRIPT = Path(sys.executable).with_name("statement-router")
READY = "running; Ctrl-C stops everything"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def up_environment(data_dir: Path, **extra: str) -> dict[str, str]:
    """The caller's environment minus anything that would point ``up`` elsewhere."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key
        not in {
            "DATABASE_URL",
            "KAFKA_BOOTSTRAP_SERVERS",
            "STATEMENT_ROUTER_TOKEN",
            "CONNECTORS_FILE",
            "API_PORT",
        }
    }
    env.update(DATA_DIR=str(data_dir), API_PORT=str(free_port()), **extra)
    return env


def cli(env: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr[-3000:]}"
    return result.stdout


class UpProcess:
    """One ``up`` run, its stdout and stderr in files under ``log_dir``."""

    def __init__(self, env: Mapping[str, str], log_dir: Path, name: str, *args: str) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.out_path = log_dir / f"{name}.out"
        self.err_path = log_dir / f"{name}.err"
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [str(SCRIPT), "up", *args],
                env=dict(env),
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
            )

    @property
    def out(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def err(self) -> str:
        return self.err_path.read_text(errors="replace")

    def report(self) -> str:
        return f"exit {self.proc.poll()}\n--- stdout\n{self.out}\n--- stderr\n{self.err[-4000:]}"

    async def ready(self, within: float = 120.0) -> str:
        async def probe() -> str:
            if self.proc.poll() is not None:
                raise AssertionError(f"up ended before it was ready: {self.report()}")
            return self.out

        return await eventually(
            probe,
            "up to be ready",
            done=lambda out: READY in out,
            within=within,
        )

    @property
    def bootstrap(self) -> str:
        found = re.search(r"broker\s+(127\.0\.0\.1:\d+)", self.out)
        assert found is not None, self.report()
        return found.group(1)

    async def interrupt(self, within: float = 60.0) -> int:
        """Ctrl-C, and wait until it has stopped; its exit status."""
        self.proc.send_signal(signal.SIGINT)
        return await asyncio.to_thread(self.proc.wait, within)

    async def kill(self) -> None:
        self.proc.kill()
        await asyncio.to_thread(self.proc.wait, 30)

    def stop_if_running(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
