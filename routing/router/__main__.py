"""``python -m routing.router``: one router worker, configured from the environment.

The same as ``statement-router router`` without the CLI: reads :class:`Settings` (so
``KAFKA_BOOTSTRAP_SERVERS``, ``TOPIC_PREFIX``, ``TOPIC_PARTITIONS``, ``TABLE_STORE``,
``DATA_DIR``), serves the default connector catalogue, and stops cleanly on SIGTERM or
SIGINT (finishing and committing the batch in flight). Used by the crash test, which
needs the router as a separate process it can SIGKILL.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import structlog

from config.catalogue import default_catalogue
from config.settings import get_settings
from events.topics import Topics
from routing.metrics import metrics_endpoint
from routing.router.app import RouterCrashed, run_router

log = structlog.get_logger("routing.router")


async def _main() -> int:
    settings = get_settings()
    topics = Topics(settings.topic_prefix, settings.topic_partitions)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with metrics_endpoint(settings):  # METRICS_PORT, as `statement-router router`
            stats = await run_router(settings, topics, default_catalogue(), stop)
    except RouterCrashed as exc:
        log.error("router_crashed", error=str(exc))
        return 1
    log.info("router_stopped", **stats)
    return 0


def main() -> None:
    sys.exit(asyncio.run(_main()))


if __name__ == "__main__":
    main()
