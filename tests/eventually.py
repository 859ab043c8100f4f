"""The one way a test waits: poll a condition until it holds, or fail saying what it awaited.

Tests never sleep for a fixed time nor count event-loop ticks: brokers and processes here run
on a loaded two-core machine, so the only honest wait is "until this is true, within a bound".
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

DEFAULT_WITHIN = 60.0


async def eventually(
    check: Callable[[], T | Awaitable[T]],
    what: str,
    *,
    within: float = DEFAULT_WITHIN,
    interval: float = 0.05,
    done: Callable[[T], bool] = bool,
    guard: Callable[[], object] | None = None,
    explain: Callable[[], str] | None = None,
) -> T:
    """Call ``check`` (sync or async) until ``done(result)``; return that result.

    ``guard`` runs before each try and may raise, e.g. to fail at once when a child process
    died instead of waiting out the bound. On timeout the assertion names ``what`` and the
    last value seen, which is usually the fact that explains the failure, followed by
    ``explain()`` when given (the tail of a child process's log, say).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        if guard is not None:
            guard()
        value = check()
        if inspect.isawaitable(value):
            value = await value
        result: T = value  # type: ignore[assignment]
        if done(result):
            return result
        if loop.time() > deadline:
            message = f"timed out after {within:g} s waiting for {what}; last value: {result!r}"
            raise AssertionError(message if explain is None else f"{message}\n{explain()}")
        await asyncio.sleep(interval)
