"""The adapter worker against the session broker and a real webhook partner (DESIGN §3, §5)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from structlog.testing import capture_logs

from adapters.delivery import DirectoryEndpoint
from adapters.delivery.naming import delivery_file_name
from adapters.dlq import list_dead_letters, replay_dead_letters
from config.settings import Settings
from events.topics import Topics
from routing.broker import EmbeddedBroker, read_topic
from routing.services.backoff import RetrySchedule
from tests.eventually import eventually
from tests.fixtures.broker import TopicsFactory
from tests.unit.delivery.factories import make_delivery
from tests.unit.router.factories import make_iban

from .conftest import (
    SHORT,
    committed,
    committed_total,
    dead_letters,
    outcomes,
    produce,
    produce_raw,
    running,
    webhook,
)
from .receiver import Partner, Reply, WebhookReceiver


def kinds(found: list[dict[str, object]], statement_id: str) -> list[tuple[object, object]]:
    return [(o["outcome"], o["attempt"]) for o in found if o["statement_id"] == statement_id]


async def test_a_delivered_statement_is_committed_with_a_delivered_outcome(
    kafka_broker: EmbeddedBroker, topics: Topics, receiver: WebhookReceiver
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    acd = receiver.partner("acd")
    delivery = make_delivery("st-ok-1", connector_id="acd")
    await produce(bootstrap, topics, "acd", [delivery])

    async with running(kafka_broker, topics, {"acd": webhook(acd)}) as pool:
        await eventually(lambda: receiver.delivered("acd"), what="the delivery")
        await eventually(lambda: committed(bootstrap, topics, "acd"), what="the commit")
        assert pool.stats["acd"].delivered == 1

    [hit] = receiver.of("acd")
    assert hit.verified and hit.webhook_statement == "st-ok-1"
    assert sum((await committed(bootstrap, topics, "acd")).values()) == 1
    found = await outcomes(bootstrap, topics)
    assert kinds(found, "st-ok-1") == [("delivered", 1)]
    [outcome] = found
    assert (outcome["connector_id"], outcome["cabinet_id"]) == ("acd", "cab-1")


async def test_a_5xx_is_retried_with_backoff_and_delivered_once(
    kafka_broker: EmbeddedBroker, topics: Topics, receiver: WebhookReceiver
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    acd = receiver.partner("acd")
    acd.script(Reply(500))
    await produce(bootstrap, topics, "acd", [make_delivery("st-retry-1")])

    async with running(kafka_broker, topics, {"acd": webhook(acd)}) as pool:
        await eventually(lambda: receiver.delivered("acd"), what="the delivery")
        await eventually(lambda: committed(bootstrap, topics, "acd"), what="the commit")
        assert (pool.stats["acd"].retries, pool.stats["acd"].delivered) == (1, 1)

    assert [h.status for h in receiver.of("acd")] == [500, 200]
    assert {h.webhook_statement for h in receiver.of("acd")} == {"st-retry-1"}
    assert kinds(await outcomes(bootstrap, topics), "st-retry-1") == [
        ("retrying", 1),
        ("delivered", 2),
    ]


async def test_retry_after_is_honoured(
    kafka_broker: EmbeddedBroker, topics: Topics, receiver: WebhookReceiver
) -> None:
    acd = receiver.partner("acd")
    acd.script(Reply(429, {"Retry-After": "1"}))
    await produce(kafka_broker.bootstrap_servers, topics, "acd", [make_delivery("st-429")])

    # The schedule's own backoff (≤ 0.2 s here) is far shorter than the partner's 1 s.
    async with running(
        kafka_broker, topics, {"acd": webhook(acd)}, schedule=RetrySchedule(0.02, 5.0, 4)
    ):
        await eventually(lambda: receiver.delivered("acd"), what="the delivery")

    first, second = receiver.of("acd")
    assert (first.status, second.status) == (429, 200)
    assert second.at - first.at >= 1.0


async def test_a_4xx_is_dead_lettered_at_once_with_its_attempt(
    kafka_broker: EmbeddedBroker, topics: Topics, receiver: WebhookReceiver
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    acd = receiver.partner("acd")
    acd.script(Reply(400))
    await produce(bootstrap, topics, "acd", [make_delivery("st-bad"), make_delivery("st-next")])

    async with running(kafka_broker, topics, {"acd": webhook(acd)}) as pool:
        await eventually(lambda: receiver.delivered("acd"), what="the next statement")
        await eventually(lambda: committed_total(bootstrap, topics, "acd", 2), what="commits")
        await eventually(lambda: pool.stats["acd"].dead_lettered == 1, "the dead letter")

    [letter] = await dead_letters(bootstrap, topics, "acd")
    assert letter["schema"] == "statement.dead-letter/v1"
    assert letter["statement_id"] == "st-bad"
    assert letter["reason"].startswith("permanent failure: partner refused the statement")
    [attempt] = letter["attempts"]
    assert (attempt["attempt"], attempt["status_code"]) == (1, 400)
    assert letter["delivery"] == json.loads(make_delivery("st-bad").to_json())
    assert [h.status for h in receiver.of("acd")] == [400, 200]
    found = await outcomes(bootstrap, topics)
    assert kinds(found, "st-bad") == [("dead_lettered", 1)]
    assert sum((await committed(bootstrap, topics, "acd")).values()) == 2


async def test_exhausted_retries_are_dead_lettered_with_every_attempt(
    kafka_broker: EmbeddedBroker, topics: Topics, receiver: WebhookReceiver
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    acd = receiver.partner("acd")
    acd.default = Reply(503)
    await produce(bootstrap, topics, "acd", [make_delivery("st-down")])

    async with running(kafka_broker, topics, {"acd": webhook(acd)}) as pool:
        await eventually(lambda: pool.stats["acd"].dead_lettered == 1, what="the dead letter")
        await eventually(lambda: committed(bootstrap, topics, "acd"), what="the commit")

    [letter] = await dead_letters(bootstrap, topics, "acd")
    assert [a["attempt"] for a in letter["attempts"]] == [1, 2, 3, 4]
    assert {a["status_code"] for a in letter["attempts"]} == {503}
    assert all(a["error"].startswith("partner answered HTTP 503") for a in letter["attempts"])
    assert letter["reason"].startswith("gave up after 4 attempts")
    assert len(receiver.of("acd")) == SHORT.max_attempts
    assert kinds(await outcomes(bootstrap, topics), "st-down") == [
        ("retrying", 1),
        ("retrying", 2),
        ("retrying", 3),
        ("dead_lettered", 4),
    ]


async def test_410_disables_the_connector_and_commits_nothing_past_it(
    kafka_broker: EmbeddedBroker, make_topics: TopicsFactory, receiver: WebhookReceiver
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    topics = await make_topics(partitions=1)
    acd = receiver.partner("acd")
    acd.script(Reply(200), Reply(410))
    iban = make_iban(7)
    await produce(bootstrap, topics, "acd", [make_delivery(f"st-{n}", iban=iban) for n in range(4)])

    with capture_logs() as logs:
        async with running(kafka_broker, topics, {"acd": webhook(acd)}) as pool:
            await eventually(lambda: pool.stats["acd"].disabled, what="the connector disabled")
            await eventually(lambda: committed(bootstrap, topics, "acd"), what="the commit")
            stats = pool.stats["acd"].as_dict()

    assert stats["disabled"] and "HTTP 410" in str(stats["disabled_reason"])
    assert [h.statement_id for h in receiver.of("acd")] == ["st-0", "st-1"]
    assert await committed(bootstrap, topics, "acd") == {0: 1}  # st-1 (offset 1) not committed
    assert await dead_letters(bootstrap, topics, "acd") == []
    [alert] = [e for e in logs if e["event"] == "connector_disabled"]
    assert alert["log_level"] == "error" and alert["statement_id"] == "st-1"
    assert iban not in str(alert)


async def test_per_iban_order_is_kept_under_retries(
    kafka_broker: EmbeddedBroker, topics: Topics, receiver: WebhookReceiver
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    acd = receiver.partner("acd")
    acd.script(Reply(503), Reply(503))  # the very first request fails twice
    ibans = [make_iban(100 + i) for i in range(4)]
    sent = [make_delivery(f"st-{i:03d}", iban=ibans[i % 4]) for i in range(40)]
    await produce(bootstrap, topics, "acd", sent)

    async with running(kafka_broker, topics, {"acd": webhook(acd)}):
        await eventually(lambda: len(receiver.delivered("acd")) >= 40, what="all deliveries")

    for iban in ibans:
        expected = [d.statement_id for d in sent if d.iban == iban]
        got = [h.statement_id for h in receiver.delivered("acd") if h.iban == iban]
        assert got == expected


async def test_a_replayed_dead_letter_is_delivered_with_the_same_webhook_id_once(
    kafka_broker: EmbeddedBroker, topics: Topics, receiver: WebhookReceiver
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    acd = receiver.partner("acd")
    acd.script(Reply(422))
    await produce(bootstrap, topics, "acd", [make_delivery("st-replay")])

    async with running(kafka_broker, topics, {"acd": webhook(acd)}) as pool:
        await eventually(lambda: pool.stats["acd"].dead_lettered == 1, what="the dead letter")
        [entry] = await list_dead_letters(bootstrap, topics, "acd")
        assert entry.open and entry.summary()["attempts"] == 1
        report = await replay_dead_letters(bootstrap, topics, "acd", statement_ids=None)
        assert report.replayed == ["st-replay"]
        again = await replay_dead_letters(bootstrap, topics, "acd", statement_ids=None)
        assert again.replayed == []  # the second replay finds nothing open
        await eventually(lambda: receiver.delivered("acd"), what="the replayed delivery")

    assert [(h.webhook_statement, h.status) for h in receiver.of("acd")] == [
        ("st-replay", 422),
        ("st-replay", 200),
    ]
    [entry] = await list_dead_letters(bootstrap, topics, "acd")
    assert not entry.open
    # The replay publishes the deliveries first and its "replayed" markers only once they
    # are acked (so a failed replay leaves the dead letter open), so a fast worker may
    # record "delivered" before "replayed": seen on Kafka, which acks sooner than Tansu.
    first, *rest = kinds(await outcomes(bootstrap, topics), "st-replay")
    assert first == ("dead_lettered", 1)
    assert sorted(rest, key=str) == [("delivered", 1), ("replayed", None)]


async def test_a_down_partner_delays_only_its_own_connector(
    kafka_broker: EmbeddedBroker, topics: Topics, receiver: WebhookReceiver
) -> None:
    """Outage and isolation: acd answers 503 for a while; pennylane's statements flow.

    Asserted on the partner-side request log: every pennylane delivery completes while acd
    is still failing (before acd's first success), and acd gets all of its statements once
    it recovers. The schedule allows enough attempts that nothing is dead-lettered.
    """
    bootstrap = kafka_broker.bootstrap_servers
    acd, penny = receiver.partner("acd"), receiver.partner("pennylane")
    acd.default = Reply(503)
    a_sent = [
        make_delivery(f"a-{i}", connector_id="acd", iban=make_iban(200 + i)) for i in range(12)
    ]
    b_sent = [
        make_delivery(f"b-{i}", connector_id="pennylane", iban=make_iban(300 + i))
        for i in range(30)
    ]
    await produce(bootstrap, topics, "acd", a_sent)
    await produce(bootstrap, topics, "pennylane", b_sent)

    patient = RetrySchedule(base_seconds=0.02, max_seconds=0.1, max_attempts=1000)
    endpoints = {"acd": webhook(acd), "pennylane": webhook(penny)}
    async with running(kafka_broker, topics, endpoints, schedule=patient) as pool:
        await eventually(lambda: len(receiver.delivered("pennylane")) == 30, what="pennylane")
        failing_while_b_done = len(receiver.of("acd"))
        await eventually(
            lambda: len(receiver.of("acd")) > failing_while_b_done + 3, what="acd still failing"
        )
        acd.default = Reply(200)  # the partner recovers
        await eventually(
            lambda: (
                {h.statement_id for h in receiver.delivered("acd")}
                == {d.statement_id for d in a_sent}
            ),
            what="acd after recovery",
        )
        assert pool.stats["acd"].dead_lettered == 0

    first_a_success = min(h.seq for h in receiver.delivered("acd"))
    last_b = max(h.seq for h in receiver.delivered("pennylane"))
    assert last_b < first_a_success
    assert any(h.status == 503 for h in receiver.of("acd") if h.seq > last_b)
    print(
        f"outage: acd failed {sum(h.status == 503 for h in receiver.of('acd'))} requests; "
        f"pennylane delivered {len(receiver.delivered('pennylane'))} meanwhile"
    )


async def test_a_directory_drop_connector_writes_each_statement_once(
    kafka_broker: EmbeddedBroker, topics: Topics, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    drop = tmp_path / "quadra"
    drop.mkdir()
    sent = [
        make_delivery(f"q-{i}", connector_id="quadra", iban=make_iban(400 + i)) for i in range(10)
    ]
    await produce(bootstrap, topics, "quadra", [*sent, sent[0]])  # one redelivery

    async with running(kafka_broker, topics, {"quadra": DirectoryEndpoint(drop)}) as pool:
        await eventually(lambda: pool.stats["quadra"].delivered == 11, what="the drops")

    assert sorted(p.name for p in drop.iterdir()) == sorted(delivery_file_name(d) for d in sent)


async def test_a_malformed_record_goes_to_invalid_and_is_committed(
    kafka_broker: EmbeddedBroker, topics: Topics, receiver: WebhookReceiver
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    acd = receiver.partner("acd")
    await produce_raw(
        bootstrap, topics.partner("acd"), b'{"statement_id": "st-broken"}', make_iban(1).encode()
    )

    async with running(kafka_broker, topics, {"acd": webhook(acd)}) as pool:
        await eventually(lambda: pool.stats["acd"].invalid == 1, what="the invalid record")
        await eventually(lambda: committed(bootstrap, topics, "acd"), what="the commit")

    [record] = await read_topic(bootstrap, topics.invalid)
    invalid = json.loads(record.value)
    assert invalid["statement_id"] == "st-broken"
    assert invalid["detected_by"] == "adapter:acd"
    assert invalid["reason"].startswith("not a valid statement.partner-delivery/v1")
    assert receiver.hits == []


async def _gated_partition(
    kafka_broker: EmbeddedBroker, make_topics: TopicsFactory, receiver: WebhookReceiver
) -> tuple[Topics, Partner, asyncio.Event, list[str]]:
    """One partition holding W0, then A1, B1, B2, B3, A2 (two IBANs), A1's answer held back.

    W0 (a third IBAN) is there because a partition's first record after a start is
    delivered alone (its crash count must name it, ``adapters.worker``)."""
    topics = await make_topics(partitions=1)
    acd = receiver.partner("acd")
    gate = asyncio.Event()
    w, a, b = make_iban(200), make_iban(201), make_iban(202)
    acd.script_for(a, Reply(200, gate=gate))
    order = [("W0", w), ("A1", a), ("B1", b), ("B2", b), ("B3", b), ("A2", a)]
    await produce(kafka_broker.bootstrap_servers, topics, "acd",
                  [make_delivery(sid, iban=iban) for sid, iban in order])
    return topics, acd, gate, [sid for sid, _ in order]


def answered(receiver: WebhookReceiver) -> list[str]:
    """Statement ids in the order the partner answered them."""
    return [h.statement_id for h in receiver.answered]


async def test_a_slow_answer_holds_back_its_own_iban_only(
    kafka_broker: EmbeddedBroker, make_topics: TopicsFactory, receiver: WebhookReceiver
) -> None:
    """While A1's answer is pending, B's statements of the same partition are delivered
    (in their order); A2 waits for A1; the commit stays before A1 until it is done."""
    bootstrap = kafka_broker.bootstrap_servers
    topics, acd, gate, _ = await _gated_partition(kafka_broker, make_topics, receiver)

    async with running(kafka_broker, topics, {"acd": webhook(acd)}):
        await eventually(lambda: answered(receiver) == ["W0", "B1", "B2", "B3"],
                         what="B's statements answered while A1 waits")
        assert [h.statement_id for h in receiver.hits] == ["W0", "A1", "B1", "B2", "B3"]
        # Nothing is committed past A1 (offset 1) while it is not done.
        assert (await committed(bootstrap, topics, "acd")).get(0, 0) <= 1
        gate.set()
        await eventually(lambda: committed_total(bootstrap, topics, "acd", 6), what="the commit")

    assert answered(receiver) == ["W0", "B1", "B2", "B3", "A1", "A2"]
    assert await committed(bootstrap, topics, "acd") == {0: 6}


async def test_one_in_flight_per_partition_delivers_the_partition_in_order(
    kafka_broker: EmbeddedBroker, make_topics: TopicsFactory, receiver: WebhookReceiver
) -> None:
    """ADAPTER_IN_FLIGHT_PER_PARTITION=1: nothing after A1 is sent before A1 is answered."""
    bootstrap = kafka_broker.bootstrap_servers
    topics, acd, gate, order = await _gated_partition(kafka_broker, make_topics, receiver)

    settings = Settings(adapter_in_flight_per_partition=1)
    async with running(kafka_broker, topics, {"acd": webhook(acd)}, settings=settings):
        await eventually(lambda: len(receiver.hits) >= 2, what="A1 sent")
        gate.set()
        await eventually(lambda: committed_total(bootstrap, topics, "acd", 6), what="the commit")

    assert answered(receiver) == order
    assert receiver.max_in_flight == 1


async def test_a_partition_has_at_most_its_in_flight_deliveries_at_once(
    kafka_broker: EmbeddedBroker, make_topics: TopicsFactory, receiver: WebhookReceiver
) -> None:
    """Ten IBANs in one partition, every answer held (but the first record's, delivered
    alone after the start): four requests arrive (the default), then, once answered, the
    rest; each IBAN's statements in order."""
    bootstrap = kafka_broker.bootstrap_servers
    topics = await make_topics(partitions=1)
    acd = receiver.partner("acd")
    gate = asyncio.Event()
    acd.default = Reply(200, gate=gate)
    first = make_iban(299)
    acd.script_for(first, Reply(200))
    ibans = [make_iban(300 + i) for i in range(10)]
    sent = [make_delivery("st-first", iban=first)]
    sent += [make_delivery(f"st-{n:02d}", iban=ibans[n % 10]) for n in range(30)]
    await produce(bootstrap, topics, "acd", sent)

    async with running(kafka_broker, topics, {"acd": webhook(acd)}):
        await eventually(lambda: len(receiver.hits) >= 5, what="the first requests")
        assert receiver.max_in_flight == Settings().adapter_in_flight_per_partition == 4
        gate.set()
        await eventually(lambda: committed_total(bootstrap, topics, "acd", 31), what="the commit")

    assert receiver.max_in_flight == 4
    for iban in ibans:
        expected = [d.statement_id for d in sent if d.iban == iban]
        assert [h.statement_id for h in receiver.delivered("acd") if h.iban == iban] == expected
