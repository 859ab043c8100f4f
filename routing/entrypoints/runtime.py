"""Process-level plumbing shared by the long-running commands: signals, the collector."""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import Awaitable, Callable

# Generation 0 is collected every 100,000 net allocations instead of 700, and the older
# generations after 20 collections of the younger one instead of 10.
GC_THRESHOLDS = (100_000, 20, 20)


def tune_gc() -> None:
    """Collect cyclic garbage rarely: a throughput setting for the pipeline's processes.

    A router routes a batch of 2,000 statements at a time and each batch allocates tens
    of thousands of short-lived objects that are still referenced while the batch's
    sends are acknowledged. At Python's default thresholds they survived into the old
    generations, and full collections then walked the Tables' long-lived objects again
    and again: with the collector off, the router benchmark ran 34 % faster (16,604
    against 12,417 statements/s). At these thresholds the batch's objects are freed by
    reference counting before a collection sees them, which gave 16,331/s, while cyclic
    garbage is still collected. The cost is a little more memory between collections.
    The router also freezes what it holds once its Tables are loaded (``BatchPump``).
    """
    gc.set_threshold(*GC_THRESHOLDS)


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM, so every role shuts down the same clean way."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def until_signalled(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    await main(stop_on_signals())
