"""One shared, cached monitor per server process (its ``/ops`` routes, console, ``/metrics``).

The sampler takes a snapshot; this keeps the latest one, so that every request within
``max_age`` shares it and a dashboard polling every second does not hammer the broker.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterable

import structlog

from events.topics import Topics
from routing.broker.errors import BrokerError
from routing.observability.monitor.model import DeadLetterLedger, MonitorSnapshot
from routing.observability.monitor.sampler import Monitor

log = structlog.get_logger("routing.monitor")

__all__ = ["MonitorService", "monitor_service"]

class MonitorService:
    """One Monitor shared by a process's HTTP routes and its Prometheus collector.

    Requests within ``max_age`` seconds of the last sample share it (an operator's
    dashboard polling every second does not hammer the broker), and concurrent callers
    wait for one sample instead of taking one each. ``refresh_soon`` never blocks: the
    Prometheus collector calls it from ``collect()``, which must not wait on a broker that
    may be down, so it schedules a sample on the event loop and reports the last one.
    """

    def __init__(self, monitor: Monitor, *, max_age: float = 5.0) -> None:
        self.monitor = monitor
        self.max_age = max_age
        self.latest: MonitorSnapshot | None = None
        self.last_error: BrokerError | None = None
        self._lock: asyncio.Lock | None = None
        # The loop refreshes run in: /metrics is served from a worker thread, which has none.
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        self._task: asyncio.Task[None] | None = None
        self._guard = threading.Lock()

    def _fresh(self, counts: bool) -> MonitorSnapshot | None:
        snap = self.latest
        if snap is None or (counts and not snap.has_counts):
            return None
        if time.monotonic() - snap.monotonic > self.max_age:
            return None
        return snap

    async def snapshot(self, *, counts: bool = True) -> MonitorSnapshot:
        """A snapshot at most ``max_age`` old; raises BrokerError when none can be taken."""
        self._loop = asyncio.get_running_loop()
        if self._lock is None:
            self._lock = asyncio.Lock()
        cached = self._fresh(counts)
        if cached is not None:
            return cached
        async with self._lock:
            cached = self._fresh(counts)
            if cached is not None:
                return cached
            try:
                snap = await self.monitor.sample(counts=counts)
            except BrokerError as exc:
                self.last_error = exc
                raise
            self.latest, self.last_error = snap, None
            return snap

    def refresh_soon(self) -> None:
        """Schedule a lag-only sample if the last one is stale; return at once.

        Safe from any thread: from the event loop's own thread (a /metrics route) the
        sample is a task; from another thread (prometheus_client's HTTP server) it is
        handed to the loop the service last ran in. Without a known loop it does nothing.
        """
        if self._fresh(False) is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            self._start_refresh()
        elif self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._start_refresh)

    def _start_refresh(self) -> None:
        with self._guard:
            if self._task is not None and not self._task.done():
                return
            self._task = asyncio.get_running_loop().create_task(self._refresh())

    async def _refresh(self) -> None:
        try:
            await self.snapshot(counts=False)
        except BrokerError as exc:
            log.warning("monitor_refresh_failed", error=exc.message)

    async def wait_refreshed(self) -> None:
        """Wait for a scheduled refresh to finish (tests, shutdown)."""
        task = self._task
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    async def aclose(self) -> None:
        """Cancel a refresh in flight; the service holds no connection between samples."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def monitor_service(
    bootstrap_servers: str,
    topics: Topics,
    connector_ids: Iterable[str],
    *,
    ledger: DeadLetterLedger | None = None,
    max_age: float = 5.0,
) -> MonitorService:
    """The shared monitor of a server process (its /ops routes and its /metrics).

    ``ledger``: the delivery ledger that counts open dead letters (without one they are
    reported unknown, null).
    """
    return MonitorService(
        Monitor(bootstrap_servers, topics, connector_ids, ledger=ledger), max_age=max_age
    )

