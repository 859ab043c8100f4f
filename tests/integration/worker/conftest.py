"""Fixtures of the adapter worker tests: a real webhook partner, producers, a running pool.

Everything is real: the session's embedded broker, an aiohttp receiver verifying Standard
Webhooks signatures, directory drops in the test's temporary directory. Schedules are
short (tens of milliseconds) so retries and dead letters take well under a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import SecretStr

from adapters.delivery import PartnerEndpoint, WebhookEndpoint
from adapters.worker import ConnectorStats, run_adapters
from config.settings import Settings
from events.schemas import StatementPartnerDelivery
from events.topics import Topics
from routing.broker import EmbeddedBroker, ProducerParams, make_producer, read_topic
from routing.entrypoints.bootstrap import run_adapters_role
from routing.services.backoff import RetrySchedule
from tests.eventually import eventually

from .receiver import Partner

SHORT = RetrySchedule(base_seconds=0.02, max_seconds=0.2, max_attempts=4)


def webhook(partner: Partner) -> WebhookEndpoint:
    return WebhookEndpoint(url=partner.url, secrets=(SecretStr(partner.secret),))


async def produce(
    bootstrap: str,
    topics: Topics,
    connector_id: str,
    deliveries: Iterable[StatementPartnerDelivery],
) -> None:
    """Publish deliveries to the connector's topic, keyed by IBAN, in the given order."""
    producer = make_producer(ProducerParams(bootstrap))
    await producer.start()
    try:
        futures = [
            await producer.send(topics.partner(connector_id), d.to_json(), key=d.iban.encode())
            for d in deliveries
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def produce_raw(bootstrap: str, topic: str, value: bytes, key: bytes) -> None:
    producer = make_producer(ProducerParams(bootstrap))
    await producer.start()
    try:
        await (await producer.send(topic, value, key=key))
    finally:
        await producer.stop()


async def outcomes(bootstrap: str, topics: Topics) -> list[dict[str, Any]]:
    """Every outcome, in the order of the records of each partition."""
    return [json.loads(r.value) for r in await read_topic(bootstrap, topics.outcomes)]


async def dead_letters(bootstrap: str, topics: Topics, connector_id: str) -> list[dict[str, Any]]:
    records = await read_topic(bootstrap, topics.partner_dlq(connector_id))
    return [json.loads(r.value) for r in records]


async def committed(bootstrap: str, topics: Topics, connector_id: str) -> dict[int, int]:
    """The connector group's committed offset per partition (absent: nothing committed).

    Asked through a consumer of the group that never subscribes (so it never joins the
    group or disturbs the running worker): aiokafka's admin client cannot decode Tansu's
    OffsetFetch answer.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                group_id=topics.group("adapter", connector_id))
    await consumer.start()
    try:
        found = {}
        for partition in range(topics.partitions):
            offset = await consumer.committed(TopicPartition(topics.partner(connector_id),
                                                             partition))
            if offset is not None and offset >= 0:
                found[partition] = offset
        return found
    finally:
        await consumer.stop()


async def committed_total(bootstrap: str, topics: Topics, connector_id: str, n: int) -> bool:
    return sum((await committed(bootstrap, topics, connector_id)).values()) >= n


@dataclass
class Pool:
    stats: dict[str, ConnectorStats]
    task: asyncio.Task[dict[str, ConnectorStats]]
    stop: asyncio.Event


@contextlib.asynccontextmanager
async def running(
    kafka_broker: EmbeddedBroker,
    topics: Topics,
    endpoints: Mapping[str, PartnerEndpoint],
    *,
    schedule: RetrySchedule = SHORT,
    connector_ids: list[str] | None = None,
    settings: Settings | None = None,
) -> AsyncIterator[Pool]:
    """``run_adapters`` in a task for the block; stopped (and its errors raised) on exit."""
    stop = asyncio.Event()
    started = asyncio.Event()
    stats: dict[str, ConnectorStats] = {}
    settings, bootstrap = settings or Settings(), kafka_broker.bootstrap_servers
    task = asyncio.create_task(run_adapters_role(settings, bootstrap, lambda producer: run_adapters(
        settings, topics, endpoints, stop, producer=producer, bootstrap_servers=bootstrap,
        connector_ids=connector_ids, schedule=schedule, stats=stats, started=started,
        session_timeout_ms=2_000)))
    pool = Pool(stats, task, stop)
    try:
        await eventually(lambda: started.is_set() or task.done(), "the adapters to start",
                         within=30)
        if task.done():
            await task
        yield pool
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
