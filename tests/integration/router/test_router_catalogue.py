"""The router follows the connectors file (issue 14 item 10): a partner added to it is
routed to once its topic exists, without a restart; the statements held for it meanwhile
are released first, in order. Real broker, real router (faust), a real file."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from config.catalogue import Catalogue
from config.settings import Settings
from events.topics import Topics
from routing.broker import EmbeddedBroker, ProducerParams, ensure_topics, make_producer
from routing.router import create_router_app
from routing.router.catalogue_follow import follow_catalogue
from tests.eventually import eventually
from tests.integration.router.test_router_broker import TUNING, Pipeline
from tests.unit.router.factories import make_iban

IBAN = make_iban(4242)
ACD = '[connectors.acd]\nadapter = "webhook"\n'
SAGE = '[connectors.sage]\nname = "Sage"\nadapter = "directory"\n'


def write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".new")
    tmp.write_text(text)
    tmp.replace(path)


async def test_a_partner_added_to_the_file_is_routed_to_once_its_topic_exists(
    kafka_broker: EmbeddedBroker, topics: Topics, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    path = tmp_path / "connectors.toml"
    write(path, ACD)
    live = Catalogue.from_file(path, check_interval=0)
    router = create_router_app(Settings(data_dir=tmp_path), topics, live,
                               bootstrap_servers=bootstrap, tuning=TUNING)
    producer = make_producer(ProducerParams(bootstrap))
    await producer.start()
    stop = asyncio.Event()
    follower: asyncio.Task[None] | None = None
    try:
        await router.start()
        follower = asyncio.create_task(follow_catalogue(
            router.core, live, topics, bootstrap, stop, interval=0.05))
        p = Pipeline(kafka_broker, topics, router, producer)
        await p.state_applied(IBAN, version=1, connector_id="sage")
        await p.statement("s1", IBAN)
        held = await p.records(topics.held, 1)
        assert json.loads(held[0].value)["routing"]["reason"] == "connector_not_in_catalogue"

        # In the file but without its topic: still held, never written to a missing topic.
        write(path, ACD + SAGE)
        await p.statement("s2", IBAN)
        await p.records(topics.held, 2)
        assert router.core.catalogue == {"acd"}

        await ensure_topics(bootstrap, [s for s in topics.specs(["sage"])
                                        if s.name in {topics.partner("sage"),
                                                      topics.partner_dlq("sage")}])
        await eventually(lambda: "sage" in router.core.catalogue, "the router to take sage")
        await p.statement("s3", IBAN)
        assert await p.ids(topics.partner("sage"), 3) == ["s1", "s2", "s3"]

        # Removed from the file: held again, not routed to a topic nobody reads.
        write(path, ACD)
        await eventually(lambda: "sage" not in router.core.catalogue, "sage removed")
        await p.statement("s4", IBAN)
        held = await p.records(topics.held, 3)
        last = json.loads(held[-1].value)
        assert last["statement_id"] == "s4"
        assert last["routing"]["reason"] == "connector_not_in_catalogue"
    finally:
        stop.set()
        if follower is not None:
            await follower
        await router.stop()
        await producer.stop()
