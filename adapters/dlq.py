"""Dead letters: list them, and replay them to the partner through the normal path.

**Replay** re-publishes the dead letter's original ``statement.partner-delivery/v1``, byte
for byte, to ``statements.partner.<id>`` keyed by its IBAN, then writes a ``replayed``
outcome. The connector's worker delivers it like any other statement, with the same
statement id, so the partner gets the same idempotency key (``webhook-id``, file name).
The delivery goes first and the outcome second: a crash between the two can only cause
a second replay later (absorbed by the idempotency key), never a dead letter marked
replayed that was not.

**What "already replayed" means.** A dead letter is identified by its place in the DLQ
topic (partition and offset). Replaying writes a ``replayed`` outcome whose ``detail``
names those places (``replayed from <dlq topic> dead letter(s) 0@12, 2@7``). A dead letter
is *open* until such an outcome exists; ``replay`` only takes open ones, so replaying
twice replays nothing the second time, and a statement that fails again after its replay
gets a new, open dead letter. Two replays racing (two operators at the same second) can
both publish: the partner then sees a duplicate with the same idempotency key, which
at-least-once already allows. ``force`` replays a closed dead letter again on purpose.

The price of this simple, broker-only approach: finding the markers reads the outcomes
topic (the DLQ itself is small). That is fine for the embedded mode and moderate
volumes; at production volume the delivery ledger, which consumes the same outcomes,
is the place to answer it.

A statement dead-lettered twice while open (a crash between its dead letter and the
commit) is replayed once, and that one outcome closes both places. "A statement" is its
account, id and content (its statement key, ``routing.domain.identity``): two accounts'
statements that share an id are two statements, each replayed with its own delivery.

**Parked dead letters** (``parked`` instead of ``delivery``: the copy could not be written,
or the worker crashed on the record ``ADAPTER_MAX_CRASHES`` times) refer to the record in
the partner topic. Replay re-reads it there, by partition and offset, and re-publishes its
value byte for byte, like a copy. If the topic no longer holds it (retention deleted it),
replaying that statement fails with ``RecordGone``, which says so plainly; ``--all`` skips
such dead letters and reports them (``gone``), leaving them open.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from aiokafka.structs import TopicPartition

from events.dead_letters import replay_detail, replayed_places
from events.schemas import (
    DeliveryOutcome,
    ParkedRecord,
    StatementDeadLetter,
    StatementPartnerDelivery,
)
from events.topics import Topics
from events.wire import InvalidEvent, decode
from routing.broker import ProducerParams, make_producer, read_topic, require_topics
from routing.broker.errors import kafka_errors
from routing.broker.topic_reader import assigned_consumer
from routing.domain.iban import mask_iban
from routing.domain.identity import statement_key

log = structlog.get_logger("adapters.dlq")

_READ_TIMEOUT = 60.0


class DeadLetterError(Exception):
    """A replay that cannot be done as asked; ``code`` says why (for the CLI and the API)."""

    code = "dead_letter_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NoSuchDeadLetter(DeadLetterError):
    code = "dead_letter_not_found"


class AlreadyReplayed(DeadLetterError):
    code = "already_replayed"


class RecordGone(DeadLetterError):
    """A parked dead letter whose record the partner topic no longer holds."""

    code = "dead_letter_record_gone"


@dataclass(frozen=True, slots=True)
class DeadLetterEntry:
    """One record of a connector's DLQ topic, and whether it was replayed since."""

    partition: int
    offset: int
    letter: StatementDeadLetter
    replayed_at: datetime | None = None

    @property
    def statement_id(self) -> str:
        return self.letter.statement_id

    @property
    def key(self) -> str:
        """The statement key: which statement, when two share an id (a parked dead letter
        carries it, its delivery not being copied)."""
        delivery = self.letter.delivery
        if delivery is not None:
            return statement_key(delivery.iban, delivery.statement_id, delivery.content_sha256)
        assert self.letter.parked is not None
        return self.letter.parked.key

    @property
    def open(self) -> bool:
        return self.replayed_at is None

    def summary(self) -> dict[str, Any]:
        """What an operator lists: no statement content, the IBAN masked."""
        last = self.letter.attempts[-1] if self.letter.attempts else None
        delivery, parked = self.letter.delivery, self.letter.parked
        if delivery is not None:
            iban, cabinet_id = mask_iban(delivery.iban), delivery.cabinet_id
        else:
            assert parked is not None
            iban, cabinet_id = parked.iban or "", parked.cabinet_id or ""
        return {
            "statement_id": self.statement_id,
            "key": self.key,
            "iban": iban,
            "cabinet_id": cabinet_id,
            "reason": self.letter.reason,
            "attempts": len(self.letter.attempts),
            "last_status_code": last.status_code if last else None,
            "dead_lettered_at": self.letter.dead_lettered_at.isoformat(),
            "partition": self.partition,
            "offset": self.offset,
            "replayed_at": self.replayed_at.isoformat() if self.replayed_at else None,
            "parked": (
                {"topic": parked.topic, "partition": parked.partition, "offset": parked.offset,
                 "payload_bytes": parked.payload_bytes}
                if parked is not None else None
            ),
        }


@dataclass(frozen=True, slots=True)
class ReplayReport:
    connector_id: str
    replayed: list[str]
    dead_letters: int
    gone: list[str] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "connector_id": self.connector_id,
            "replayed": self.replayed,
            "count": len(self.replayed),
            "dead_letters_closed": self.dead_letters,
            "gone": list(self.gone or []),
        }


async def _replay_markers(
    bootstrap_servers: str, topics: Topics, connector_id: str
) -> dict[tuple[int, int], datetime]:
    """DLQ places already replayed, with when, from the ``replayed`` outcomes."""
    dlq = topics.partner_dlq(connector_id)
    markers: dict[tuple[int, int], datetime] = {}
    for record in await read_topic(bootstrap_servers, topics.outcomes, timeout=_READ_TIMEOUT):
        if not record.value or b'"replayed"' not in record.value:
            continue  # cheap filter before parsing: most outcomes are not replays
        try:
            outcome = decode(record.value, DeliveryOutcome, where=topics.outcomes)
        except InvalidEvent:
            continue
        if outcome.outcome != "replayed" or outcome.connector_id != connector_id:
            continue
        for place in replayed_places(outcome.detail, dlq):
            markers.setdefault(place, outcome.at)
    return markers


async def list_dead_letters(
    bootstrap_servers: str, topics: Topics, connector_id: str
) -> list[DeadLetterEntry]:
    """Every dead letter of the connector, oldest first per partition, with its status."""
    dlq = topics.partner_dlq(connector_id)
    records = await read_topic(bootstrap_servers, dlq, timeout=_READ_TIMEOUT)
    markers = await _replay_markers(bootstrap_servers, topics, connector_id)
    entries: list[DeadLetterEntry] = []
    for record in records:
        try:
            letter = decode(record.value, StatementDeadLetter, where=dlq)
        except InvalidEvent as exc:
            # Only our workers write here; an unreadable record is a bug worth shouting about.
            log.error("unreadable_dead_letter", topic=dlq, partition=record.partition,
                      offset=record.offset, error=exc.reason)
            continue
        place = (record.partition, record.offset)
        entries.append(DeadLetterEntry(record.partition, record.offset, letter,
                                       markers.get(place)))
    return entries


def _select(
    entries: list[DeadLetterEntry], statement_ids: Collection[str] | None, force: bool
) -> dict[tuple[str, str], list[DeadLetterEntry]]:
    """The dead letters to replay, grouped by statement (id and key), in DLQ order."""
    chosen: dict[tuple[str, str], list[DeadLetterEntry]] = {}
    if statement_ids is None:
        for entry in entries:
            if entry.open:
                chosen.setdefault((entry.statement_id, entry.key), []).append(entry)
        return chosen
    for sid in statement_ids:
        mine = [e for e in entries if e.statement_id == sid]
        if not mine:
            raise NoSuchDeadLetter(f"statement {sid} has no dead letter on this connector")
        open_ones = [e for e in mine if e.open]
        if open_ones:
            for entry in open_ones:
                chosen.setdefault((sid, entry.key), []).append(entry)
        elif force:
            for key in dict.fromkeys(e.key for e in mine):
                chosen[(sid, key)] = [[e for e in mine if e.key == key][-1]]
        else:
            when = max(e.replayed_at for e in mine if e.replayed_at is not None)
            raise AlreadyReplayed(
                f"statement {sid} was already replayed ({when.isoformat()}); replay it again "
                "with force if it really must be resent"
            )
    return chosen


async def read_parked(bootstrap_servers: str, parked: ParkedRecord) -> bytes | None:
    """The parked record's value, re-read from its topic; None if it is no longer there."""
    counts = await require_topics(bootstrap_servers, [parked.topic])
    tp = TopicPartition(parked.topic, parked.partition)
    action = f"re-reading {parked.topic} partition {parked.partition} offset {parked.offset}"
    async with (assigned_consumer(bootstrap_servers, {parked.topic: counts[parked.topic]},
                                  action=action, client_id="dlq-replay",
                                  isolation_level="read_committed") as (consumer, _),
                kafka_errors(action, bootstrap_servers)):
        first = (await consumer.beginning_offsets([tp]))[tp]
        end = (await consumer.end_offsets([tp]))[tp]
        if not first <= parked.offset < end:
            return None
        consumer.seek(tp, parked.offset)
        async with asyncio.timeout(_READ_TIMEOUT):
            while True:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                for record in batch.get(tp, []):
                    if record.offset == parked.offset:
                        value: bytes | None = record.value
                        return value
                    if record.offset > parked.offset:
                        return None  # compacted away, or of an aborted transaction
                if await consumer.position(tp) >= end:
                    return None


async def _delivery_of(
    bootstrap_servers: str, letter: StatementDeadLetter
) -> tuple[bytes, StatementPartnerDelivery]:
    """The bytes to re-publish and their delivery: the copy, or the re-read record."""
    if letter.delivery is not None:
        return letter.delivery.to_json(), letter.delivery
    parked = letter.parked
    assert parked is not None
    value = await read_parked(bootstrap_servers, parked)
    if value is None:
        raise RecordGone(
            f"statement {letter.statement_id} was parked at {parked.topic} partition "
            f"{parked.partition} offset {parked.offset}, and that record is gone from the "
            "topic (deleted by retention): it cannot be replayed; ask its producer to send "
            "it again"
        )
    try:
        return value, decode(value, StatementPartnerDelivery, where=parked.topic)
    except InvalidEvent as exc:
        raise DeadLetterError(
            f"statement {letter.statement_id}: the parked record at {parked.topic} partition "
            f"{parked.partition} offset {parked.offset} is not a valid delivery: {exc.reason}"
        ) from exc


async def replay_dead_letters(
    bootstrap_servers: str,
    topics: Topics,
    connector_id: str,
    *,
    statement_ids: Collection[str] | None = None,
    force: bool = False,
) -> ReplayReport:
    """Replay the open dead letters (all, or those of ``statement_ids``); see the module doc.

    Raises ``NoSuchDeadLetter`` for an id without a dead letter and ``AlreadyReplayed``
    for one whose dead letters are all replayed (unless ``force``).
    """
    await require_topics(bootstrap_servers, [topics.partner(connector_id),
                                             topics.partner_dlq(connector_id),
                                             topics.outcomes])
    entries = await list_dead_letters(bootstrap_servers, topics, connector_id)
    chosen = _select(entries, statement_ids, force)
    if not chosen:
        return ReplayReport(connector_id, [], 0)
    dlq = topics.partner_dlq(connector_id)
    originals: dict[tuple[str, str], tuple[bytes, StatementPartnerDelivery]] = {}
    gone: list[str] = []
    for (sid, key), dead in chosen.items():
        try:
            originals[(sid, key)] = await _delivery_of(bootstrap_servers, dead[-1].letter)
        except RecordGone as exc:
            if statement_ids is not None:
                raise
            log.warning("dead_letter_record_gone", connector_id=connector_id,
                        statement_id=sid, detail=exc.message)
            gone.append(sid)
    chosen = {place: dead for place, dead in chosen.items() if place in originals}
    if not chosen:
        return ReplayReport(connector_id, [], 0, gone)
    producer = make_producer(ProducerParams(bootstrap_servers, client_id="dlq-replay"))
    async with kafka_errors(f"replaying {dlq}", bootstrap_servers):
        await producer.start()
        try:
            # The newest dead letter of each statement carries its delivery; publish them
            # in DLQ order (per IBAN, the order they failed in), and only then the markers.
            deliveries = [
                await producer.send(topics.partner(connector_id), originals[place][0],
                                    key=originals[place][1].iban.encode())
                for place in chosen
            ]
            for future in deliveries:
                await future
            markers = []
            for (sid, key), dead in chosen.items():
                delivery = originals[(sid, key)][1]
                outcome = DeliveryOutcome(
                    statement_id=sid,
                    outcome="replayed",
                    at=datetime.now(UTC),
                    iban=delivery.iban,
                    cabinet_id=delivery.cabinet_id,
                    connector_id=connector_id,
                    detail=replay_detail(dlq, [(e.partition, e.offset) for e in dead]),
                    content_sha256=delivery.content_sha256,
                )
                markers.append(await producer.send(topics.outcomes, outcome.to_json(),
                                                   key=sid.encode()))
            for future in markers:
                await future
        finally:
            await producer.stop()
    for (sid, key), dead in chosen.items():
        log.info("dead_letter_replayed", connector_id=connector_id, statement_id=sid,
                 cabinet_id=originals[(sid, key)][1].cabinet_id,
                 iban=mask_iban(originals[(sid, key)][1].iban), dead_letters=len(dead),
                 parked=dead[-1].letter.parked is not None)
    return ReplayReport(connector_id, [sid for sid, _ in chosen],
                        sum(len(d) for d in chosen.values()), gone)
