"""The outbox relay's metrics against both real stores and the session broker."""

from __future__ import annotations

import asyncio

from events.topics import Topics
from routing.broker import EmbeddedBroker, ProducerParams, make_producer
from routing.domain.model import MandateStatus
from routing.services.relay import OutboxRelay
from routing.store.sql import SqlStateStore
from tests.eventually import eventually

from .scrape import moved, scrape

IBANS = (
    "FR7630006000011234567890189",
    "FR7630004008250001234567886",
    "FR6010278060760001234F50152",
)


async def test_published_rows_and_the_backlog_gauge(
    store: SqlStateStore, topics: Topics, kafka_broker: EmbeddedBroker, metrics_url: str
) -> None:
    await store.create_cabinet("cab-m", "M")
    for iban in IBANS:
        await store.add_iban(iban, "cab-m", None)  # one outbox row each
    for iban in IBANS[:2]:
        await store.set_mandate(iban, MandateStatus.APPROVED)  # one more each
    assert await store.outbox_backlog() == 5

    producer = make_producer(ProducerParams(kafka_broker.bootstrap_servers))
    await producer.start()
    try:
        relay = OutboxRelay(store, producer, topics, batch_size=2, backlog_interval=0.05)
        before = await scrape(metrics_url)
        assert await relay.refresh_backlog() == 5
        assert (await scrape(metrics_url)).value("statement_router_outbox_backlog") == 5

        # The running relay publishes everything and keeps the gauge up to date itself.
        stop = asyncio.Event()
        task = asyncio.create_task(relay.run(stop))
        try:

            async def empty() -> bool:
                after = await scrape(metrics_url)
                return (after.value("statement_router_outbox_backlog") == 0
                        and await store.outbox_backlog() == 0)

            await eventually(empty, "the relay to report an empty backlog")
            after = await scrape(metrics_url)
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
    finally:
        await producer.stop()

    assert moved(before, after, "statement_router_outbox_published_total") == 5
    assert relay.published == 5
