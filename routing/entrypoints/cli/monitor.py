"""``statement-router monitor``: topics, consumer-group lag and parked statements.

Reads the broker's offsets (``routing.observability.monitor``), so it works against the
embedded broker (point ``KAFKA_BOOTSTRAP_SERVERS`` at the address ``up`` prints) and a
real cluster alike, and the delivery ledger of the configured database (``DATABASE_URL``,
the embedded SQLite file by default) for the open dead letters: without it (not migrated,
unreachable) those are shown as unknown and the rest still works.

* default: the tables once, with rates over two samples ``--interval`` seconds apart;
* ``--watch``: refreshed live every ``--interval`` seconds until Ctrl-C; a failed refresh
  keeps the last tables on screen with the error, so a broker blip does not end the watch;
* ``--json``: one JSON document for scripts (same content as ``GET /ops/topics`` and
  ``GET /ops/lag`` together). ``--interval 0`` takes a single sample: rates are null.

Exit code 8 when the broker cannot be read (one-shot modes).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Annotated

import typer

from routing.entrypoints.cli.common import (
    catalogue,
    print_json,
    require_broker,
    run,
    settings,
    usage_error,
)
from routing.entrypoints.cli.pipeline import topic_catalogue

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from config.settings import Settings
    from routing.observability.monitor.model import MonitorSnapshot
    from routing.observability.monitor.sampler import Monitor

_TIMEOUT = 30.0
_STOP_GRACE = 5.0  # seconds a refresh in flight gets to wind down at Ctrl-C


def _monitor(cfg: Settings) -> Monitor:
    from routing.observability.monitor.sampler import Monitor

    bootstrap = require_broker(cfg)
    # A person waits for this one: give a large deployment's changelog scans more time
    # than a server's 10 s (a dead broker still fails at once: the connection is refused).
    return Monitor(bootstrap, topic_catalogue(cfg), list(catalogue(cfg)), timeout=_TIMEOUT)


@contextlib.asynccontextmanager
async def _with_ledger(monitor: Monitor, cfg: Settings) -> AsyncIterator[Monitor]:
    """The monitor, counting open dead letters in the configured database's ledger.

    Not migrated here: a monitor only reads, and a missing schema shows as unknown counts.
    A SQLite file that does not exist is not opened either (the driver would create an
    empty one where the operator expects theirs): the counts are unknown too.
    """
    from routing.entrypoints.bootstrap import open_store
    from routing.store.engine import sqlite_file
    from routing.store.ledger import SqlDeliveryLedger

    path = sqlite_file(cfg.effective_database_url)
    if path is not None and not path.exists():
        import structlog

        structlog.get_logger(__name__).warning(
            "monitor_ledger_unavailable", error=f"no database file at {path}")
        yield monitor
        return
    async with open_store(cfg, migrate=False) as store:
        monitor.ledger = SqlDeliveryLedger(store.engine)
        try:
            yield monitor
        finally:
            monitor.ledger = None


async def _once(monitor: Monitor, cfg: Settings, interval: float) -> MonitorSnapshot:
    """One snapshot; with an interval, a first offsets-only sample gives it rates."""
    async with _with_ledger(monitor, cfg):
        if interval > 0:
            await monitor.sample(counts=False)
            await asyncio.sleep(interval)
        return await monitor.sample(counts=True)


async def _watch(
    monitor: Monitor,
    cfg: Settings,
    interval: float,
    console: Console,
    view: Callable[[MonitorSnapshot, str | None], RenderableType],
    narrow: Callable[[MonitorSnapshot], MonitorSnapshot],
    stop: asyncio.Event | None = None,
) -> None:
    """Refresh until ``stop`` is set (SIGINT or SIGTERM when None).

    The signal sets an event instead of cancelling whatever runs: a refresh can take many
    seconds on a cluster with hundreds of consumer groups, and a watch was seen to outlive
    a SIGINT that came then (most likely the cancellation was lost inside the refresh).
    A refresh in flight when the signal comes is cancelled and given ``_STOP_GRACE``
    seconds to wind down; the watch ends either way.
    """
    from rich.live import Live

    from routing.broker.errors import BrokerError
    from routing.entrypoints.runtime import stop_on_signals
    from routing.observability.monitor.view import render_error

    if stop is None:
        stop = stop_on_signals()
    stopping = asyncio.ensure_future(stop.wait())
    last: MonitorSnapshot | None = None
    try:
        async with _with_ledger(monitor, cfg):
            with Live(render_error("connecting"), console=console, auto_refresh=False,
                      redirect_stderr=False) as live:
                while not stop.is_set():
                    sampling = asyncio.ensure_future(monitor.sample(counts=True))
                    await asyncio.wait({sampling, stopping}, return_when=asyncio.FIRST_COMPLETED)
                    if not sampling.done():
                        sampling.cancel()
                        await asyncio.wait({sampling}, timeout=_STOP_GRACE)
                        if sampling.done() and not sampling.cancelled():
                            sampling.exception()  # retrieved: it ended the refresh, not us
                        break
                    try:
                        last = narrow(sampling.result())
                        live.update(view(last, None), refresh=True)
                    except BrokerError as exc:
                        shown = (render_error(exc.message) if last is None
                                 else view(last, exc.message))
                        live.update(shown, refresh=True)
                    await asyncio.wait({stopping}, timeout=interval)
    finally:
        stopping.cancel()


def monitor(
    watch: Annotated[bool, typer.Option("--watch", help="Refresh live until Ctrl-C.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
    interval: Annotated[
        float,
        typer.Option(
            "--interval",
            min=0.0,
            help="Seconds between samples (the watch's refresh, and the rate window of a "
            "one-shot; 0: one sample, no rates).",
        ),
    ] = 2.0,
    full: Annotated[
        bool, typer.Option("--full", help="With --watch: every partition, not the summary.")
    ] = False,
    topic: Annotated[
        list[str] | None,
        typer.Option("--topic", help="Only this topic (repeatable; prefix optional)."),
    ] = None,
    group: Annotated[
        list[str] | None,
        typer.Option("--group", help="Only this consumer group, or role (repeatable)."),
    ] = None,
) -> None:
    """Show topics (end offsets, rates), consumer-group lag, held/invalid/dead letters."""
    from rich.console import Console

    from routing.observability.monitor.view import compact, only, render

    if watch and as_json:
        usage_error("--watch and --json cannot be combined")
    if watch and interval <= 0:
        usage_error("--watch needs an --interval above 0")
    cfg = settings()
    mon = _monitor(cfg)

    def narrow(snap: MonitorSnapshot) -> MonitorSnapshot:
        return only(snap, topic, group)

    if watch:
        view = render if full else compact
        with contextlib.suppress(KeyboardInterrupt):
            run(_watch(mon, cfg, interval, Console(), view, narrow))
        return
    snap = narrow(run(_once(mon, cfg, interval)))
    if as_json:
        print_json(snap.as_dict())
        return
    Console().print(render(snap))
