"""The adapter worker's metrics, scraped over HTTP after real deliveries to a real webhook
partner through the session broker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from events.topics import Topics
from routing.broker import EmbeddedBroker
from tests.eventually import eventually
from tests.integration.worker.conftest import (
    committed_total,
    produce,
    produce_raw,
    running,
    webhook,
)
from tests.integration.worker.receiver import Reply, WebhookReceiver
from tests.unit.delivery.factories import make_delivery

from .scrape import moved, scrape


async def test_attempts_deliveries_failures_dead_letters_and_latency(
    kafka_broker: EmbeddedBroker, topics: Topics, receiver: WebhookReceiver, metrics_url: str
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    acd = receiver.partner("acd")
    # One IBAN, so one partition: the partner sees the statements in this order.
    acd.script(Reply(503), Reply(200), Reply(400), Reply(200))
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    await produce(bootstrap, topics, "acd", [
        make_delivery("m-retried", received_at=an_hour_ago),   # 503, then delivered
        make_delivery("m-refused", received_at=an_hour_ago),   # 400: dead-lettered
        make_delivery("m-ok", received_at=an_hour_ago),        # delivered at once
    ])
    await produce_raw(bootstrap, topics.partner("acd"), b"{not a delivery", b"k")
    before = await scrape(metrics_url)

    async with running(kafka_broker, topics, {"acd": webhook(acd)}) as pool:
        await eventually(lambda: len(receiver.delivered("acd")) == 2, what="two deliveries")
        await eventually(lambda: committed_total(bootstrap, topics, "acd", 4), what="commits")
        await eventually(lambda: pool.stats["acd"].dead_lettered == 1, what="the dead letter")
        after = await scrape(metrics_url)

    acd_ = {"connector": "acd"}
    assert moved(before, after, "statement_router_delivery_attempts_total", **acd_) == 4
    assert moved(before, after, "statement_router_delivered_total", **acd_) == 2
    assert moved(before, after, "statement_router_delivery_failures_total",
                 connector="acd", kind="retry") == 1
    assert moved(before, after, "statement_router_delivery_failures_total",
                 connector="acd", kind="permanent") == 1
    assert moved(before, after, "statement_router_delivery_failures_total",
                 connector="acd", kind="disabled") == 0
    assert moved(before, after, "statement_router_dead_letters_total", **acd_) == 1
    assert moved(before, after, "statement_router_invalid_total", component="adapter") == 1
    assert after.value("statement_router_connector_disabled", **acd_) == 0
    assert moved(before, after, "statement_router_delivery_attempt_seconds_count", **acd_) == 4
    # Two deliveries, each measured from its received_at an hour ago: both are past the
    # 1800 s bucket, and together they add at least two hours.
    latency = "statement_router_delivery_latency_seconds"
    assert moved(before, after, f"{latency}_count", **acd_) == 2
    assert moved(before, after, f"{latency}_bucket", connector="acd", le="1800.0") == 0
    assert moved(before, after, f"{latency}_bucket", connector="acd", le="+Inf") == 2
    assert moved(before, after, f"{latency}_sum", **acd_) >= 2 * 3600
    # Nothing personal in the scrape: no IBAN, no statement id, no such label.
    assert not after.label_names() & {"iban", "statement_id", "cabinet_id"}
    assert "m-retried" not in after.text and make_delivery().iban not in after.text


async def test_a_410_shows_the_connector_disabled(
    kafka_broker: EmbeddedBroker, topics: Topics, receiver: WebhookReceiver, metrics_url: str
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    cegid = receiver.partner("cegid")
    cegid.script(Reply(410))
    await produce(bootstrap, topics, "cegid", [make_delivery("m-gone", connector_id="cegid")])
    before = await scrape(metrics_url)

    async with running(kafka_broker, topics, {"cegid": webhook(cegid)},
                       connector_ids=["cegid"]) as pool:
        await eventually(lambda: pool.stats["cegid"].disabled, what="the connector disabled")
        after = await scrape(metrics_url)

    assert after.value("statement_router_connector_disabled", connector="cegid") == 1
    assert moved(before, after, "statement_router_delivery_failures_total",
                 connector="cegid", kind="disabled") == 1
    assert moved(before, after, "statement_router_delivered_total", connector="cegid") == 0
    assert moved(before, after, "statement_router_dead_letters_total", connector="cegid") == 0
