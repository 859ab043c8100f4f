"""Process-level plumbing shared by the long-running commands: stop on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

from config.settings import Settings


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM, so every role shuts down the same clean way."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def until_signalled(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    await main(stop_on_signals())


def require_bootstrap(settings: Settings) -> str:
    """The configured Kafka, for roles that never start the embedded broker themselves."""
    from routing.domain.errors import DomainError

    if not settings.kafka_bootstrap_servers:
        raise DomainError(
            "KAFKA_BOOTSTRAP_SERVERS is not set: run `statement-router up` for the embedded "
            "broker, or point this role at a running Kafka"
        )
    return settings.kafka_bootstrap_servers
