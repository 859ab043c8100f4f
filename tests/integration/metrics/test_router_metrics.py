"""The router's metrics, scraped over HTTP after routing through the session broker: our
routing counters, and faust's own sensor on the router's faust app."""

from __future__ import annotations

from pathlib import Path

from config.catalogue import default_catalogue
from config.settings import Settings
from events.topics import Topics
from routing.broker import EmbeddedBroker, ProducerParams, make_producer, read_topic
from routing.router import RouterTuning, create_router_app
from tests.eventually import eventually
from tests.unit.router.factories import make_iban, state, statement

from .scrape import moved, scrape

TUNING = RouterTuning(session_timeout=6.0, heartbeat_interval=0.5, rebalance_timeout=6.0)
BOUND = make_iban(2001)
PENDING = make_iban(2002)


async def count(bootstrap: str, topic: str) -> int:
    return len(await read_topic(bootstrap, topic))


async def test_routed_held_released_and_invalid_are_counted(
    kafka_broker: EmbeddedBroker, topics: Topics, tmp_path: Path, metrics_url: str
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    router = create_router_app(Settings(data_dir=tmp_path), topics, default_catalogue(),
                               bootstrap_servers=bootstrap, tuning=TUNING)
    producer = make_producer(ProducerParams(bootstrap))
    await producer.start()
    before = await scrape(metrics_url)
    try:
        await router.start()
        try:
            for iban, status in ((BOUND, "approved"), (PENDING, "pending")):
                await producer.send_and_wait(
                    topics.iban_state, state(iban, connector_id="acd", mandate_status=status),
                    key=iban.encode())
            def applied() -> bool:
                return all(router.tables.get_state(i) is not None for i in (BOUND, PENDING))

            await eventually(applied, "both states applied")
            await producer.send_and_wait(topics.received, statement("r-1", BOUND),
                                         key=BOUND.encode())
            await producer.send_and_wait(topics.received, statement("r-2", BOUND),
                                         key=BOUND.encode())
            await producer.send_and_wait(topics.received, statement("r-held", PENDING),
                                         key=PENDING.encode())
            await producer.send_and_wait(topics.received, b"\x00 not json", key=BOUND.encode())
            await eventually(lambda: count(bootstrap, topics.held), "the held statement")
            # The mandate is approved: the held statement is released to the partner.
            await producer.send_and_wait(
                topics.iban_state,
                state(PENDING, version=2, connector_id="acd", mandate_status="approved"),
                key=PENDING.encode())
            async def three() -> bool:
                return await count(bootstrap, topics.partner("acd")) >= 3

            await eventually(three, "3 partner records")
            await eventually(lambda: count(bootstrap, topics.invalid), "the invalid record")
            after = await scrape(metrics_url)
        finally:
            await router.stop()
    finally:
        await producer.stop()

    routed = "statement_router_routed_total"
    assert moved(before, after, routed, destination="partner", reason="bound",
                 connector="acd") == 3
    assert moved(before, after, routed, destination="held", reason="mandate_pending",
                 connector="") == 1
    assert moved(before, after, routed, destination="global-file", reason="unbound",
                 connector="") == 0
    assert moved(before, after, "statement_router_invalid_total", component="router") == 1
    # The Tables' changelog records, acknowledged: three IBAN states, and the held
    # statement's entry then its deletion at the release.
    written = "statement_router_table_changelog_records_total"
    assert moved(before, after, written, table="iban-state") == 3
    assert moved(before, after, written, table="held") == 2
    # faust's own sensor is attached to the router's app: its series are exported.
    assert "statement_router_faust_total_rebalances" in after.text
    assert not after.label_names() & {"iban", "statement_id", "cabinet_id"}
    assert BOUND not in after.text and PENDING not in after.text
