"""Held statements, one Table record each, on the embedded broker (issue 12, item 2).

10,000 statements of one IBAN (about 14 MB in all) are held while its mandate is pending.
The test checks what a list per IBAN could not give: the other IBANs of the same
partition keep routing while they pile up; a router restarted in the middle (a new
worker that recovers the ``held`` Table from its changelog) loses none and holds none
twice; and the approval releases all 10,000 in their arrival order.
"""

from __future__ import annotations

import json
from pathlib import Path

from config.catalogue import default_catalogue
from config.settings import Settings
from events.topics import Topics
from routing.broker import EmbeddedBroker, ProducerParams, make_producer
from routing.broker.partitioner import default_partition
from routing.router import RouterApp, create_router_app
from tests.eventually import eventually
from tests.integration.router.test_router_broker import TUNING, read_until
from tests.unit.router.factories import make_iban, state, statement

HELD = 10_000
CONTENT = b"0" * 1_000  # a ~1.4 KB statement.received value


def router_for(broker: EmbeddedBroker, topics: Topics, data_dir: Path) -> RouterApp:
    return create_router_app(
        Settings(data_dir=data_dir),
        topics,
        default_catalogue(),
        bootstrap_servers=broker.bootstrap_servers,
        app_id=f"{topics.prefix}.router",
        tuning=TUNING,
    )


def held_count(router: RouterApp, iban: str) -> int:
    return len(router.tables.get_held(iban) or [])


async def test_ten_thousand_held_statements_survive_a_restart_and_release_in_order(
    kafka_broker: EmbeddedBroker, topics: Topics, tmp_path: Path
) -> None:
    pending = make_iban(7)
    partition = default_partition(pending.encode(), topics.partitions)
    neighbour = next(
        iban
        for iban in (make_iban(n) for n in range(8, 10_000))
        if default_partition(iban.encode(), topics.partitions) == partition
    )
    producer = make_producer(ProducerParams(kafka_broker.bootstrap_servers))
    await producer.start()
    router = router_for(kafka_broker, topics, tmp_path / "a")
    try:
        await producer.send(
            topics.iban_state,
            state(pending, connector_id="acd", mandate_status="pending"),
            key=pending.encode(),
        )
        await producer.send(
            topics.iban_state, state(neighbour, connector_id="acd"), key=neighbour.encode()
        )
        size = 0
        neighbours = []
        for n in range(HELD):
            value = statement(f"p{n:05d}", pending, content=CONTENT)
            size += len(value)
            await producer.send(topics.received, value, key=pending.encode())
            if n % 1_000 == 999:
                neighbours.append(f"q{n}")
                await producer.send(
                    topics.received, statement(f"q{n}", neighbour), key=neighbour.encode()
                )
        await producer.flush()
        assert size > 10_000_000

        await router.start()
        await eventually(lambda: held_count(router, pending) >= HELD // 10, "some held", within=180)
        await router.stop()  # the restart in the middle
        assert held_count(router, pending) < HELD
        router = router_for(kafka_broker, topics, tmp_path / "b")
        await router.start()
        await eventually(lambda: held_count(router, pending) == HELD, "all held", within=300)

        # The neighbour of the same partition was never blocked behind the held ones.
        routed = await read_until(
            kafka_broker.bootstrap_servers, topics.partner("acd"), len(neighbours)
        )
        assert [json.loads(r.value)["statement_id"] for r in routed] == neighbours

        await producer.send_and_wait(
            topics.iban_state,
            state(pending, version=2, connector_id="acd"),
            key=pending.encode(),
        )
        released = await read_until(
            kafka_broker.bootstrap_servers,
            topics.partner("acd"),
            len(neighbours) + HELD,
            within=300,
        )
        ids = [json.loads(r.value)["statement_id"] for r in released]
        assert [i for i in ids if i.startswith("p")] == [f"p{n:05d}" for n in range(HELD)]
        await eventually(lambda: held_count(router, pending) == 0, "held entries deleted")
        # One changelog record per held statement (and a tombstone each on release): none
        # grows with the number held.
        held_changelog = f"{topics.prefix}.router-held-changelog"
        biggest = max(
            len(r.value or b"")
            for r in await read_until(kafka_broker.bootstrap_servers, held_changelog, HELD)
        )
        assert biggest < 4_000
    finally:
        await router.stop()
        await producer.stop()
