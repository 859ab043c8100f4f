"""The consumer-lag Prometheus collector, fed by the process's shared monitor."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from events.topics import Topics
from routing.observability.monitor.model import DeadLetterLedger
from routing.observability.monitor.service import MonitorService, monitor_service

__all__ = ["LAG_COLLECTOR_KEY", "ConsumerLagCollector", "serve_lag_metrics"]

class ConsumerLagCollector(Collector):
    """``statement_router_consumer_lag{group,topic,partition}`` from the latest snapshot.

    A custom collector rather than a Gauge kept up to date: a gauge would keep reporting
    the lag of a group or partition that no longer exists, and would need a writer running
    on a schedule. Scraping reads the last snapshot and asks for a new one in the
    background, so a scrape never waits on the broker. A snapshot older than ``stale_after``
    seconds is not reported (no lag is better than a frozen one: alert on its absence or on
    ``statement_router_monitor_up``).
    """

    def __init__(self, service: MonitorService, *, stale_after: float = 60.0) -> None:
        self.service = service
        self.stale_after = stale_after

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Declared without samples, so registering does not call collect() (no I/O then).
        yield self._lag_family()
        yield self._up_family()

    @staticmethod
    def _lag_family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "statement_router_consumer_lag",
            "Records a consumer group has yet to read (end offset - committed offset), "
            "from the Kafka admin and offset APIs.",
            labels=["group", "topic", "partition"],
        )

    @staticmethod
    def _up_family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "statement_router_monitor_up",
            "1 if the monitor's last attempt to read the broker's offsets succeeded.",
        )

    def collect(self) -> Iterator[GaugeMetricFamily]:
        self.service.refresh_soon()
        lag = self._lag_family()
        snap = self.service.latest
        if snap is not None and time.monotonic() - snap.monotonic <= self.stale_after:
            for group in snap.groups:
                for part in group.partitions:
                    lag.add_metric([group.group_id, part.topic, str(part.partition)], part.lag)
        yield lag
        up = self._up_family()
        up.add_metric([], 0.0 if snap is None or self.service.last_error is not None else 1.0)
        yield up


LAG_COLLECTOR_KEY = "consumer_lag"


def serve_lag_metrics(
    bootstrap_servers: str | None,
    topics: Topics,
    connector_ids: Iterable[str],
    *,
    ledger: DeadLetterLedger | None = None,
) -> MonitorService | None:
    """The API process's monitor, with its lag collector registered on
    ``routing.observability.metrics``.

    Call it where the API app is built, inside the running loop, and hand the result to
    ``ops_router(monitor=...)`` so ``/ops/*`` and ``/metrics`` share samples. Without a
    broker there is nothing to watch: the collector is removed and None is returned.
    """
    from routing.observability.metrics import register_collector, unregister_collector

    if not bootstrap_servers:
        unregister_collector(LAG_COLLECTOR_KEY)
        return None
    service = monitor_service(bootstrap_servers, topics, connector_ids, ledger=ledger)
    register_collector(LAG_COLLECTOR_KEY, ConsumerLagCollector(service))
    return service

