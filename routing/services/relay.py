"""The outbox relay: publishes committed IBAN-state snapshots to ``iban.state``, in order.

Rows are read in commit order and marked published only after the broker acknowledged
them, so a crash between the two republishes rows rather than losing them; the router
ignores versions it already holds, so a republish is harmless. One relay at a time holds
the store's relay lock: two relays interleaving their batches could publish an older
snapshot after a newer one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Collection, Sequence
from typing import Any, Protocol

import structlog

from events.topics import Topics
from routing.domain.iban import mask_iban
from routing.observability import metrics
from routing.ports import Outbox, OutboxMessage
from routing.services.backoff import RetrySchedule

log = structlog.get_logger(__name__)


class Producer(Protocol):
    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> Any:
        ...


class StateRepublisher(Protocol):
    async def iban_versions(self) -> dict[str, int]: ...

    async def republish_states(self, wanted: Collection[str]) -> int: ...


async def republish_missing_states(
    store: StateRepublisher, bootstrap_servers: str, topics: Topics
) -> int:
    """Queue again every IBAN state the broker's ``iban.state`` lacks or holds an older
    version of; returns how many were queued.

    The store is the source of truth and ``iban.state`` a copy: a broker that lost its
    records (the embedded one after a crash, a wiped cluster) would otherwise route every
    statement of a registered, bound, active IBAN as unknown while ``diagnose``, which
    reads the store, says all is well.
    """
    from routing.broker import read_topic

    published: dict[str, int] = {}
    for record in await read_topic(bootstrap_servers, topics.iban_state, timeout=60.0):
        if record.key is None:
            continue
        key = record.key.decode("utf-8", errors="replace")
        if record.value is None:
            published.pop(key, None)
            continue
        try:
            version = int(json.loads(record.value)["version"])
        except (ValueError, KeyError, TypeError):
            continue
        published[key] = max(version, published.get(key, -1))
    stored = await store.iban_versions()
    missing = [iban for iban, version in stored.items() if published.get(iban, -1) < version]
    queued = await store.republish_states(missing)
    if queued:
        log.info("iban_states_republished", count=queued)
    return queued


class LeadershipLost(Exception):
    """This relay no longer holds the relay lock: stop publishing and try to take it again."""


class OutboxRelay:
    """Moves outbox rows to the broker; run one per deployment (others wait as standbys)."""

    def __init__(
        self,
        store: Outbox,
        producer: Producer,
        topics: Topics,
        *,
        batch_size: int = 500,
        idle_interval: float = 0.1,
        max_backoff: float = 10.0,
        backlog_interval: float = 5.0,
    ) -> None:
        self._store = store
        self._producer = producer
        self._topics = topics
        self._batch_size = batch_size
        self._idle = idle_interval
        # Retried for as long as it runs: only the schedule's delays are used, never its
        # attempt budget.
        self._retry = RetrySchedule(base_seconds=min(0.2, max_backoff), max_seconds=max_backoff)
        self._backlog_interval = backlog_interval
        self._backlog_due = 0.0
        self.published = 0

    def _topic(self, logical: str) -> str:
        if logical == "iban.state":
            return self._topics.iban_state
        raise ValueError(f"outbox row for unknown topic {logical!r}")

    async def publish_pending(self) -> int:
        """Publish one batch of pending rows; return how many were published."""
        rows = await self._store.pending_outbox(self._batch_size)
        if not rows:
            return 0
        await self._send_in_order(rows)
        await self._store.mark_published([row.id for row in rows])
        self.published += len(rows)
        metrics.OUTBOX_PUBLISHED.inc(len(rows))
        return len(rows)

    async def refresh_backlog(self) -> int:
        """Count the unpublished outbox rows into the ``outbox_backlog`` gauge."""
        count = await self._store.outbox_backlog()
        metrics.OUTBOX_BACKLOG.set(count)
        return count

    async def _backlog_if_due(self) -> None:
        """Refresh the backlog gauge at most every ``backlog_interval`` seconds (a COUNT
        per idle poll would double the relay's load on the database), leader or not: a
        backlog that grows while no relay leads is exactly what operators must see."""
        now = asyncio.get_running_loop().time()
        if now < self._backlog_due:
            return
        self._backlog_due = now + self._backlog_interval
        try:
            await self.refresh_backlog()
        except Exception as exc:  # the database is down: the relay's own loop reports it
            log.debug("outbox_backlog_unavailable", error=str(exc))

    async def _send_in_order(self, rows: Sequence[OutboxMessage]) -> None:
        # aiokafka keeps send order per partition, and a key always maps to one partition.
        pending = []
        for row in rows:
            value = None if row.value is None else json.dumps(row.value).encode()
            if row.value is not None:  # a snapshot names its cabinet and connector
                log.debug("iban_state_publishing", iban=mask_iban(row.key),
                          cabinet_id=row.value.get("cabinet_id"),
                          connector_id=row.value.get("connector_id"))
            pending.append(
                await self._producer.send(self._topic(row.topic), value=value, key=row.key.encode())
            )
        await asyncio.gather(*pending)
        log.debug("outbox_published", rows=len(rows), last_key=mask_iban(rows[-1].key))

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until ``stop`` is set, surviving broker and database outages."""
        failures = 0
        while not stop.is_set():
            try:
                async with self._store.relay_lock() as leader:
                    if not leader:
                        await self._backlog_if_due()
                        await _wait(stop, 1.0)
                        continue
                    log.info("relay_leader")
                    while not stop.is_set():
                        await self._backlog_if_due()
                        if not await self._store.relay_lock_held():
                            raise LeadershipLost("the relay lock was lost with its session")
                        if await self.publish_pending() == 0:
                            await _wait(stop, self._idle)
                        failures = 0
            except Exception as exc:
                failures += 1
                delay = self._retry.delay(failures)
                log.warning("relay_retrying", error=str(exc), retry_in=round(delay, 2))
                await _wait(stop, delay)


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
