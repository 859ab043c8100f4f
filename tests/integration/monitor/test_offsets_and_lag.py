"""End offsets, rates, committed offsets and lag, as the monitor reads them from the broker."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from config.catalogue import Catalogue, default_catalogue
from events.topics import Topics
from routing.broker import EmbeddedBroker
from routing.observability.monitor.model import GroupStatus, MonitorSnapshot, TopicStatus
from routing.observability.monitor.sampler import Monitor
from tests.fixtures.broker import unique_prefix

from .helpers import commit, produce_to_partitions


def topic(snap: MonitorSnapshot, name: str) -> TopicStatus:
    [found] = [t for t in snap.topics if t.topic == name]
    return found


def group(snap: MonitorSnapshot, group_id: str) -> GroupStatus:
    [found] = [g for g in snap.groups if g.group_id == group_id]
    return found


def rows(g: GroupStatus) -> list[tuple[str, int, int | None, int, int]]:
    return [(p.topic, p.partition, p.committed_offset, p.end_offset, p.lag) for p in g.partitions]


async def test_end_offsets_committed_offsets_and_lag_per_group(
    kafka_broker: EmbeddedBroker, topics: Topics, unique_group: Callable[..., str]
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    await produce_to_partitions(bootstrap, topics.received, {0: 5, 1: 3})
    await produce_to_partitions(bootstrap, topics.outcomes, {1: 4})
    router_group = f"{topics.prefix}.router"
    await commit(bootstrap, router_group, {(topics.received, 0): 2, (topics.received, 1): 3})
    other = unique_group("ops-tool")
    await commit(bootstrap, other, {(topics.outcomes, 1): 1})

    monitor = Monitor(bootstrap, topics, default_catalogue())
    snap = await monitor.sample(counts=False)

    received = topic(snap, topics.received)
    assert [(p.partition, p.start_offset, p.end_offset) for p in received.partitions] == [
        (0, 0, 5), (1, 0, 3), (2, 0, 0)]
    assert (received.end_offset, received.records) == (8, 8)
    assert topic(snap, topics.outcomes).end_offset == 4
    assert snap.missing_topics == ()
    assert received.rate is None and snap.rate_window is None  # one sample: no rate

    router = group(snap, router_group)
    assert router.role == "router" and router.committed
    assert rows(router) == [
        (topics.iban_state, 0, None, 0, 0),
        (topics.iban_state, 1, None, 0, 0),
        (topics.iban_state, 2, None, 0, 0),
        (topics.received, 0, 2, 5, 3),
        (topics.received, 1, 3, 3, 0),
        (topics.received, 2, None, 0, 0),
    ]
    assert router.lag == 3

    # A group outside the pipeline shows only the partitions it committed.
    tool = group(snap, other)
    assert tool.role == "other"
    assert rows(tool) == [(topics.outcomes, 1, 1, 4, 3)]

    # The pipeline's groups that never ran are listed, reading from the log start.
    ledger = group(snap, f"{topics.prefix}.ledger")
    assert not ledger.committed
    assert ledger.lag == 4
    acd = group(snap, f"{topics.prefix}.adapter.acd")
    assert (acd.role, acd.connector_id, acd.lag) == ("adapter", "acd", 0)
    assert [g.group_id for g in snap.groups][:1] == [router_group]

    lag_doc = snap.lag_dict()
    assert lag_doc["total_lag"] == sum(g.lag for g in snap.groups) == 3 + 3 + 4
    by_group = {g["group"]: g for g in lag_doc["groups"]}
    assert by_group[router_group]["partitions"][3] == {
        "topic": topics.received, "partition": 0, "committed_offset": 2, "end_offset": 5,
        "lag": 3}


async def test_rates_come_from_two_samples(kafka_broker: EmbeddedBroker, topics: Topics) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    monitor = Monitor(bootstrap, topics, default_catalogue())
    await produce_to_partitions(bootstrap, topics.received, {0: 2})
    first = await monitor.sample(counts=False)
    assert topic(first, topics.received).partitions[0].rate is None

    await produce_to_partitions(bootstrap, topics.received, {0: 6, 2: 3})
    second = await monitor.sample(counts=False)
    window = second.rate_window
    assert window is not None and window > 0
    parts = topic(second, topics.received).partitions
    assert [p.end_offset for p in parts] == [8, 0, 3]
    assert parts[0].rate == pytest.approx(6 / window)
    assert parts[1].rate == 0
    assert parts[2].rate == pytest.approx(3 / window)
    assert topic(second, topics.received).rate == pytest.approx(9 / window)
    assert topic(second, topics.iban_state).rate == 0


async def test_missing_topics_are_reported_not_created(kafka_broker: EmbeddedBroker) -> None:
    topics = Topics(prefix=unique_prefix(), partitions=3)
    monitor = Monitor(kafka_broker.bootstrap_servers, topics, ["acd"])
    snap = await monitor.sample(counts=True)
    assert snap.topics == () and snap.groups == ()
    assert set(snap.missing_topics) == {s.name for s in topics.specs(["acd"])}
    again = await monitor.sample(counts=False)
    assert set(again.missing_topics) == set(snap.missing_topics)  # still not auto-created
    assert snap.held is not None and not snap.held.available and snap.held.current is None
    assert snap.connectors is not None
    assert [(c.held, c.dead_letters, c.dead_letters_open) for c in snap.connectors] == [
        (None, None, None)]


async def test_a_connector_added_to_the_file_is_watched_without_a_restart(
    kafka_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    path = tmp_path / "connectors.toml"
    path.write_text('[connectors.acd]\nname = "ACD"\nadapter = "webhook"\n')
    live = Catalogue.from_file(path, check_interval=0)
    topics = Topics(prefix=unique_prefix(), partitions=3)
    monitor = Monitor(kafka_broker.bootstrap_servers, topics, live)
    before = await monitor.sample(counts=False)
    assert set(before.missing_topics) == {s.name for s in topics.specs(["acd"])}

    edited = path.with_suffix(".new")
    edited.write_text(path.read_text() + '[connectors.sage]\nname = "Sage"\nadapter = "sftp"\n')
    edited.replace(path)

    after = await monitor.sample(counts=True)
    assert monitor.connector_ids == ["acd", "sage"]
    assert set(after.missing_topics) == {s.name for s in topics.specs(["acd", "sage"])}
    assert after.connectors is not None
    assert [c.connector_id for c in after.connectors] == ["acd", "sage"]


async def test_a_fresh_broker_where_no_group_ever_committed_is_sampled(
    own_broker: EmbeddedBroker,
) -> None:
    """On a fresh Kafka node no group has a coordinator until the offsets topic exists:
    the monitor reads that as "nothing committed yet" (every pipeline group lags by the
    whole log), not as a broker outage (``/ops/topics`` used to answer 503 there)."""
    from routing.broker import ensure_topics

    bootstrap = own_broker.bootstrap_servers
    topics = Topics(prefix=unique_prefix(), partitions=3)
    await ensure_topics(bootstrap, topics.specs(list(default_catalogue())))
    await produce_to_partitions(bootstrap, topics.received, {0: 4, 2: 1})

    snap = await Monitor(bootstrap, topics, default_catalogue()).sample(counts=False)

    assert topic(snap, topics.received).end_offset == 5
    router = group(snap, f"{topics.prefix}.router")
    assert not router.committed
    assert router.lag == 5
    assert all(not g.committed for g in snap.groups)
