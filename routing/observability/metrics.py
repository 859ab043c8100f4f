"""Prometheus metrics: one registry, every metric defined once, and the ways to serve them.

Why one module-level registry of our own (``REGISTRY``) rather than prometheus_client's
global default: what a process exposes is then exactly what this module (and the
collectors registered on it on purpose) defines, never whatever a third-party library
registers on the default registry at import time; and the faust sensor, the API route
and the stand-alone server all read the same object. The process, platform and GC
collectors are added to it explicitly, so resident memory, CPU and open files are still
exported.

Privacy and cardinality. Labels are bounded, operator-level dimensions only: ``connector``
(the catalogue), ``destination`` and ``reason`` (``decide()``'s finite set), ``kind`` and
``result`` (fixed words), ``component`` (our processes). A metric is **never** labelled by
IBAN, statement id or cabinet id (``FORBIDDEN_LABELS``; a test checks every metric): one
series per IBAN would be millions of series, and ``/metrics`` is served without
authentication, as Prometheus scraping expects, so it must carry nothing personal.

Where the metrics are served:

* the API process (``statement-router api``, and ``up`` where every role shares the
  process): ``GET /metrics`` on the API port (:func:`add_metrics_route`);
* every other role (relay, router, adapters, global-file builder, ledger): a small HTTP
  server on ``METRICS_HOST:METRICS_PORT`` when ``METRICS_PORT`` is set
  (``routing.observability.metrics_http.metrics_endpoint``), serving ``/metrics`` and ``/healthz``.

The router's faust app gets faust's own Prometheus sensor (:func:`faust_monitor`),
registered on the same registry under ``statement_router_faust_*``: rebalances and
recovery. The Tables' changelog records are written
by the router's own producer and counted in ``statement_router_table_changelog_records``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    gc_collector,
    generate_latest,
    platform_collector,
    process_collector,
)
from prometheus_client.metrics_core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from faust.sensors.prometheus import FaustMetrics


log = structlog.get_logger(__name__)

PREFIX = "statement_router_"
FAUST_PREFIX = "statement_router_faust"

#: Label names no metric may have: personal data, and unbounded cardinality.
FORBIDDEN_LABELS = frozenset(
    {"iban", "statement_id", "statement", "cabinet_id", "cabinet", "client_ref", "user_id"}
)

REGISTRY = CollectorRegistry(auto_describe=True)
process_collector.ProcessCollector(registry=REGISTRY)
platform_collector.PlatformCollector(registry=REGISTRY)
gc_collector.GCCollector(registry=REGISTRY)

#: Received-to-delivered latency: milliseconds when all is well (the target is a p99
#: under 250 ms), hours when a partner is down and the statement waits in backoff.
LATENCY_BUCKETS = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 1800.0, 3600.0, 21600.0, 86400.0,
)
#: One delivery attempt: a webhook call, an SFTP upload, a file write.
ATTEMPT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


# --- the router ---------------------------------------------------------------------------

class LoopCounter(Collector):
    """A labelled counter for the router's hot path, counted without a lock.

    prometheus_client's ``Counter.inc`` takes a mutex on every call (about 1.1 µs here);
    the router counts every statement, at its 10,000 statements/s target that is 1 % of a
    core for one number. This counter is a plain dict written only from the event loop's
    thread (the router's one writer) and copied, atomically under the GIL, when a scrape
    reads it from another thread.
    """

    def __init__(
        self, name: str, documentation: str, labelnames: tuple[str, ...],
        registry: CollectorRegistry,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self._counts: dict[tuple[str, ...], int] = {}
        registry.register(self)

    def inc(self, key: tuple[str, ...]) -> None:
        """Add one to the series of the label values ``key`` (in ``labelnames`` order)."""
        counts = self._counts
        counts[key] = counts.get(key, 0) + 1

    def _family(self) -> CounterMetricFamily:
        return CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def describe(self) -> Iterator[Metric]:
        yield self._family()

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for key, value in self._counts.copy().items():
            family.add_metric(key, value)
        yield family


ROUTED = LoopCounter(
    "statement_router_routed",
    "Routed events emitted by the router, per destination (partner, global-file, held) and "
    "decide() reason; connector is set for partner only. A held statement released later "
    "counts again under its final destination.",
    ("destination", "reason", "connector"),
    REGISTRY,
)
INVALID = Counter(
    "statement_router_invalid",
    "Records sent to statements.invalid, per component that found them (router, adapter, "
    "global-file, ledger).",
    ["component"],
    registry=REGISTRY,
)
PARKED = Counter(
    "statement_router_parked",
    "Records parked rather than copied or sent (park and refer, docs/operations.md#limits), "
    "per component and how: referred (a statements.invalid record that refers to the input "
    "by topic, partition, offset and size instead of copying it) or unwritable (even that "
    "record could not be written: the input is only logged, at error level; alert on it).",
    ["component", "how"],
    registry=REGISTRY,
)
TABLE_CHANGELOG_RECORDS = Counter(
    "statement_router_table_changelog_records",
    "Records the router wrote to its Tables' changelog topics once acknowledged, per table "
    "(iban-state, held): the state it keeps, and what a restart recovers.",
    ["table"],
    registry=REGISTRY,
)
HELD_STATEMENTS = Gauge(
    "statement_router_held_statements",
    "Statements the router holds now in the partitions it owns (its held Table), per "
    "decide() reason (unknown_iban, mandate_pending, ...); sum over the router processes "
    "for the pipeline's total. Released statements are no longer counted.",
    ["reason"],
    registry=REGISTRY,
)
STATEMENTS_FORWARDED = Counter(
    "statement_router_statements_forwarded",
    "Statements the router read from a partition other than their key's (murmur2) "
    "partition, e.g. placed by a librdkafka producer's CRC32 partitioner, and forwarded to "
    "the right partition of statements.received (the repartition step).",
    registry=REGISTRY,
)

# --- the adapter workers ------------------------------------------------------------------

DELIVERY_ATTEMPTS = Counter(
    "statement_router_delivery_attempts",
    "Delivery attempts to the partner, per connector (= delivered + failures).",
    ["connector"],
    registry=REGISTRY,
)
DELIVERED = Counter(
    "statement_router_delivered",
    "Statements the partner accepted, per connector.",
    ["connector"],
    registry=REGISTRY,
)
DELIVERY_FAILURES = Counter(
    "statement_router_delivery_failures",
    "Failed delivery attempts per connector and kind: retry (transient, retried), permanent "
    "(dead-lettered at once), disabled (HTTP 410: the connector paused).",
    ["connector", "kind"],
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "statement_router_dead_letters",
    "Statements dead-lettered to statements.partner.<connector>.dlq, per connector.",
    ["connector"],
    registry=REGISTRY,
)
DELIVERY_LATENCY = Histogram(
    "statement_router_delivery_latency_seconds",
    "From the statement's received_at to the partner's acceptance, per connector "
    "(retries and backoff included).",
    ["connector"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
ATTEMPT_DURATION = Histogram(
    "statement_router_delivery_attempt_seconds",
    "Duration of one delivery attempt (the partner call), per connector.",
    ["connector"],
    buckets=ATTEMPT_BUCKETS,
    registry=REGISTRY,
)
WORKER_UP = Gauge(
    "statement_router_connector_worker_up",
    "1 while the connector's adapter worker runs (disabled after a 410 included), 0 once a "
    "fatal error stopped it: it stays stopped until `statement-router adapters enable` or "
    "a restart of the adapters process (docs/operations.md).",
    ["connector"],
    registry=REGISTRY,
)
CONNECTOR_DISABLED = Gauge(
    "statement_router_connector_disabled",
    "1 while a connector's worker is paused because its endpoint answered HTTP 410 Gone.",
    ["connector"],
    registry=REGISTRY,
)

# --- the outbox relay ---------------------------------------------------------------------

OUTBOX_PUBLISHED = Counter(
    "statement_router_outbox_published",
    "Outbox rows (IBAN state snapshots) published to iban.state and acknowledged.",
    registry=REGISTRY,
)
OUTBOX_BACKLOG = Gauge(
    "statement_router_outbox_backlog",
    "Outbox rows not yet published, as last counted by the relay (every few seconds).",
    registry=REGISTRY,
)

# --- the global-file builder and the ledger ------------------------------------------------

GLOBAL_FILE_STATEMENTS = Counter(
    "statement_router_global_file_statements",
    "Statements the global-file builder read, per result: stored (new in the cabinet's "
    "file), id_reused (new, beside another content its account sent under the same id) "
    "or duplicate (already there, ignored).",
    ["result"],
    registry=REGISTRY,
)
GLOBAL_FILE_LATENCY = Histogram(
    "statement_router_global_file_latency_seconds",
    "From the statement's received_at to its first storage in the cabinet's global file.",
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
LEDGER_OUTCOMES = Counter(
    "statement_router_ledger_outcomes",
    "Delivery outcomes the ledger read, per result: recorded or duplicate (ignored).",
    ["result"],
    registry=REGISTRY,
)

#: Every metric this module defines (the faust sensor's come from ``faust_metrics()``).
METRICS: tuple[Counter | Gauge | Histogram | LoopCounter, ...] = (
    ROUTED, INVALID, PARKED, DELIVERY_ATTEMPTS, DELIVERED, DELIVERY_FAILURES, DEAD_LETTERS,
    DELIVERY_LATENCY, ATTEMPT_DURATION, CONNECTOR_DISABLED, WORKER_UP, OUTBOX_PUBLISHED,
    OUTBOX_BACKLOG, GLOBAL_FILE_STATEMENTS, GLOBAL_FILE_LATENCY, LEDGER_OUTCOMES,
    HELD_STATEMENTS,
)


# --- recording helpers --------------------------------------------------------------------

def count_routed(destination: str, reason: str, connector: str | None) -> None:
    """Count one routed event (the router's hot path: see ``LoopCounter``). ``connector``
    is kept for ``partner`` only: a held statement may name a connector that is not in the
    catalogue (any system may publish ``iban.state``), which must not mint series."""
    ROUTED.inc((destination, reason, (connector or "") if destination == "partner" else ""))


def seconds_since(moment: datetime, now: datetime | None = None) -> float:
    """Seconds from ``moment`` to now, never negative (producer clocks may run ahead)."""
    current = now or datetime.now(UTC)
    return max(0.0, (current - moment).total_seconds())


def init_connector(connector: str) -> None:
    """Create a connector's series at 0 when its worker starts: a rate or an alert on a
    series that does not exist yet sees nothing, not a zero (and a restarted worker is no
    longer disabled)."""
    for metric in (DELIVERY_ATTEMPTS, DELIVERED, DEAD_LETTERS, DELIVERY_LATENCY, ATTEMPT_DURATION):
        metric.labels(connector)
    for kind in ("retry", "permanent", "disabled"):
        DELIVERY_FAILURES.labels(connector, kind)
    CONNECTOR_DISABLED.labels(connector).set(0)
    WORKER_UP.labels(connector).set(1)

def record_attempt(
    connector: str, kind: str, duration: float, received_at: datetime
) -> None:
    """Count one delivery attempt of ``connector`` that ended with a result of ``kind``
    (``delivered``, ``retry``, ``permanent``, ``disabled``) after ``duration`` seconds;
    a delivery also observes its received-to-delivered latency."""
    DELIVERY_ATTEMPTS.labels(connector).inc()
    ATTEMPT_DURATION.labels(connector).observe(duration)
    if kind == "delivered":
        DELIVERED.labels(connector).inc()
        DELIVERY_LATENCY.labels(connector).observe(seconds_since(received_at))
    else:
        DELIVERY_FAILURES.labels(connector, kind).inc()


# --- extra collectors (consumer lag) --------------------------------------------------------

_extra: dict[str, Collector] = {}
_extra_lock = threading.Lock()


def register_collector(key: str, collector: Collector) -> None:
    """Add a custom collector (e.g. the monitor's consumer-lag collector) to
    ``REGISTRY``, replacing the one registered earlier under ``key``.

    Replacing rather than adding lets a process build its API app more than once (tests,
    a restart in ``up``) without prometheus_client refusing the duplicate metric names.
    """
    with _extra_lock:
        previous = _extra.pop(key, None)
        if previous is not None:
            with contextlib.suppress(KeyError):
                REGISTRY.unregister(previous)
        REGISTRY.register(collector)
        _extra[key] = collector


def unregister_collector(key: str) -> None:
    """Remove the collector registered under ``key`` (no-op when there is none)."""
    with _extra_lock:
        previous = _extra.pop(key, None)
        if previous is not None:
            with contextlib.suppress(KeyError):
                REGISTRY.unregister(previous)


# --- the faust sensor -----------------------------------------------------------------------

_faust_metrics: FaustMetrics | None = None
_faust_lock = threading.Lock()


def faust_metrics() -> FaustMetrics:
    """faust's Prometheus metrics, created once per process on ``REGISTRY``.

    ``faust.sensors.prometheus.setup_prometheus_sensors`` would create them again for every
    app (a second router app in the process, as in tests, would then fail on duplicate
    names) and add a page to faust's web server, which the router disables; so the metrics
    are shared and only the monitor is per app.
    """
    global _faust_metrics
    with _faust_lock:
        if _faust_metrics is None:
            from faust.sensors.prometheus import FaustMetrics

            _faust_metrics = FaustMetrics.create(REGISTRY, FAUST_PREFIX)
        return _faust_metrics


def faust_monitor() -> Any:
    """faust's Prometheus monitor on our registry, for the router's faust app.

    ``routing.router.faust_glue.attach_monitor`` makes it the app's monitor before start;
    faust adds it to its sensors then. It sees what faust does: the Tables' changelog
    recovery, rebalances and assignment. The router's own consumer reads the inputs and
    its own producer writes the changelogs, so faust's per-message metrics stay still;
    ``statement_router_routed`` counts the statements.
    """
    from faust.sensors.prometheus import PrometheusMonitor

    return PrometheusMonitor(metrics=faust_metrics())


# --- exposition -----------------------------------------------------------------------------


def render() -> bytes:
    """The registry in Prometheus' text format."""
    return generate_latest(REGISTRY)
