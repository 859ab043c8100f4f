"""``monitor --watch`` ends on Ctrl-C even when the signal lands inside a slow refresh.

In a full test run, with hundreds of consumer groups on the session's brokers, a refresh
takes seconds, and a watch outlived its SIGINT. The watch now waits for a stop event (set
by SIGINT or SIGTERM) beside each refresh, so it ends whatever the refresh does.
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

from rich.console import Console

from config.settings import Settings
from routing.broker.errors import BrokerUnavailable
from routing.entrypoints.cli.monitor import _watch
from tests.eventually import eventually


class SlowMonitor:
    """Answers the first refresh at once; the second never ends, and turns its
    cancellation into a broker error, as an error-wrapping layer can."""

    def __init__(self) -> None:
        self.ledger: Any = None
        self.samples = 0
        self.in_flight = False
        self.cancelled = 0

    async def sample(self, *, counts: bool = True) -> object:
        self.samples += 1
        if self.samples == 1:
            return object()
        self.in_flight = True
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise BrokerUnavailable("the refresh was interrupted") from None
        return object()


async def test_a_stop_during_a_slow_refresh_ends_the_watch(tmp_path: Path) -> None:
    monitor = SlowMonitor()
    stop = asyncio.Event()
    shown: list[str | None] = []

    def view(snapshot: object, error: str | None) -> str:
        shown.append(error)
        return "tables"

    watch = asyncio.create_task(
        _watch(monitor, Settings(data_dir=tmp_path), 0.01,  # type: ignore[arg-type]
               Console(file=io.StringIO()), view, lambda snapshot: snapshot, stop))
    await eventually(lambda: monitor.in_flight, "the second refresh in flight")
    stop.set()
    await asyncio.wait_for(watch, 10)
    assert monitor.cancelled == 1 and monitor.samples == 2
    assert shown == [None]  # the interrupted refresh's error is not shown as an outage
