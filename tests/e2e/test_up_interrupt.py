"""Ctrl-C in the middle of the demo stops everything cleanly: exit 0, no traceback."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from tests.e2e.up_process import UpProcess, up_environment
from tests.eventually import eventually

# A hang guard, not a speed requirement: stopping took about 2 s here.
STOP_WITHIN = 30.0


async def test_ctrl_c_during_the_demo_stops_cleanly(tmp_path: Path) -> None:
    up = UpProcess(up_environment(tmp_path / "var"), tmp_path / "logs", "demo", "--demo")
    try:

        async def out() -> str:
            assert up.proc.poll() is None, up.report()
            return up.out

        # Interrupt while the demo feeds and waits for its statements.
        banner = await eventually(
            out,
            "the demo",
            done=lambda text: "demo collaborator token" in text,
        )
        # The CLI's environment for the demo's data, ready to copy.
        assert f"DATA_DIR={(tmp_path / 'var' / 'demo').resolve()} statement-router" in banner
        started = time.monotonic()
        up.proc.send_signal(signal.SIGINT)
        code = up.proc.wait(STOP_WITHIN)
        print(f"stopped in {time.monotonic() - started:.1f}s")
        assert code == 0, up.report()
        assert "Traceback" not in up.err, up.report()
        assert "ConnectError" not in up.err, up.report()
        assert "stopping" in up.out, up.report()
    finally:
        up.stop_if_running()
