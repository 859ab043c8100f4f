"""Recording helpers: the exact series each call moves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from config.settings import Settings
from routing.observability.metrics import (
    REGISTRY,
    count_routed,
    init_connector,
    record_attempt,
    register_collector,
    render,
    seconds_since,
    unregister_collector,
)
from routing.observability.metrics_http import metrics_endpoint


def value(name: str, **labels: str) -> float:
    found = REGISTRY.get_sample_value(name, labels)
    return 0.0 if found is None else found


def test_routed_keeps_the_connector_for_partner_only() -> None:
    partner = {"destination": "partner", "reason": "bound", "connector": "cegid"}
    held = {"destination": "held", "reason": "connector_not_in_catalogue", "connector": ""}
    before = (value("statement_router_routed_total", **partner),
              value("statement_router_routed_total", **held))
    count_routed("partner", "bound", "cegid")
    count_routed("partner", "bound", "cegid")
    count_routed("held", "connector_not_in_catalogue", "some-unknown-connector")
    assert value("statement_router_routed_total", **partner) - before[0] == 2
    assert value("statement_router_routed_total", **held) - before[1] == 1
    assert REGISTRY.get_sample_value(
        "statement_router_routed_total",
        {"destination": "held", "reason": "connector_not_in_catalogue",
         "connector": "some-unknown-connector"}) is None


def test_an_attempt_counts_once_and_a_delivery_observes_its_latency() -> None:
    c = "metrics-unit-a"
    received = datetime.now(UTC) - timedelta(hours=2)
    record_attempt(c, "retry", 0.2, received)
    record_attempt(c, "permanent", 0.1, received)
    record_attempt(c, "delivered", 0.05, received)
    assert value("statement_router_delivery_attempts_total", connector=c) == 3
    assert value("statement_router_delivered_total", connector=c) == 1
    assert value("statement_router_delivery_failures_total", connector=c, kind="retry") == 1
    assert value("statement_router_delivery_failures_total", connector=c, kind="permanent") == 1
    assert value("statement_router_delivery_attempt_seconds_count", connector=c) == 3
    assert value("statement_router_delivery_attempt_seconds_sum", connector=c) == pytest.approx(
        0.35)
    # Latency is measured from received_at: two hours ago is past the 1800 s bucket.
    assert value("statement_router_delivery_latency_seconds_count", connector=c) == 1
    assert value("statement_router_delivery_latency_seconds_bucket", connector=c,
                 le="1800.0") == 0
    assert value("statement_router_delivery_latency_seconds_bucket", connector=c,
                 le="21600.0") == 1


def test_a_clock_ahead_never_gives_a_negative_latency() -> None:
    now = datetime(2026, 3, 1, tzinfo=UTC)
    assert seconds_since(now + timedelta(seconds=5), now) == 0.0
    assert seconds_since(now - timedelta(seconds=5), now) == 5.0


def test_a_started_connector_exposes_zeros_and_is_not_disabled() -> None:
    c = "metrics-unit-b"
    init_connector(c)
    text = render().decode()
    assert f'statement_router_dead_letters_total{{connector="{c}"}} 0.0' in text
    assert f'statement_router_connector_disabled{{connector="{c}"}} 0.0' in text
    assert (f'statement_router_delivery_failures_total{{connector="{c}",kind="disabled"}} 0.0'
            in text)


class FixedCollector:
    def __init__(self, value: float) -> None:
        self.value = value

    def collect(self):  # type: ignore[no-untyped-def]
        from prometheus_client.core import GaugeMetricFamily

        yield GaugeMetricFamily("statement_router_test_extra", "A test collector.", self.value)


def test_an_extra_collector_is_exported_and_replaced_not_duplicated() -> None:
    try:
        register_collector("test-extra", FixedCollector(1))
        assert value("statement_router_test_extra") == 1
        register_collector("test-extra", FixedCollector(2))  # a second app in the process
        assert value("statement_router_test_extra") == 2
    finally:
        unregister_collector("test-extra")
    assert REGISTRY.get_sample_value("statement_router_test_extra") is None


def test_metrics_settings_default_to_loopback_and_off() -> None:
    settings = Settings()
    assert settings.metrics_host == "127.0.0.1"
    assert settings.metrics_port is None


async def test_no_metrics_port_means_no_server() -> None:
    async with metrics_endpoint(Settings(metrics_port=None)) as server:
        assert server is None
