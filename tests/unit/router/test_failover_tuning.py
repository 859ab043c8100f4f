"""The router's group timing and standby replica reach faust and its Kafka consumer.

A failover (issue 18, target 3) takes the group session (how long the coordinator waits
for a killed router's heartbeats) plus the takeover, which a standby replica of the
Tables keeps short (docs/performance.md, "Failover"). These tests check that what
``RouterTuning`` says is what faust is given, and what faust's own aiokafka consumer
(the one that holds the group membership) is built with. The two-router hand-over itself
is tests/e2e/test_router_scale_out.py.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

from config.catalogue import default_catalogue
from config.settings import Settings
from events.topics import Topics
from routing.router import RouterTuning, create_router_app

# faust reads these from the environment over the values it is given: keep them out.
FAUST_ENV = ("BROKER_SESSION_TIMEOUT", "BROKER_HEARTBEAT_INTERVAL", "TABLE_STANDBY_REPLICAS")
KAFKA_MIN_SESSION_S = 6.0  # Apache Kafka's group.min.session.timeout.ms default


@pytest.fixture(autouse=True)
def no_faust_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in FAUST_ENV:
        monkeypatch.delenv(name, raising=False)


def test_the_default_tuning_fails_over_within_kafkas_limits() -> None:
    tuning = RouterTuning()
    assert tuning.session_timeout == KAFKA_MIN_SESSION_S
    assert tuning.heartbeat_interval <= tuning.session_timeout / 3
    assert tuning.standby_replicas == 1


async def test_group_timing_and_standby_reach_fausts_consumer(tmp_path: Path) -> None:
    settings = Settings(kafka_bootstrap_servers="127.0.0.1:1", data_dir=tmp_path)
    tuning = RouterTuning()
    router = create_router_app(settings, Topics("fo", 2), default_catalogue(),
                               bootstrap_servers="127.0.0.1:1")
    conf = router.app.conf
    assert conf.broker_session_timeout == tuning.session_timeout
    assert conf.broker_heartbeat_interval == tuning.heartbeat_interval
    assert conf.table_standby_replicas == tuning.standby_replicas == 1

    # faust's own factory of its group consumer, on a stand-in for its consumer thread
    # (a real one would start a thread and an event loop that an unstarted app leaks).
    thread: Any = SimpleNamespace(
        app=router.app, consumer=SimpleNamespace(in_transaction=False), _assignor=None
    )
    transport: Any = router.app.transport
    consumer = AIOKafkaConsumerThread._create_worker_consumer(thread, transport)
    try:
        coordinator_args = (consumer._session_timeout_ms, consumer._heartbeat_interval_ms)
        assert coordinator_args == (6_000, 500)
        assert consumer._group_id == "fo.router"
        assert consumer._group_instance_id is None  # dynamic membership (docs say why)
    finally:
        await consumer.stop()


async def test_a_shorter_session_given_is_the_one_faust_gets(tmp_path: Path) -> None:
    settings = Settings(kafka_bootstrap_servers="127.0.0.1:1", data_dir=tmp_path)
    tuning = RouterTuning(session_timeout=9.0, heartbeat_interval=3.0, standby_replicas=0)
    router = create_router_app(settings, Topics("fo2", 2), default_catalogue(),
                               bootstrap_servers="127.0.0.1:1", tuning=tuning)
    assert router.app.conf.broker_session_timeout == 9.0
    assert router.app.conf.broker_heartbeat_interval == 3.0
    assert router.app.conf.table_standby_replicas == 0
