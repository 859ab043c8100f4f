"""GET /ops/topics and /ops/lag through the real app, store and broker."""

from __future__ import annotations

import socket

from config.catalogue import default_catalogue
from events.topics import Topics
from routing.broker import EmbeddedBroker
from tests.integration.ops_api import Ops, bearer, operator_api

from .helpers import commit, dead_letters_on, produce_to_partitions, record_replay


def closed_port() -> str:
    """An address where nothing listens (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"127.0.0.1:{port}"


async def test_monitor_routes_refuse_anyone_but_the_operator(ops: Ops) -> None:
    for headers in ({}, bearer("sro_not-the-token"), ops.admin):
        for url in ("/ops/topics", "/ops/lag"):
            response = await ops.client.get(url, headers=headers)
            assert response.status_code == 401, (headers, url)
            assert response.json()["error"] == "unauthenticated"
            assert "topics" not in response.json() and "groups" not in response.json()


async def test_topics_and_lag_for_the_operator(
    ops: Ops, kafka_broker: EmbeddedBroker, topics: Topics
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    await produce_to_partitions(bootstrap, topics.partner("acd"), {0: 4, 2: 1})
    await commit(bootstrap, f"{topics.prefix}.adapter.acd", {(topics.partner("acd"), 0): 3})

    response = await ops.client.get("/ops/topics", headers=ops.operator)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["topic_prefix"] == topics.prefix
    by_topic = {t["topic"]: t for t in body["topics"]}
    acd = by_topic[topics.partner("acd")]
    assert [(p["partition"], p["end_offset"]) for p in acd["partitions"]] == [(0, 4), (1, 0),
                                                                              (2, 1)]
    assert acd["end_offset"] == 5 and acd["rate"] is None
    assert body["missing_topics"] == []
    assert body["invalid"] == 0
    assert body["held"]["available"] is False  # no router has run on these topics
    assert [c["connector_id"] for c in body["connectors"]] == list(default_catalogue())
    assert body["connectors"][0] == {"connector_id": "acd", "held": None, "dead_letters": 0,
                                     "dead_letters_open": 0, "worker": None,
                                     "worker_reason": None, "worker_since": None}

    lag = await ops.client.get("/ops/lag", headers=ops.operator)
    assert lag.status_code == 200, lag.text
    groups = {g["group"]: g for g in lag.json()["groups"]}
    adapter = groups[f"{topics.prefix}.adapter.acd"]
    assert (adapter["role"], adapter["connector_id"], adapter["lag"]) == ("adapter", "acd", 2)
    assert [(p["partition"], p["committed_offset"], p["lag"]) for p in adapter["partitions"]] == [
        (0, 3, 1), (1, None, 0), (2, None, 1)]


async def test_broker_down_answers_503_with_a_reason(
    topics: Topics, sqlite_url: str
) -> None:
    async with operator_api(closed_port(), topics, sqlite_url) as ops:
        for url in ("/ops/topics", "/ops/lag"):
            response = await ops.client.get(url, headers=ops.operator)
            assert response.status_code == 503, response.text
            body = response.json()
            assert body["error"] == "broker_unavailable"
            assert "cannot reach Kafka" in body["detail"] or "did not answer" in body["detail"]
        # Still operator-only while the broker is down.
        assert (await ops.client.get("/ops/lag", headers=ops.admin)).status_code == 401


async def test_open_dead_letters_come_from_the_ledger(
    ops: Ops, kafka_broker: EmbeddedBroker, topics: Topics, sqlite_url: str
) -> None:
    """Two dead letters on acd's DLQ, one replay recorded in the API's own ledger: the same
    JSON as ever, with one still open."""
    bootstrap = kafka_broker.bootstrap_servers
    places = await dead_letters_on(bootstrap, topics, "acd", 2)
    await record_replay(sqlite_url, topics, "acd", places[0])

    body = (await ops.client.get("/ops/topics", headers=ops.operator)).json()
    acd = next(c for c in body["connectors"] if c["connector_id"] == "acd")
    assert acd == {"connector_id": "acd", "held": None, "dead_letters": 2,
                   "dead_letters_open": 1, "worker": None, "worker_reason": None,
                   "worker_since": None}
