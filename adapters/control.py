"""The adapters' control topic, ``<prefix>.adapters.control`` (``adapter.control/v1``).

Why a topic: the adapters process, the CLI and the operator API share nothing but the
broker (in production they run in different containers, possibly on different hosts, and
several adapters processes may split the connectors between them). A compacted topic
keyed by what it describes carries three things:

* ``enable/<connector>``: the CLI (``statement-router adapters enable``) and the API
  (``POST /ops/connectors/{id}/enable``) ask for a connector's worker to be restarted.
  Every adapters process reads the topic from its end (no consumer group: each must see
  every command) and acts on the connectors it runs. A command sent while no process
  runs the connector is moot: a starting process starts every worker anyway;
* ``state/<connector>``: each worker's state (``running``, ``stopped`` with the error,
  ``disabled`` after a 410), written by its process on every change, read by ``monitor``
  and ``/ops/topics``;
* ``crash/<connector>/<partition>``: the crash count of the record a worker is on
  (``adapters.worker``, ``ADAPTER_MAX_CRASHES``). Kept here rather than in the consumer
  group's commit metadata because the embedded broker (Tansu) does not keep commit
  metadata, and here rather than in the database because the adapters use no database.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from events.schemas import AdapterControl, AdapterControlKind, WorkerState
from events.topics import Topics
from events.wire import InvalidEvent, decode
from routing.broker import ProducerParams, make_producer, require_topics
from routing.broker.adapters_control import read_control
from routing.broker.errors import kafka_errors

__all__ = [
    "CrashMark",
    "control_key",
    "crash_marks",
    "enabled_reason",
    "listen_for_enable",
    "read_control",
    "request_enable",
    "wait_for_running",
]

log = structlog.get_logger("adapters.control")

CrashMark = tuple[int, int]
"""(offset, crashes): the record at ``offset`` was started ``crashes`` times, unfinished."""


def control_key(kind: AdapterControlKind, connector_id: str, partition: int | None = None) -> bytes:
    short = {"enable": "enable", "worker_state": "state", "crash_count": "crash"}[kind]
    key = f"{short}/{connector_id}"
    return (key if partition is None else f"{key}/{partition}").encode()


def now() -> datetime:
    return datetime.now(UTC)


def crash_marks(records: list[AdapterControl], connector_id: str) -> dict[int, CrashMark]:
    """The newest crash mark per partition of a connector."""
    marks: dict[int, tuple[datetime, CrashMark]] = {}
    for record in records:
        if (record.kind != "crash_count" or record.connector_id != connector_id
                or record.partition is None or record.offset is None):
            continue
        old = marks.get(record.partition)
        if old is None or record.at >= old[0]:
            marks[record.partition] = (record.at, (record.offset, record.crashes or 0))
    return {partition: mark for partition, (_, mark) in marks.items()}


async def send_control(producer: AIOKafkaProducer, topics: Topics, record: AdapterControl) -> None:
    """Write one control record and wait for the broker's ack."""
    key = control_key(record.kind, record.connector_id, record.partition)
    await (await producer.send(topics.adapters_control, record.to_json(), key=key))


def enabled_reason(command: AdapterControl) -> str:
    """The ``reason`` of the ``running`` state that answers an enable command: it names the
    command's own time, so its sender recognises the answer whatever the hosts' clocks."""
    return f"enabled ({command.requested_by or 'operator'}, request of {command.at.isoformat()})"


def state_record(connector_id: str, state: WorkerState, reason: str | None) -> AdapterControl:
    return AdapterControl(kind="worker_state", connector_id=connector_id, at=now(),
                          state=state, reason=reason)


def crash_record(connector_id: str, partition: int, offset: int, crashes: int,
                 reason: str | None = None) -> AdapterControl:
    return AdapterControl(kind="crash_count", connector_id=connector_id, at=now(),
                          partition=partition, offset=offset, crashes=crashes, reason=reason)


async def request_enable(
    bootstrap_servers: str, topics: Topics, connector_id: str, *, requested_by: str
) -> AdapterControl:
    """Publish an ``enable`` command; the adapters process running the connector acts on it."""
    await require_topics(bootstrap_servers, [topics.adapters_control])
    command = AdapterControl(kind="enable", connector_id=connector_id, at=now(),
                             requested_by=requested_by)
    producer = make_producer(ProducerParams(bootstrap_servers, client_id="adapters-enable"))
    async with kafka_errors(f"asking to enable {connector_id}", bootstrap_servers):
        await producer.start()
        try:
            await send_control(producer, topics, command)
        finally:
            await producer.stop()
    log.info("connector_enable_requested", connector_id=connector_id,
             requested_by=requested_by)
    return command


async def listen_for_enable(
    bootstrap_servers: str, topics: Topics, connector_ids: Mapping[str, object],
    ready: asyncio.Event | None = None,
) -> AsyncIterator[AdapterControl]:
    """Yield each ``enable`` command for ``connector_ids``, from now on.

    Assigned to every partition at its end (no group: every process sees every command).
    """
    topic = topics.adapters_control
    counts = await require_topics(bootstrap_servers, [topic])
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False,
                                client_id="adapters-control", auto_offset_reset="latest")
    async with kafka_errors("reading the adapters' control topic", bootstrap_servers):
        await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(counts[topic])]
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        for tp in partitions:  # resolve the end now: a command sent after ``ready`` counts
            await consumer.position(tp)
        if ready is not None:
            ready.set()
        while True:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    if record.value is None:
                        continue
                    try:
                        command = decode(record.value, AdapterControl, where=topic)
                    except InvalidEvent:
                        continue
                    if command.kind == "enable" and command.connector_id in connector_ids:
                        yield command
    finally:
        await consumer.stop()


async def wait_for_running(
    bootstrap_servers: str, topics: Topics, command: AdapterControl, *, within: float
) -> AdapterControl | None:
    """The worker state published after ``command`` (its worker's restart), or None if no
    adapters process reported one within ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        answer = enabled_reason(command)
        for state in await read_control(bootstrap_servers, topics):
            if (state.kind == "worker_state" and state.connector_id == command.connector_id
                    and state.state == "running" and state.reason == answer):
                return state
        if loop.time() >= deadline:
            return None
        await asyncio.sleep(0.5)
