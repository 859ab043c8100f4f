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
* **dead letters** per connector: records in ``statements.partner.<id>.dlq`` (offsets),
  and how many are still *open* (not replayed): the DLQ's records less the places that
  ``replayed`` outcomes name, which the delivery ledger (SQL) answers in one indexed query
  (``DeadLetterLedger``) — the same rule the ``dlq`` command and ``/ops/dlq`` apply by
  reading the topics, without reading ``deliveries.outcomes`` on every refresh. Without
  a ledger the open count is unknown (null).

A refresh of the lag and the dead letters costs offset queries and one SQL query, whatever
the topics hold. Reading the two changelogs (held) and the small compacted control topic
(worker states) costs a scan; their results are cached until those topics' end offsets
move, and the lag-only sample (``counts=False``, what the Prometheus collector uses) skips
them entirely.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from events.schemas import AdapterControl
from events.topics import Topics
from routing.broker.adapters_control import read_control, worker_states
from routing.broker.admin import describe_topics
from routing.broker.errors import (
    COORDINATOR_NOT_READY,
    BrokerUnavailable,
    ReadTimeout,
    kafka_errors,
)
from routing.broker.topic_reader import assigned_consumer, true_end_offsets
from routing.observability.monitor.model import (
    ConnectorStatus,
    DeadLetterLedger,
    DeadLetterPlace,
    GroupPartition,
    GroupStatus,
    HeldStatus,
    MonitorSnapshot,
    PartitionStatus,
    TopicStatus,
    group_role,
    held_status,
    open_dead_letters,
    partition_lag,
    rates,
)
from routing.store.errors import StoreError

log = structlog.get_logger("routing.monitor")

__all__ = ["Monitor"]

_DEFAULT_TIMEOUT = 10.0
_OFFSET_FETCH_CONCURRENCY = 16


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
        ledger: DeadLetterLedger | None = None,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topics = topics
        # A live ``Catalogue`` (a Collection) is kept as is and read at each sample, so a
        # connector added to the connectors file shows with its topics and group without a
        # restart of the API; a one-shot iterable is read once.
        self._connector_ids: Collection[str] = (
            connector_ids if isinstance(connector_ids, Collection) else list(connector_ids)
        )
        self.router_app_id = router_app_id or topics.group("router")
        self.timeout = timeout
        self._previous: tuple[float, dict[TopicPartition, int]] | None = None
        self._held_cache: tuple[Any, HeldStatus] | None = None
        self._held_fold = _Fold(self.held_changelog)
        self._state_fold = _Fold(self.state_changelog)
        self.ledger = ledger
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

    @property
    def connector_ids(self) -> list[str]:
        """The connectors watched now (the catalogue's, as it stands)."""
        return list(self._connector_ids)

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
        topic_counts = await describe_topics(
            self.bootstrap_servers, self.monitored_topics(),
            request_timeout_ms=int(self.timeout * 1000),
        )
        # Only the catalogue's topics: the changelogs are read by assignment, not by groups.
        names = {spec.name for spec in self.topics.specs(self.connector_ids)}
        partitions = sorted(
            TopicPartition(topic, p)
            for topic, count in topic_counts.items() if topic in names for p in range(count)
        )
        # The end offsets and the groups' commits are independent reads: one round trip.
        # Should the commits fail, the offsets' read is cancelled, not left running.
        reading = asyncio.ensure_future(self._offsets(topic_counts))
        try:
            committed = await (self._committed(partitions) if partitions else _none())
        except BaseException:
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)
            raise
        offsets = await reading
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
        groups = self._groups(offsets, partitions, committed)
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
        replayed = await self._replayed(offsets)
        connectors = []
        for connector_id in self.connector_ids:
            total, still_open = self._dead_letters(connector_id, offsets, replayed)
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

    async def _offsets(self, counts: dict[str, int]) -> _Offsets:
        if not counts:
            return _Offsets({}, {}, {})
        action = "reading offsets for the monitor"
        deadline = asyncio.get_running_loop().time() + self.timeout
        reader = assigned_consumer(
            self.bootstrap_servers, counts, action=action, client_id="statement-router-monitor"
        )
        async with reader as (consumer, partitions), kafka_errors(action, self.bootstrap_servers):
            starts: dict[TopicPartition, int] = await consumer.beginning_offsets(partitions)
            listed: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
            # Only the partitions holding records are probed for their true end: a fetch
            # that also names an empty partition waits out fetch_max_wait on Tansu.
            empty = [tp for tp in partitions if listed[tp] <= starts[tp]]
            consumer.pause(*empty)
            busy = [tp for tp in partitions if listed[tp] > starts[tp]]
            ends = await true_end_offsets(
                consumer, busy, deadline=deadline, what="the monitored topics"
            )
            ends.update({tp: int(listed[tp]) for tp in empty})
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
            expected[t.group("adapter", connector_id)] = [t.partner(connector_id)]
        expected[t.group("global-file")] = [t.global_file]
        # The ledger derives "routed" and "held" from the router's events, so it reads
        # them too (routing.services.ledger): its lag counts them.
        expected[t.group("ledger")] = [
            *t.ledger_reads, *(t.partner(c) for c in self.connector_ids)
        ]
        return expected

    def _groups(
        self,
        offsets: _Offsets,
        partitions: Sequence[TopicPartition],
        committed: Mapping[str, Mapping[TopicPartition, int]],
    ) -> tuple[GroupStatus, ...]:
        if not partitions:
            return ()
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
                known = {str(g[0]) for g in listed}
                groups = {str(g[0]) for g in listed if len(g) < 2 or g[1] in ("consumer", "")}
                groups.update(self._expected_groups({}))
                groups.update((self.router_app_id, self.router_input_group))
                ordered = sorted(groups)
                # Bounded: a shared cluster may list hundreds of groups.
                limit = asyncio.Semaphore(_OFFSET_FETCH_CONCURRENCY)

                async def fetch(group_id: str) -> dict[TopicPartition, Any]:
                    async with limit:
                        try:
                            answer: dict[TopicPartition, Any] = (
                                await admin.list_consumer_group_offsets(
                                    group_id, partitions=list(partitions)
                                )
                            )
                        except COORDINATOR_NOT_READY:
                            # A fresh Kafka node has no group coordinator before its
                            # offsets topic exists: a group it does not list never
                            # committed. A listed one's coordinator is moving: retry later.
                            if group_id in known:
                                raise
                            return {}
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
            self._held_fold = _Fold(self.held_changelog)
            return held_status(self.held_changelog, None, {}, audit)
        key = (offsets.ends_of(self.held_changelog, self.state_changelog), audit)
        if self._held_cache is not None and self._held_cache[0] == key:
            return self._held_cache[1]
        await self._held_fold.advance(self, offsets, _held_value)
        held: dict[str, list[dict[str, Any]]] = {}
        for iban, reason in self._held_fold.values.values():
            held.setdefault(iban, []).append({"reason": reason})
        connector_of: dict[str, str | None] = {}
        if held and self.state_changelog in offsets.counts:
            wanted = {json.dumps(iban).encode() for iban in held}
            fold = self._state_fold
            new = wanted - fold.looked_up
            fold.looked_up = wanted
            for gone in set(fold.values) - wanted:
                del fold.values[gone]
            if new and not fold.must_restart(offsets):
                # IBANs held for the first time: their state may be anywhere in the
                # changelog, so look them (and only them) up from its start.
                await _Fold(self.state_changelog).advance(
                    self, offsets, _connector_value, keep=new.__contains__, into=fold.values)
            await fold.advance(self, offsets, _connector_value, keep=wanted.__contains__)
            for raw_key in wanted:
                connector = fold.values.get(raw_key)
                connector_of[json.loads(raw_key)] = (
                    connector if isinstance(connector, str) else None
                )
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

    async def _replayed(
        self, offsets: _Offsets
    ) -> Mapping[str, frozenset[DeadLetterPlace]] | None:
        """The replayed DLQ places of the connectors that have dead letters (one query);
        None when the ledger cannot answer."""
        if self.ledger is None:
            return {}
        dlqs = {
            cid: self.topics.partner_dlq(cid)
            for cid in self.connector_ids
            if offsets.records(self.topics.partner_dlq(cid))
        }
        if not dlqs:
            return {}
        try:
            return await self.ledger.replayed_dead_letters(dlqs)
        except StoreError as exc:
            # The broker's half of the snapshot is still true: show the open count as
            # unknown rather than fail the whole sample.
            log.warning("monitor_ledger_unavailable", error=exc.message)
            return None

    def _dead_letters(
        self,
        connector_id: str,
        offsets: _Offsets,
        replayed: Mapping[str, frozenset[DeadLetterPlace]] | None,
    ) -> tuple[int | None, int | None]:
        dlq = self.topics.partner_dlq(connector_id)
        total = offsets.records(dlq)
        if total is None:
            return None, None
        if total == 0:
            return 0, 0
        if self.ledger is None or replayed is None:
            return total, None
        partitions = range(offsets.counts[dlq])
        return total, open_dead_letters(
            total,
            replayed.get(connector_id, frozenset()),
            {p: offsets.starts[TopicPartition(dlq, p)] for p in partitions},
            {p: offsets.ends[TopicPartition(dlq, p)] for p in partitions},
        )


_FOLD_MAX_AGE = 3600.0


def _held_value(key: bytes, value: bytes) -> tuple[str, str] | None:
    """A held changelog record as (IBAN, reason); None if unreadable (logged)."""
    try:
        held_key = json.loads(key)
        entry = json.loads(value)
    except ValueError:
        log.warning("unreadable_held_changelog_record")
        return None
    if not (isinstance(held_key, str) and held_key.count("|") >= 2 and isinstance(entry, dict)):
        log.warning("unreadable_held_changelog_record")
        return None
    return held_key.rsplit("|", 2)[0], str(entry.get("reason") or "unknown")


def _connector_value(key: bytes, value: bytes) -> str | None:
    """An IBAN-state changelog record as the connector its IBAN is bound to (or None)."""
    del key
    try:
        state = json.loads(value)
    except ValueError:
        return None
    connector = state.get("connector_id") if isinstance(state, dict) else None
    return connector if isinstance(connector, str) else None


@dataclass(slots=True)
class _Fold:
    """A changelog folded as it grows: the last value of each key, read once.

    Each refresh reads only the records written since the previous one, from the
    positions it stopped at, so counting held statements costs what changed, not the
    changelog's size. It starts over from the log start when it cannot go on: the first
    time, when records it never read were deleted (retention), when the topic was
    recreated (an end below its position), and once an hour, so that a compacted-away
    tombstone it never saw (after ``delete.retention.ms``, a day by default) cannot keep
    a released statement counted.
    """

    topic: str
    values: dict[bytes, Any] = field(default_factory=dict)
    positions: dict[TopicPartition, int] = field(default_factory=dict)
    looked_up: set[bytes] = field(default_factory=set)  # keys a filtered fold keeps
    started: float | None = None

    def must_restart(self, offsets: _Offsets) -> bool:
        tps = [TopicPartition(self.topic, p) for p in range(offsets.counts[self.topic])]
        if self.started is None or time.monotonic() - self.started > _FOLD_MAX_AGE:
            return True
        if set(tps) != set(self.positions):
            return True
        return any(
            offsets.starts[tp] > self.positions[tp] or offsets.ends[tp] < self.positions[tp]
            for tp in tps
        )

    async def advance(
        self,
        monitor: Monitor,
        offsets: _Offsets,
        project: Callable[[bytes, bytes], Any],
        *,
        keep: Callable[[bytes], bool] | None = None,
        into: dict[bytes, Any] | None = None,
    ) -> None:
        """Fold the records written since the last call (all of them the first time).

        ``project`` turns a value into what is kept (None: drop the key); ``keep``
        filters keys before anything is decoded (the IBAN-state changelog may hold a
        million IBANs, of which a few have held statements); ``into``: fold into that
        dict instead of ``values`` (a one-off lookup).
        """
        values = self.values if into is None else into
        if self.must_restart(offsets):
            if into is None:
                values.clear()
            self.positions = {}
            self.started = time.monotonic()
        elif all(offsets.ends[tp] == end for tp, end in self.positions.items()):
            return  # nothing written since: not even a connection
        self.positions = await _read_from(
            monitor.bootstrap_servers, self.topic, offsets.counts[self.topic], self.positions,
            timeout=monitor.timeout, fold=values, project=project, keep=keep,
        )


async def _none() -> dict[str, dict[TopicPartition, int]]:
    return {}


async def _read_from(
    bootstrap_servers: str,
    topic: str,
    partitions: int,
    positions: Mapping[TopicPartition, int],
    *,
    timeout: float,  # noqa: ASYNC109 - bounds the read, named in ReadTimeout
    fold: dict[bytes, Any],
    project: Callable[[bytes, bytes], Any],
    keep: Callable[[bytes], bool] | None,
) -> dict[TopicPartition, int]:
    """Fold ``topic``'s records from ``positions`` (the log start where absent) up to the
    end offsets seen on entry; returns those ends, where the next read starts.

    Unlike ``read_topic`` it never holds the records: they are folded as they come.
    A partition already at its end costs no fetch.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    action = f"reading {topic} for the monitor"
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
        starts: dict[TopicPartition, int] = await consumer.beginning_offsets(tps)
        pending: set[TopicPartition] = set()
        for tp in tps:
            position = max(positions.get(tp, starts[tp]), starts[tp])
            if position < ends[tp]:
                consumer.seek(tp, position)
                pending.add(tp)
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
                    if keep is not None and not keep(record.key):
                        continue
                    kept = None if record.value is None else project(record.key, record.value)
                    if kept is None:
                        fold.pop(record.key, None)
                    else:
                        fold[record.key] = kept
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
    return dict(ends)
