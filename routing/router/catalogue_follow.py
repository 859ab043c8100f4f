"""The router follows the connectors file: a partner added to it is routed to without a
restart, once its topic exists.

Why the topic check: the router must never write to a partner topic that does not exist.
The broker would create it with its default partition count (``auto.create.topics``),
which breaks the co-partitioning by IBAN that per-IBAN order rests on. So a connector
that appears in the file joins the router's catalogue only once
``statements.partner.<id>`` exists with ``TOPIC_PARTITIONS`` partitions (the adapters
process creates it when it picks the connector up; ``statement-router topics create``
does too). Until then its statements are held (``connector_not_in_catalogue``) as
before, and nothing is lost. A connector removed from the file leaves the catalogue at
once: its next statements are held, not routed to a topic nobody reads.

Statements already held for a connector that joins are released at their IBAN's next
statement or state change (``RouterCore``'s rule), or by the start-up sweep.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from config.catalogue import Catalogue
from events.topics import Topics
from routing.broker import describe_topics
from routing.broker.errors import BrokerError
from routing.router.core import RouterCore

log = structlog.get_logger("routing.router.catalogue")

#: Seconds between two looks at the catalogue.
FOLLOW_INTERVAL = 2.0


async def sync_catalogue(
    core: RouterCore, catalogue: Catalogue, topics: Topics, bootstrap_servers: str
) -> bool:
    """Bring ``core.catalogue`` in line with the file; True when it changed."""
    wanted = set(catalogue)  # re-reads the file if it changed (refused if invalid)
    current = core.catalogue
    if wanted == current:
        return False
    added = wanted - current
    ready: set[str] = set()
    if added:
        names = {topics.partner(cid): cid for cid in added}
        try:
            counts = await describe_topics(bootstrap_servers, list(names))
        except BrokerError as exc:
            log.warning("catalogue_topics_unreadable", connectors=sorted(added), error=str(exc))
            counts = {}
        ready = {cid for name, cid in names.items() if counts.get(name) == topics.partitions}
    updated = frozenset((current & wanted) | ready)
    if updated == current:
        return False
    core.catalogue = updated
    core.forget_cached_states()  # decisions cached per IBAN depended on the old set
    log.info("router_catalogue_changed", added=sorted(ready), removed=sorted(current - wanted),
             waiting_for_topic=sorted(added - ready), connectors=sorted(updated))
    return True


async def follow_catalogue(
    core: RouterCore,
    catalogue: Catalogue,
    topics: Topics,
    bootstrap_servers: str,
    stop: asyncio.Event,
    *,
    interval: float = FOLLOW_INTERVAL,
) -> None:
    """``sync_catalogue`` every ``interval`` seconds until ``stop``; never raises (a
    failure is logged and the router keeps its catalogue)."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval):
                await stop.wait()
        if stop.is_set():
            return
        try:
            await sync_catalogue(core, catalogue, topics, bootstrap_servers)
        except Exception as exc:
            log.error("router_catalogue_sync_failed", error=repr(exc))
