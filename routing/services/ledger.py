"""The delivery ledger's consumer.

The ledger reads, in consumer group ``<prefix>.ledger``, and records in the state store
(``DeliveryLedger``), from which ``GET /statements/{id}``, ``statement-router trace`` and
the diagnosis answer:

* ``deliveries.outcomes``: every ``delivery.outcome/v1`` (delivered, retrying,
  dead_lettered, replayed from the adapters, stored_global_file from the global-file
  builder);
* the router's own events, from which it derives the "routed" and "held" entries the
  router no longer writes as outcome records (a second record per statement cost about a
  quarter of its throughput): every ``statements.partner.<connector>`` (subscribed by
  pattern, so a connector added to the catalogue is followed), ``statements.global-file``
  and ``statements.held``. Each carries the routing trace, the cabinet and, for a partner
  or a held statement, the connector, and says whether it is released from held, so the
  derived entry is the one the router used to write: same kind, time (the decision's),
  connector and detail (``partner:<connector>``, ``global-file``, ``held:<reason>``,
  `` (released from held)`` appended on a release). Entries are read in time order
  (``at``), so a "delivered" read before its "routed" (two topics, no order between
  them) still comes after it in the trace.

It runs on the committing loop it shares with the global-file builder
(``routing.broker.consumer.run_committing``), wired by ``routing.entrypoints.bootstrap.run_ledger``.

At least once, duplicates absorbed (DESIGN §5): offsets are committed only after the batch
is in the database, and the ledger ignores a record it already holds, so a crash between
the two re-reads the batch and adds nothing. A record that is not a valid event of its
topic never stops the consumer and is never skipped silently: it goes to
``statements.invalid`` with the reason, like any other invalid input, referred to rather
than copied when it is large, and logged and counted if even that cannot be written
(``routing.services.parking``): the valid records of its batch are recorded all the same.
"""

from __future__ import annotations

import re

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord
from sqlalchemy.ext.asyncio import AsyncEngine

from events.schemas import (
    DeliveryOutcome,
    StatementGlobalFile,
    StatementHeld,
    StatementPartnerDelivery,
)
from events.topics import Topics
from events.wire import InvalidEvent, cut_reason, decode, key_text
from routing.broker.consumer import ConsumerRole
from routing.observability import metrics
from routing.ports import OutcomeRecord
from routing.services.parking import Refused, write_invalid
from routing.store.engine import sqlite_writer_lock
from routing.store.ledger import SqlDeliveryLedger

log = structlog.get_logger(__name__)

InvalidRecord = InvalidEvent
"""A record that is not the event its topic carries (the wire decoder's refusal)."""


def outcome_record(value: bytes | None) -> OutcomeRecord:
    """One ``deliveries.outcomes`` value as an ``OutcomeRecord``; ``InvalidRecord`` if bad.

    Decoded by the pipeline's one strict decoder (``events.wire``), with the router's
    ``routing`` trace when the producer added it.
    """
    event = decode(value, DeliveryOutcome, where="deliveries.outcomes")
    routing = event.routing.model_dump(mode="json") if event.routing is not None else None
    return OutcomeRecord(
        statement_id=event.statement_id,
        outcome=event.outcome,
        at=event.at,
        iban=event.iban,
        cabinet_id=event.cabinet_id,
        connector_id=event.connector_id,
        attempt=event.attempt,
        detail=event.detail,
        routing=routing,
        content_sha256=event.content_sha256,
    )


RELEASED_NOTE = "released from held"
"""The note the detail of a statement released from held carries: ``partner:acd (…)``."""


def _entry(
    event: StatementPartnerDelivery | StatementGlobalFile | StatementHeld,
    outcome: str,
    detail: str,
    connector_id: str | None,
    released: bool = False,
) -> OutcomeRecord:
    """The entry the router's own outcome record used to be: at the decision's time, with
    its trace; a release from held says so in the detail."""
    if released:
        detail = f"{detail} ({RELEASED_NOTE})"
    return OutcomeRecord(
        statement_id=event.statement_id,
        outcome=outcome,
        at=event.routing.decided_at,
        iban=event.iban,
        cabinet_id=event.cabinet_id,
        connector_id=connector_id,
        detail=detail,
        routing=event.routing.model_dump(mode="json"),
        content_sha256=event.content_sha256,
    )


def partner_record(value: bytes | None, where: str) -> OutcomeRecord:
    """The "routed" entry of one ``statement.partner-delivery/v1``."""
    event = decode(value, StatementPartnerDelivery, where=where)
    return _entry(event, "routed", f"partner:{event.connector_id}", event.connector_id,
                  event.released_from_held)


def global_file_record(value: bytes | None, where: str) -> OutcomeRecord:
    """The "routed" entry of one ``statement.global-file/v1``."""
    event = decode(value, StatementGlobalFile, where=where)
    return _entry(event, "routed", "global-file", None, event.released_from_held)


def held_record(value: bytes | None, where: str) -> OutcomeRecord:
    """The "held" entry of one ``statement.held/v1``."""
    event = decode(value, StatementHeld, where=where)
    return _entry(event, "held", f"held:{event.routing.reason}", event.connector_id)


def ledger_pattern(topics: Topics) -> str:
    """Every topic the ledger reads: the outcomes, the held and global-file topics, and
    each connector's partner topic (``<prefix>.statements.partner.<id>``; a connector id
    has no dot, so the ``.dlq`` topics do not match)."""
    fixed = "|".join(re.escape(t) for t in topics.ledger_reads)
    partner = re.escape(topics.partner("")) + "[a-z0-9][a-z0-9_-]*"
    return f"^(?:{fixed}|{partner})$"


def ledger_role(topics: Topics) -> ConsumerRole:
    """The ledger reads ``deliveries.outcomes`` and the routed and held topics (by
    pattern, ``ledger_pattern``) in group ``<prefix>.ledger``."""
    return ConsumerRole(
        name="ledger",
        topic=topics.outcomes,
        group=topics.group("ledger"),
        client_id="ledger",
        pattern=ledger_pattern(topics),
    )


class LedgerConsumer:
    """Records each batch of outcome records in the ledger, invalid ones on the side."""

    def __init__(
        self,
        ledger: SqlDeliveryLedger,
        producer: AIOKafkaProducer,
        topics: Topics,
        engine: AsyncEngine | None = None,
    ) -> None:
        self._ledger = ledger
        self._engine = engine
        self._producer = producer
        self._topics = topics
        self._partner_prefix = topics.partner("")
        self.stats = {"records": 0, "recorded": 0, "duplicates": 0, "invalid": 0}

    def entry_of(self, record: ConsumerRecord) -> OutcomeRecord:
        """The ledger entry one record gives, by its topic; ``InvalidRecord`` if bad."""
        topic = record.topic
        t = self._topics
        if topic == t.outcomes:
            return outcome_record(record.value)
        if topic == t.held:
            return held_record(record.value, "statements.held")
        if topic == t.global_file:
            return global_file_record(record.value, "statements.global-file")
        if topic.startswith(self._partner_prefix):
            return partner_record(record.value, topic.removeprefix(f"{t.prefix}."))
        # Not reachable through ledger_pattern; said rather than silently recorded.
        raise InvalidRecord(f"the ledger does not read topic {topic!r}")

    async def handle(self, records: list[ConsumerRecord]) -> None:
        outcomes: list[OutcomeRecord] = []
        invalid: list[Refused] = []
        for record in records:
            try:
                outcomes.append(self.entry_of(record))
            except InvalidRecord as exc:
                log.warning(
                    "invalid_outcome",
                    topic=record.topic,
                    statement_id=exc.statement_id,
                    reason=cut_reason(exc.reason),
                    key=key_text(record.key) if record.key and len(record.key) <= 200 else None,
                    partition=record.partition,
                    offset=record.offset,
                    payload_bytes=len(record.value) if record.value is not None else None,
                )
                invalid.append(Refused(record, exc.reason, exc.statement_id))
        async with sqlite_writer_lock(self._engine):
            created = await self._ledger.record(outcomes)
        # Never fails the batch (park and refer): the valid outcomes above are recorded.
        await write_invalid(
            self._producer, self._topics.invalid, invalid, component="ledger", detected_by="ledger"
        )
        self.stats["records"] += len(records)
        self.stats["recorded"] += created
        self.stats["duplicates"] += len(outcomes) - created
        self.stats["invalid"] += len(invalid)
        metrics.LEDGER_OUTCOMES.labels("recorded").inc(created)
        metrics.LEDGER_OUTCOMES.labels("duplicate").inc(len(outcomes) - created)
        metrics.INVALID.labels("ledger").inc(len(invalid))
