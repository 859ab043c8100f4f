"""The delivery ledger's consumer.

The ledger reads ``deliveries.outcomes`` (every ``delivery.outcome/v1``: routed and held
from the router, delivered/retrying/dead_lettered/replayed from the adapters,
stored_global_file from the global-file builder) in consumer group ``<prefix>.ledger`` and
records each one in the state store (``DeliveryLedger``), from which ``GET
/statements/{id}``, ``statement-router trace`` and the diagnosis answer.

It runs on the committing loop it shares with the global-file builder
(``routing.broker.consumer.run_committing``), wired by ``routing.entrypoints.bootstrap.run_ledger``.

At least once, duplicates absorbed (DESIGN §5): offsets are committed only after the batch
is in the database, and the ledger ignores a record it already holds, so a crash between
the two re-reads the batch and adds nothing. A record that is not a valid
``delivery.outcome/v1`` never stops the consumer and is never skipped silently: it goes to
``statements.invalid`` with the reason, like any other invalid input, referred to rather
than copied when it is large, and logged and counted if even that cannot be written
(``routing.services.parking``): the valid records of its batch are recorded all the same.
"""

from __future__ import annotations

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord
from sqlalchemy.ext.asyncio import AsyncEngine

from events.schemas import DeliveryOutcome
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


def ledger_role(topics: Topics) -> ConsumerRole:
    """The ledger reads ``deliveries.outcomes`` in group ``<prefix>.ledger``."""
    return ConsumerRole(
        name="ledger", topic=topics.outcomes, group=topics.group("ledger"), client_id="ledger"
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
        self.stats = {"records": 0, "recorded": 0, "duplicates": 0, "invalid": 0}

    async def handle(self, records: list[ConsumerRecord]) -> None:
        outcomes: list[OutcomeRecord] = []
        invalid: list[Refused] = []
        for record in records:
            try:
                outcomes.append(outcome_record(record.value))
            except InvalidRecord as exc:
                log.warning(
                    "invalid_outcome",
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
