"""The monitor's snapshot model and its pure computations: no broker, no database.

Kept apart from the sampler (``routing.observability.monitor.sampler``) so that the
arithmetic (rates, lag, held counts, open dead letters) is tested on hand-made values,
and so the view, the API and the console depend on plain data only.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import structlog
from aiokafka.structs import TopicPartition

from events.topics import Topics

log = structlog.get_logger("routing.monitor")

__all__ = [
    "ConnectorStatus",
    "DeadLetterLedger",
    "GroupPartition",
    "GroupStatus",
    "HeldStatus",
    "MonitorSnapshot",
    "PartitionStatus",
    "TopicStatus",
    "decode_held",
    "group_role",
    "held_status",
    "latest_by_key",
    "open_dead_letters",
    "partition_lag",
    "rates",
]

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
    router = topics.group("router")
    if group_id in (router, f"{router}-input"):
        return "router", None
    adapters = topics.group("adapter", "")  # every connector's group starts with it
    if group_id.startswith(adapters):
        return "adapter", group_id[len(adapters) :]
    if group_id == topics.group("global-file"):
        return "global-file", None
    if group_id == topics.group("ledger"):
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



DeadLetterPlace = tuple[int, int]
"""A dead letter's place in its DLQ topic: (partition, offset)."""


class DeadLetterLedger(Protocol):
    """What the monitor asks the delivery ledger (``SqlDeliveryLedger`` is one).

    The ledger records every ``replayed`` outcome, whose ``detail`` names the DLQ places
    it closed (``events.dead_letters``); asking it costs one indexed query whatever the
    number of outcomes, where reading ``deliveries.outcomes`` grew with the topic.
    """

    async def replayed_dead_letters(
        self, dlq_topics: Mapping[str, str]
    ) -> dict[str, frozenset[DeadLetterPlace]]:
        """Per connector id, the DLQ places (of ``dlq_topics[connector_id]``) replayed."""
        ...


def open_dead_letters(
    total: int,
    replayed: Collection[DeadLetterPlace],
    starts: Mapping[int, int],
    ends: Mapping[int, int],
) -> int:
    """Dead letters still open: the DLQ's retained records less the replayed places.

    The same rule as ``dlq list`` and ``/ops/dlq`` (``adapters.dlq``): a dead letter is one
    record of the DLQ topic, open until a ``replayed`` outcome names its place. A place is
    only subtracted while the topic still holds it (``starts[p] <= offset < ends[p]``), so a
    dead letter that retention deleted is neither counted nor subtracted.
    """
    closed = sum(
        1
        for partition, offset in set(replayed)
        if partition in ends and starts.get(partition, 0) <= offset < ends[partition]
    )
    return max(0, total - closed)
