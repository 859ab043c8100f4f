"""The monitor's pure parts: rates, lag, the held changelog fold, rendering, the collector."""

from __future__ import annotations

import json
import socket
import time
from datetime import UTC, datetime

import pytest
from aiokafka.structs import TopicPartition
from prometheus_client import CollectorRegistry, generate_latest
from rich.console import Console

from events.topics import Topics
from routing.broker.errors import BrokerUnavailable
from routing.observability.monitor.collector import ConsumerLagCollector
from routing.observability.monitor.model import (
    ConnectorStatus,
    GroupPartition,
    GroupStatus,
    MonitorSnapshot,
    PartitionStatus,
    TopicStatus,
    decode_held,
    group_role,
    held_status,
    latest_by_key,
    open_dead_letters,
    partition_lag,
    rates,
)
from routing.observability.monitor.sampler import Monitor
from routing.observability.monitor.service import MonitorService
from routing.observability.monitor.view import render

A0, A1 = TopicPartition("a", 0), TopicPartition("a", 1)


def test_rates_need_a_previous_sample_and_elapsed_time() -> None:
    assert rates(None, {A0: 10}, None) == {A0: None}
    assert rates({A0: 4}, {A0: 10, A1: 3}, 2.0) == {A0: 3.0, A1: None}
    assert rates({A0: 4}, {A0: 4}, 2.0) == {A0: 0.0}
    assert rates({A0: 4}, {A0: 10}, 0.0) == {A0: None}
    assert rates({A0: 9}, {A0: 2}, 1.0) == {A0: None}  # topic recreated: no rate


@pytest.mark.parametrize(
    ("committed", "start", "end", "lag"),
    [(None, 0, 7, 7), (5, 0, 7, 2), (7, 0, 7, 0), (None, 4, 7, 3), (2, 4, 7, 3), (0, 0, 0, 0)],
)
def test_partition_lag(committed: int | None, start: int, end: int, lag: int) -> None:
    assert partition_lag(committed, start, end) == lag


def test_group_roles() -> None:
    topics = Topics("p", 3)
    assert group_role(topics, "p.router") == ("router", None)
    assert group_role(topics, "p.router-input") == ("router", None)
    assert group_role(topics, "p.adapter.acd") == ("adapter", "acd")
    assert group_role(topics, "p.global-file") == ("global-file", None)
    assert group_role(topics, "p.ledger") == ("ledger", None)
    assert group_role(topics, "q.ledger") == ("other", None)


def _key(iban: str) -> bytes:
    return json.dumps(iban).encode()


def _entry(reason: str) -> bytes:
    return json.dumps({"raw": "{}", "partition": 0, "offset": 1, "reason": reason,
                       "held_at": "2026-01-01T00:00:00+00:00"}).encode()


def test_the_held_changelog_fold_keeps_what_is_parked_now() -> None:
    records = [
        (_key("FR1|0|1"), _entry("unknown_iban")),
        (_key("FR2|0|2"), _entry("mandate_pending")),
        (_key("FR1|0|3"), _entry("unknown_iban")),  # a second one parked
        (_key("FR2|0|2"), None),  # released
        (None, b"ignored"),
        (_key("FR3|1|4"), _entry("connector_not_on_cabinet")),
        (b"not json", b"{}"),
        (_key("FR4"), _entry("unknown_iban")),  # not a held statement's key
    ]
    held = decode_held(latest_by_key(records))
    assert sorted(held) == ["FR1", "FR3"]
    status = held_status("src", held, {"FR3": "acd"}, audit_events=4)
    assert (status.current, status.ibans, status.audit_events) == (3, 2, 4)
    assert dict(status.by_reason) == {"unknown_iban": 2, "connector_not_on_cabinet": 1}
    assert dict(status.by_connector) == {None: 2, "acd": 1}
    assert status.as_dict()["without_connector"] == 2
    missing = held_status("src", None, {}, audit_events=None)
    assert (missing.available, missing.current, missing.as_dict()["without_connector"]) == (
        False, None, None)


def snapshot(*, lag: int = 4, monotonic: float | None = None) -> MonitorSnapshot:
    return MonitorSnapshot(
        taken_at=datetime(2026, 1, 1, tzinfo=UTC),
        topic_prefix="p",
        rate_window=2.0,
        topics=(TopicStatus("p.statements.received",
                            (PartitionStatus(0, 1, 12, 1.5), PartitionStatus(1, 0, 3, 0.5))),),
        missing_topics=("p.deliveries.outcomes",),
        groups=(GroupStatus("p.router-input", "router", None, (
            GroupPartition("p.statements.received", 0, 8, 12, lag),
            GroupPartition("p.statements.received", 1, None, 3, 3))),),
        held=held_status("p.router-held-changelog", {"FR1": [{"reason": "unknown_iban"}]}, {}, 5),
        invalid=6,
        connectors=(ConnectorStatus("acd", 0, 2, 1),),
        monotonic=time.monotonic() if monotonic is None else monotonic,
    )


def test_snapshot_documents() -> None:
    snap = snapshot()
    topics = snap.topics_dict()
    [received] = topics["topics"]
    assert (received["end_offset"], received["records"], received["rate"]) == (15, 14, 2.0)
    assert topics["missing_topics"] == ["p.deliveries.outcomes"]
    assert topics["connectors"] == [{"connector_id": "acd", "held": 0, "dead_letters": 2,
                                     "dead_letters_open": 1, "worker": None,
                                     "worker_reason": None, "worker_since": None}]
    lag = snap.lag_dict()
    assert lag["total_lag"] == 7
    assert lag["groups"][0]["committed"] is True
    whole = snap.as_dict()
    assert whole["total_lag"] == 7 and whole["invalid"] == 6 and "groups" in whole


def test_render_shows_every_table() -> None:
    console = Console(record=True, width=160, color_system=None)
    console.print(render(snapshot(), error="cannot reach Kafka"))
    text = console.export_text()
    assert "rates over 2.0s" in text
    assert "statements.received" in text and "1.5/s" in text
    assert "deliveries.outcomes" in text and "missing" in text
    assert "p.router-input" in text and "total lag 7" in text
    assert "held now: 1 statement(s) on 1 IBAN(s) [unknown_iban 1]" in text
    assert "invalid: 6" in text and "last refresh failed: cannot reach Kafka" in text


def _closed_port() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


def _service(max_age: float = 5.0) -> MonitorService:
    return MonitorService(Monitor(_closed_port(), Topics("p", 3), ["acd"], timeout=5.0),
                          max_age=max_age)


def test_collector_reports_the_latest_snapshot() -> None:
    service = _service()
    service.latest = snapshot(lag=4)
    registry = CollectorRegistry()
    registry.register(ConsumerLagCollector(service))
    text = generate_latest(registry).decode()
    assert ('statement_router_consumer_lag{group="p.router-input",'
            'partition="0",topic="p.statements.received"} 4.0') in text
    assert ('statement_router_consumer_lag{group="p.router-input",'
            'partition="1",topic="p.statements.received"} 3.0') in text
    assert "statement_router_monitor_up 1.0" in text


def test_collector_drops_a_stale_snapshot() -> None:
    service = _service()
    service.latest = snapshot(monotonic=time.monotonic() - 3600)
    registry = CollectorRegistry()
    registry.register(ConsumerLagCollector(service, stale_after=60))
    text = generate_latest(registry).decode()
    assert "statement_router_consumer_lag{" not in text
    assert "# TYPE statement_router_consumer_lag gauge" in text


async def test_a_scrape_with_the_broker_down_does_not_wait_for_it() -> None:
    service = _service(max_age=0.0)
    registry = CollectorRegistry()
    registry.register(ConsumerLagCollector(service))
    first = generate_latest(registry).decode()  # schedules a refresh, returns at once
    assert "statement_router_monitor_up 0.0" in first
    assert "statement_router_consumer_lag{" not in first
    await service.wait_refreshed()
    assert isinstance(service.last_error, BrokerUnavailable)
    with pytest.raises(BrokerUnavailable):
        await service.snapshot(counts=False)
    await service.aclose()


async def test_the_service_shares_a_fresh_snapshot() -> None:
    service = _service(max_age=60.0)
    service.latest = snapshot()
    assert await service.snapshot(counts=True) is service.latest
    assert await service.snapshot(counts=False) is service.latest
    await service.aclose()


def test_open_dead_letters_are_the_retained_records_less_the_replayed_places() -> None:
    starts, ends = {0: 0, 1: 2, 2: 0}, {0: 5, 1: 6, 2: 0}  # 9 records retained
    assert open_dead_letters(9, set(), starts, ends) == 9
    assert open_dead_letters(9, {(0, 0), (0, 4), (1, 5)}, starts, ends) == 6
    # Places retention deleted (1@0, 1@1), beyond the end (0@5), of an unknown partition
    # (7@0) or of an empty one (2@0) are not subtracted: those dead letters are not counted.
    assert open_dead_letters(9, {(1, 0), (1, 1), (0, 5), (7, 0), (2, 0)}, starts, ends) == 9
    assert open_dead_letters(1, {(0, 0), (0, 1)}, {0: 0}, {0: 2}) == 0  # never below zero
