"""Topic monitoring: end offsets, rates, consumer-group lag and parked statements, from Kafka.

Everything here is read from the broker through the Kafka admin and offset APIs, never from
the processes' own counters: a stuck or crashed worker cannot report its own lag, and the
monitor must tell the truth about a pipeline it is not part of. It joins no consumer group
and commits nothing (the readers are group-less), so watching never triggers a rebalance.

What is measured, and how:

* **end offsets** per partition: ``routing.broker.topic_reader.true_end_offsets``, because Tansu
  answers ListOffsets wrongly after batched sends; **start offsets** (the log start) from
  ListOffsets(earliest), so ``end - start`` is the number of records retained.
* **rates**: the difference of two end-offset samples over the time between them, in
  records per second. A single sample has no rate (``None``), never a made-up 0.
* **committed offsets** per group: ``AIOKafkaAdminClient.list_consumer_group_offsets``
  with the partitions named explicitly (Tansu drops the connection on the "all topics"
  form of OffsetFetch). **lag** = end offset - committed offset. A partition the group
  never committed is read from the log start (every group here uses
  ``auto_offset_reset=earliest``), so its lag is ``end - start``, shown with a null
  committed offset.
* **held** = statements *currently parked* by the router, from the router's ``held``
  table changelog (``<app id>-held-changelog``): one record per parked statement, keyed
  ``iban|partition|offset``, a null value (tombstone) once it was released.
  ``statements.held`` is only the audit of parking (a statement released since is still
  there), so its record count is reported separately as ``audit_events``. Held
  statements are attributed to the connector their IBAN is bound to in the router's own
  ``iban-state`` changelog (null: unknown or unbound IBAN) — that is the connector they
  will go to once released.
* **invalid** = records in ``statements.invalid``. Not per connector: a statement is
  invalid precisely because it could not be read far enough to know its IBAN's connector.
* **dead letters** per connector: records in ``statements.partner.<id>.dlq``, and how many
  are still *open* (not replayed), counted by ``adapters.dlq.list_dead_letters`` — the same
  rule the ``dlq`` command and ``/ops/dlq`` use. An empty DLQ costs no read.

Reading the two changelogs and the outcomes topic costs a scan; the results are cached
until the topics' end offsets move, and the lag-only sample (``counts=False``, what the
Prometheus collector uses) skips them entirely.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from adapters.control import read_control, worker_states
from adapters.dlq import list_dead_letters
from events.schemas import AdapterControl
from events.topics import Topics
from routing.broker.admin import describe_topics
from routing.broker.errors import BrokerError, BrokerUnavailable, ReadTimeout, kafka_errors
from routing.broker.topic_reader import assigned_consumer, true_end_offsets

log = structlog.get_logger("routing.monitor")


__all__ = [
    "ConnectorStatus",
    "ConsumerLagCollector",
    "GroupPartition",
    "GroupStatus",
    "HeldStatus",
    "Monitor",
    "MonitorService",
    "MonitorSnapshot",
    "PartitionStatus",
    "TopicStatus",
    "monitor_service",
    "serve_lag_metrics",
]

_DEFAULT_TIMEOUT = 10.0
_OFFSET_FETCH_CONCURRENCY = 16


# --- the snapshot model (pure) ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PartitionStatus:
    partition: int
    start_offset: int
    end_offset: int
    rate: float | None  # records/s between the last two samples; None with one sample

    @property
    def records(self) -> int:
        return max(0, self.end_offset - self.start_offset)


@dataclass(frozen=True, slots=True)
class TopicStatus:
    topic: str
    partitions: tuple[PartitionStatus, ...]

    @property
    def end_offset(self) -> int:
        """Sum of the partitions' end offsets: every record ever written."""
        return sum(p.end_offset for p in self.partitions)

    @property
    def records(self) -> int:
        return sum(p.records for p in self.partitions)

    @property
    def rate(self) -> float | None:
        rates = [p.rate for p in self.partitions]
        if not rates or any(r is None for r in rates):
            return None
        return sum(r for r in rates if r is not None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "end_offset": self.end_offset,
            "records": self.records,
            "rate": _round(self.rate),
            "partitions": [
                {
                    "partition": p.partition,
                    "start_offset": p.start_offset,
                    "end_offset": p.end_offset,
                    "records": p.records,
                    "rate": _round(p.rate),
                }
                for p in self.partitions
            ],
        }


@dataclass(frozen=True, slots=True)
class GroupPartition:
    topic: str
    partition: int
    committed_offset: int | None  # None: the group never committed this partition
    end_offset: int
    lag: int


@dataclass(frozen=True, slots=True)
class GroupStatus:
    group_id: str
    role: str  # router, adapter, global-file, ledger, other
    connector_id: str | None
    partitions: tuple[GroupPartition, ...]

    @property
    def lag(self) -> int:
        return sum(p.lag for p in self.partitions)

    @property
    def committed(self) -> bool:
        """Whether the group has committed anything on our topics (it has run)."""
        return any(p.committed_offset is not None for p in self.partitions)

    def as_dict(self) -> dict[str, Any]:
        return {
            "group": self.group_id,
            "role": self.role,
            "connector_id": self.connector_id,
            "committed": self.committed,
            "lag": self.lag,
            "partitions": [
                {
                    "topic": p.topic,
                    "partition": p.partition,
                    "committed_offset": p.committed_offset,
                    "end_offset": p.end_offset,
                    "lag": p.lag,
                }
                for p in self.partitions
            ],
        }


@dataclass(frozen=True, slots=True)
class HeldStatus:
    """Statements the router holds right now (see the module doc for the source)."""

    source: str  # the held changelog topic
    available: bool  # False: no changelog yet (the router never ran under this app id)
    current: int | None
    ibans: int | None
    by_reason: Mapping[str, int]
    by_connector: Mapping[str | None, int]
    audit_events: int | None  # records in statements.held (parked at least once)

    def as_dict(self) -> dict[str, Any]:
        return {
            "current": self.current,
            "ibans": self.ibans,
            "by_reason": dict(sorted(self.by_reason.items())),
            "without_connector": self.by_connector.get(None, 0) if self.available else None,
            "audit_events": self.audit_events,
            "source": self.source,
            "available": self.available,
        }


@dataclass(frozen=True, slots=True)
class ConnectorStatus:
    connector_id: str
    held: int | None
    dead_letters: int | None  # records in the DLQ topic (replayed or not)
    dead_letters_open: int | None  # not replayed yet
    # The worker's state as its adapters process last published it (adapters.control):
    # running, stopped (a fatal error; reason says which) or disabled (a 410); None: never.
    worker: str | None = None
    worker_reason: str | None = None
    worker_since: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "connector_id": self.connector_id,
            "held": self.held,
            "dead_letters": self.dead_letters,
            "dead_letters_open": self.dead_letters_open,
            "worker": self.worker,
            "worker_reason": self.worker_reason,
            "worker_since": self.worker_since,
        }


@dataclass(frozen=True, slots=True)
class MonitorSnapshot:
    taken_at: datetime
    topic_prefix: str
    rate_window: float | None  # seconds between the two samples behind the rates
    topics: tuple[TopicStatus, ...]
    missing_topics: tuple[str, ...]
    groups: tuple[GroupStatus, ...]
    held: HeldStatus | None = None  # None in a lag-only sample
    invalid: int | None = None
    connectors: tuple[ConnectorStatus, ...] | None = None
    monotonic: float = field(default=0.0, compare=False)  # when taken, for cache ages

    @property
    def has_counts(self) -> bool:
        return self.connectors is not None

    def topics_dict(self) -> dict[str, Any]:
        """What ``GET /ops/topics`` serves: offsets, rates and the per-connector counts."""
        return {
            "taken_at": self.taken_at.isoformat(),
            "topic_prefix": self.topic_prefix,
            "rate_window_seconds": _round(self.rate_window),
            "topics": [t.as_dict() for t in self.topics],
            "missing_topics": list(self.missing_topics),
            "held": self.held.as_dict() if self.held is not None else None,
            "invalid": self.invalid,
            "connectors": (
                [c.as_dict() for c in self.connectors] if self.connectors is not None else None
            ),
        }

    def lag_dict(self) -> dict[str, Any]:
        """What ``GET /ops/lag`` serves: committed offsets and lag per consumer group."""
        return {
            "taken_at": self.taken_at.isoformat(),
            "topic_prefix": self.topic_prefix,
            "total_lag": sum(g.lag for g in self.groups),
            "groups": [g.as_dict() for g in self.groups],
        }

    def as_dict(self) -> dict[str, Any]:
        """The whole snapshot (``statement-router monitor --json``)."""
        doc = self.topics_dict()
        doc.update(
            {k: v for k, v in self.lag_dict().items() if k not in ("taken_at", "topic_prefix")}
        )
        return doc


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


# --- pure computations ------------------------------------------------------------------


def rates(
    previous: Mapping[TopicPartition, int] | None,
    current: Mapping[TopicPartition, int],
    elapsed: float | None,
) -> dict[TopicPartition, float | None]:
    """Records per second per partition between two end-offset samples.

    None where there is no earlier sample of that partition or no time passed. A partition
    whose end offset went *down* (the topic was recreated) has no meaningful rate: None.
    """
    out: dict[TopicPartition, float | None] = {}
    for tp, end in current.items():
        before = None if previous is None else previous.get(tp)
        if before is None or elapsed is None or elapsed <= 0 or end < before:
            out[tp] = None
        else:
            out[tp] = (end - before) / elapsed
    return out


def partition_lag(committed: int | None, start: int, end: int) -> int:
    """Records the group has still to read in a partition.

    Without a commit the group starts at the log start (auto_offset_reset=earliest). A
    commit below the log start (retention deleted unread records) counts from the log start
    too: those records are gone, not pending.
    """
    position = start if committed is None else max(committed, start)
    return max(0, end - position)


def group_role(topics: Topics, group_id: str) -> tuple[str, str | None]:
    """The pipeline role (and connector) a consumer group id belongs to."""
    prefix = topics.prefix
    if group_id == f"{prefix}.router":
        return "router", None
    if group_id == f"{prefix}.router-input":
        return "router", None
    if group_id.startswith(f"{prefix}.adapter."):
        return "adapter", group_id[len(f"{prefix}.adapter.") :]
    if group_id == f"{prefix}.global-file":
        return "global-file", None
    if group_id == f"{prefix}.ledger":
        return "ledger", None
    return "other", None


def latest_by_key(
    records: Iterable[tuple[bytes | None, bytes | None]],
) -> dict[bytes, bytes | None]:
    """Fold a changelog: the last value of each key (None = deleted), in record order."""
    latest: dict[bytes, bytes | None] = {}
    for key, value in records:
        if key is not None:
            latest[key] = value
    return latest


def decode_held(latest: Mapping[bytes, bytes | None]) -> dict[str, list[dict[str, Any]]]:
    """The held table from its folded changelog: IBAN -> its parked entries (non-empty).

    Each record is one held statement keyed ``iban|partition|offset``.
    """
    held: dict[str, list[dict[str, Any]]] = {}
    for key, value in latest.items():
        if value is None:
            continue
        try:
            held_key = json.loads(key)
            entry = json.loads(value)
        except ValueError:
            log.warning("unreadable_held_changelog_record")
            continue
        if isinstance(held_key, str) and held_key.count("|") >= 2 and isinstance(entry, dict):
            held.setdefault(held_key.rsplit("|", 2)[0], []).append(entry)
    return held


def held_status(
    source: str,
    held: Mapping[str, list[dict[str, Any]]] | None,
    connector_of: Mapping[str, str | None],
    audit_events: int | None,
) -> HeldStatus:
    """Counts of the held table; ``held`` None means the changelog does not exist."""
    if held is None:
        return HeldStatus(source, False, None, None, {}, {}, audit_events)
    by_reason: dict[str, int] = {}
    by_connector: dict[str | None, int] = {}
    for iban, entries in held.items():
        connector = connector_of.get(iban)
        by_connector[connector] = by_connector.get(connector, 0) + len(entries)
        for entry in entries:
            reason = str(entry.get("reason") or "unknown")
            by_reason[reason] = by_reason.get(reason, 0) + 1
    current = sum(len(entries) for entries in held.values())
    return HeldStatus(source, True, current, len(held), by_reason, by_connector, audit_events)


# --- collection (broker I/O) ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Offsets:
    counts: dict[str, int]  # partition count per existing monitored topic
    starts: dict[TopicPartition, int]
    ends: dict[TopicPartition, int]

    def records(self, topic: str) -> int | None:
        if topic not in self.counts:
            return None
        return sum(
            max(0, self.ends[TopicPartition(topic, p)] - self.starts[TopicPartition(topic, p)])
            for p in range(self.counts[topic])
        )

    def ends_of(self, *topics: str) -> tuple[tuple[TopicPartition, int], ...]:
        return tuple(sorted((tp, e) for tp, e in self.ends.items() if tp.topic in topics))


class Monitor:
    """Takes snapshots of one topic set; keeps the previous sample for rates and caches.

    One instance per watcher (the CLI's watch loop, an API process): rates compare each
    sample with the previous one taken by the same instance.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topics: Topics,
        connector_ids: Iterable[str],
        *,
        router_app_id: str | None = None,
        timeout: float = _DEFAULT_TIMEOUT,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topics = topics
        self.connector_ids = list(connector_ids)
        self.router_app_id = router_app_id or f"{topics.prefix}.router"
        self.timeout = timeout
        self._previous: tuple[float, dict[TopicPartition, int]] | None = None
        self._held_cache: tuple[Any, HeldStatus] | None = None
        self._dlq_cache: dict[str, tuple[Any, int]] = {}
        self._workers_cache: tuple[Any, Mapping[str, AdapterControl]] | None = None

    @property
    def held_changelog(self) -> str:
        return f"{self.router_app_id}-held-changelog"

    @property
    def state_changelog(self) -> str:
        return f"{self.router_app_id}-iban-state-changelog"

    def monitored_topics(self) -> list[str]:
        """The catalogue's topics, then the router's two table changelogs."""
        names = [spec.name for spec in self.topics.specs(self.connector_ids)]
        return [*names, self.state_changelog, self.held_changelog]

    async def sample(self, *, counts: bool = True) -> MonitorSnapshot:
        """One snapshot; ``counts=False`` skips held/invalid/dead-letter counting.

        Raises BrokerError (BrokerUnavailable when the broker does not answer within the
        monitor's timeout), so a caller never waits longer than that on a dead broker.
        """
        try:
            async with asyncio.timeout(self.timeout):
                return await self._sample(counts)
        except TimeoutError:
            raise BrokerUnavailable(
                f"Kafka at {self.bootstrap_servers} did not answer the monitor within "
                f"{self.timeout:g}s"
            ) from None

    async def _sample(self, counts: bool) -> MonitorSnapshot:
        offsets = await self._offsets()
        now = time.monotonic()
        previous = self._previous
        elapsed = None if previous is None else now - previous[0]
        partition_rates = rates(None if previous is None else previous[1], offsets.ends, elapsed)
        self._previous = (now, dict(offsets.ends))
        catalogue = [spec.name for spec in self.topics.specs(self.connector_ids)]
        topic_rows = tuple(
            TopicStatus(
                name,
                tuple(
                    PartitionStatus(
                        p,
                        offsets.starts[TopicPartition(name, p)],
                        offsets.ends[TopicPartition(name, p)],
                        partition_rates[TopicPartition(name, p)],
                    )
                    for p in range(offsets.counts[name])
                ),
            )
            for name in self.monitored_topics()
            if name in offsets.counts
        )
        missing = tuple(name for name in catalogue if name not in offsets.counts)
        groups = await self._groups(offsets)
        snapshot = MonitorSnapshot(
            taken_at=datetime.now(UTC),
            topic_prefix=self.topics.prefix,
            rate_window=elapsed,
            topics=topic_rows,
            missing_topics=missing,
            groups=groups,
            monotonic=now,
        )
        if not counts:
            return snapshot
        held = await self._held(offsets)
        workers = await self._workers(offsets)
        connectors = []
        for connector_id in self.connector_ids:
            total, still_open = await self._dead_letters(connector_id, offsets)
            worker = workers.get(connector_id)
            connectors.append(
                ConnectorStatus(
                    connector_id,
                    held.by_connector.get(connector_id, 0) if held.available else None,
                    total,
                    still_open,
                    worker.state if worker is not None else None,
                    worker.reason if worker is not None else None,
                    worker.at.isoformat() if worker is not None else None,
                )
            )
        return MonitorSnapshot(
            taken_at=snapshot.taken_at,
            topic_prefix=snapshot.topic_prefix,
            rate_window=snapshot.rate_window,
            topics=snapshot.topics,
            missing_topics=snapshot.missing_topics,
            groups=snapshot.groups,
            held=held,
            invalid=offsets.records(self.topics.invalid),
            connectors=tuple(connectors),
            monotonic=now,
        )

    async def _offsets(self) -> _Offsets:
        wanted = self.monitored_topics()
        counts = await describe_topics(
            self.bootstrap_servers, wanted, request_timeout_ms=int(self.timeout * 1000)
        )
        if not counts:
            return _Offsets({}, {}, {})
        action = "reading offsets for the monitor"
        deadline = asyncio.get_running_loop().time() + self.timeout
        reader = assigned_consumer(
            self.bootstrap_servers, counts, action=action, client_id="statement-router-monitor"
        )
        async with reader as (consumer, partitions), kafka_errors(action, self.bootstrap_servers):
            ends = await true_end_offsets(
                consumer, partitions, deadline=deadline, what="the monitored topics"
            )
            starts: dict[TopicPartition, int] = await consumer.beginning_offsets(partitions)
        return _Offsets(counts, {tp: int(o) for tp, o in starts.items()}, ends)

    @property
    def router_input_group(self) -> str:
        """The group the router commits its input offsets to (both input topics): faust's
        own group, the app id (``routing.router.fencing``)."""
        return self.router_app_id

    def _expected_groups(
        self, committed: Mapping[str, Mapping[TopicPartition, int]]
    ) -> dict[str, list[str]]:
        """The pipeline's own groups and the topics each must consume."""
        del committed
        t = self.topics
        expected: dict[str, list[str]] = {self.router_input_group: [t.iban_state, t.received]}
        for connector_id in self.connector_ids:
            expected[f"{t.prefix}.adapter.{connector_id}"] = [t.partner(connector_id)]
        expected[f"{t.prefix}.global-file"] = [t.global_file]
        expected[f"{t.prefix}.ledger"] = [t.outcomes]
        return expected

    async def _groups(self, offsets: _Offsets) -> tuple[GroupStatus, ...]:
        # Only the catalogue's topics: the changelogs are read by assignment, not by groups.
        catalogue = {spec.name for spec in self.topics.specs(self.connector_ids)}
        partitions = sorted(tp for tp in offsets.ends if tp.topic in catalogue)
        if not partitions:
            return ()
        committed = await self._committed(partitions)
        expected = self._expected_groups(committed)
        rows: list[GroupStatus] = []
        names = list(expected) + sorted(g for g in committed if g not in expected)
        for group_id in names:
            mine = committed.get(group_id, {})
            must = set(expected.get(group_id, ()))
            tps = [tp for tp in partitions if tp.topic in must or tp in mine]
            if not tps:
                continue
            role, connector_id = group_role(self.topics, group_id)
            if group_id in (self.router_app_id, self.router_input_group):
                role = "router"
            rows.append(
                GroupStatus(
                    group_id,
                    role,
                    connector_id,
                    tuple(
                        GroupPartition(
                            tp.topic,
                            tp.partition,
                            mine.get(tp),
                            offsets.ends[tp],
                            partition_lag(mine.get(tp), offsets.starts[tp], offsets.ends[tp]),
                        )
                        for tp in tps
                    ),
                )
            )
        return tuple(rows)

    async def _committed(
        self, partitions: Sequence[TopicPartition]
    ) -> dict[str, dict[TopicPartition, int]]:
        """Committed offsets on ``partitions``, per group that committed any of them.

        The pipeline's groups are asked even when the broker does not list them (Tansu
        lists only groups with stored offsets; a group may also be listed late).
        """
        action = "reading consumer group offsets"
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap_servers,
            client_id="statement-router-monitor",
            request_timeout_ms=int(self.timeout * 1000),
        )
        try:
            async with kafka_errors(action, self.bootstrap_servers):
                await admin.start()
                listed = await admin.list_consumer_groups()
                groups = {str(g[0]) for g in listed if len(g) < 2 or g[1] in ("consumer", "")}
                groups.update(self._expected_groups({}))
                groups.update((self.router_app_id, self.router_input_group))
                ordered = sorted(groups)
                # Bounded: a shared cluster may list hundreds of groups.
                limit = asyncio.Semaphore(_OFFSET_FETCH_CONCURRENCY)

                async def fetch(group_id: str) -> dict[TopicPartition, Any]:
                    async with limit:
                        answer: dict[TopicPartition, Any] = (
                            await admin.list_consumer_group_offsets(
                                group_id, partitions=list(partitions)
                            )
                        )
                        return answer

                answers = await asyncio.gather(*(fetch(g) for g in ordered))
        finally:
            await admin.close()
        committed: dict[str, dict[TopicPartition, int]] = {}
        for group_id, answer in zip(ordered, answers, strict=True):
            mine = {
                TopicPartition(tp.topic, tp.partition): int(meta.offset)
                for tp, meta in answer.items()
                if meta.offset is not None and meta.offset >= 0
            }
            if mine:
                committed[group_id] = mine
        return committed

    async def _held(self, offsets: _Offsets) -> HeldStatus:
        audit = offsets.records(self.topics.held)
        if self.held_changelog not in offsets.counts:
            return held_status(self.held_changelog, None, {}, audit)
        key = (offsets.ends_of(self.held_changelog, self.state_changelog), audit)
        if self._held_cache is not None and self._held_cache[0] == key:
            return self._held_cache[1]
        latest = await _scan_latest(
            self.bootstrap_servers, self.held_changelog, offsets.counts[self.held_changelog],
            timeout=self.timeout,
        )
        held = decode_held(latest)
        connector_of: dict[str, str | None] = {}
        if held and self.state_changelog in offsets.counts:
            wanted = {json.dumps(iban).encode() for iban in held}
            states = await _scan_latest(
                self.bootstrap_servers, self.state_changelog,
                offsets.counts[self.state_changelog], timeout=self.timeout,
                keep=wanted.__contains__,
            )
            for raw_key, value in states.items():
                try:
                    state = json.loads(value) if value is not None else None
                    iban = json.loads(raw_key)
                except ValueError:
                    continue
                if isinstance(state, dict) and isinstance(iban, str):
                    connector = state.get("connector_id")
                    connector_of[iban] = connector if isinstance(connector, str) else None
        status = held_status(self.held_changelog, held, connector_of, audit)
        self._held_cache = (key, status)
        return status

    async def _workers(self, offsets: _Offsets) -> Mapping[str, AdapterControl]:
        """Each connector's worker state, from the adapters' control topic (cached until
        the topic grows)."""
        topic = self.topics.adapters_control
        if not offsets.records(topic):
            return {}
        key = offsets.ends_of(topic)
        if self._workers_cache is not None and self._workers_cache[0] == key:
            return self._workers_cache[1]
        states = worker_states(await read_control(self.bootstrap_servers, self.topics))
        self._workers_cache = (key, states)
        return states

    async def _dead_letters(
        self, connector_id: str, offsets: _Offsets
    ) -> tuple[int | None, int | None]:
        dlq = self.topics.partner_dlq(connector_id)
        total = offsets.records(dlq)
        if total is None:
            return None, None
        if total == 0:
            return 0, 0
        key = offsets.ends_of(dlq, self.topics.outcomes)
        cached = self._dlq_cache.get(connector_id)
        if cached is not None and cached[0] == key:
            return total, cached[1]
        entries = await list_dead_letters(self.bootstrap_servers, self.topics, connector_id)
        still_open = sum(1 for e in entries if e.open)
        self._dlq_cache[connector_id] = (key, still_open)
        return total, still_open


async def _scan_latest(
    bootstrap_servers: str,
    topic: str,
    partitions: int,
    *,
    timeout: float,  # noqa: ASYNC109 - bounds the scan, named in ReadTimeout
    keep: Callable[[bytes], bool] | None = None,
) -> dict[bytes, bytes | None]:
    """The last value of each key of a changelog, up to the end offsets seen on entry.

    Unlike ``read_topic`` it never holds the whole topic: records are folded as they come,
    and ``keep`` filters keys before anything is decoded (the IBAN-state changelog can hold
    a million IBANs, of which a few have held statements).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    action = f"reading {topic} for the monitor"
    latest: dict[bytes, bytes | None] = {}
    # read_committed: a held entry of an aborted transaction (exactly-once) is not held.
    reader = assigned_consumer(
        bootstrap_servers,
        {topic: partitions},
        action=action,
        client_id="statement-router-monitor",
        isolation_level="read_committed",
    )
    async with reader as (consumer, tps), kafka_errors(action, bootstrap_servers):
        ends = await true_end_offsets(consumer, tps, deadline=deadline, what=topic)
        await consumer.seek_to_beginning(*tps)
        pending = {tp for tp in tps if await consumer.position(tp) < ends[tp]}
        while pending:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ReadTimeout(f"reading {topic} for the monitor did not finish in time")
            batch = await consumer.getmany(
                *pending, timeout_ms=max(1, int(min(remaining, 1.0) * 1000))
            )
            for tp, records in batch.items():
                for record in records:
                    if record.offset >= ends[tp] or record.key is None:
                        continue
                    if keep is None or keep(record.key):
                        latest[record.key] = record.value
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
    return latest


# --- a shared, cached monitor for a server process --------------------------------------


class MonitorService:
    """One Monitor shared by a process's HTTP routes and its Prometheus collector.

    Requests within ``max_age`` seconds of the last sample share it (an operator's
    dashboard polling every second does not hammer the broker), and concurrent callers
    wait for one sample instead of taking one each. ``refresh_soon`` never blocks: the
    Prometheus collector calls it from ``collect()``, which must not wait on a broker that
    may be down, so it schedules a sample on the event loop and reports the last one.
    """

    def __init__(self, monitor: Monitor, *, max_age: float = 5.0) -> None:
        self.monitor = monitor
        self.max_age = max_age
        self.latest: MonitorSnapshot | None = None
        self.last_error: BrokerError | None = None
        self._lock: asyncio.Lock | None = None
        # The loop refreshes run in: /metrics is served from a worker thread, which has none.
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        self._task: asyncio.Task[None] | None = None
        self._guard = threading.Lock()

    def _fresh(self, counts: bool) -> MonitorSnapshot | None:
        snap = self.latest
        if snap is None or (counts and not snap.has_counts):
            return None
        if time.monotonic() - snap.monotonic > self.max_age:
            return None
        return snap

    async def snapshot(self, *, counts: bool = True) -> MonitorSnapshot:
        """A snapshot at most ``max_age`` old; raises BrokerError when none can be taken."""
        self._loop = asyncio.get_running_loop()
        if self._lock is None:
            self._lock = asyncio.Lock()
        cached = self._fresh(counts)
        if cached is not None:
            return cached
        async with self._lock:
            cached = self._fresh(counts)
            if cached is not None:
                return cached
            try:
                snap = await self.monitor.sample(counts=counts)
            except BrokerError as exc:
                self.last_error = exc
                raise
            self.latest, self.last_error = snap, None
            return snap

    def refresh_soon(self) -> None:
        """Schedule a lag-only sample if the last one is stale; return at once.

        Safe from any thread: from the event loop's own thread (a /metrics route) the
        sample is a task; from another thread (prometheus_client's HTTP server) it is
        handed to the loop the service last ran in. Without a known loop it does nothing.
        """
        if self._fresh(False) is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            self._start_refresh()
        elif self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._start_refresh)

    def _start_refresh(self) -> None:
        with self._guard:
            if self._task is not None and not self._task.done():
                return
            self._task = asyncio.get_running_loop().create_task(self._refresh())

    async def _refresh(self) -> None:
        try:
            await self.snapshot(counts=False)
        except BrokerError as exc:
            log.warning("monitor_refresh_failed", error=exc.message)

    async def wait_refreshed(self) -> None:
        """Wait for a scheduled refresh to finish (tests, shutdown)."""
        task = self._task
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    async def aclose(self) -> None:
        """Cancel a refresh in flight; the service holds no connection between samples."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


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


def monitor_service(
    bootstrap_servers: str,
    topics: Topics,
    connector_ids: Iterable[str],
    *,
    max_age: float = 5.0,
) -> MonitorService:
    """The shared monitor of a server process (its /ops routes and its /metrics)."""
    return MonitorService(Monitor(bootstrap_servers, topics, connector_ids), max_age=max_age)


LAG_COLLECTOR_KEY = "consumer_lag"


def serve_lag_metrics(
    bootstrap_servers: str | None,
    topics: Topics,
    connector_ids: Iterable[str],
) -> MonitorService | None:
    """The API process's monitor, with its lag collector registered on ``routing.metrics``.

    Call it where the API app is built, inside the running loop, and hand the result to
    ``ops_router(monitor=...)`` so ``/ops/*`` and ``/metrics`` share samples. Without a
    broker there is nothing to watch: the collector is removed and None is returned.
    """
    from routing.metrics import register_collector, unregister_collector

    if not bootstrap_servers:
        unregister_collector(LAG_COLLECTOR_KEY)
        return None
    service = monitor_service(bootstrap_servers, topics, connector_ids)
    register_collector(LAG_COLLECTOR_KEY, ConsumerLagCollector(service))
    return service
