"""Park and refer: the ``statements.invalid`` records of a consumer, written so that no
input can stall it.

The global-file builder and the ledger read their topics in batches and commit a batch
only once it is handled. A record they cannot read goes to ``statements.invalid``; if
writing that record failed and the failure made the batch fail, the batch would be retried
for ever and the valid records of every partition in it would never be stored. So here:

* the invalid record follows the size rule (``events.limits``): a value too large to copy
  is referred to by topic, partition, offset and size (``payload_omitted``);
* if the broker still refuses it for its size (a topic created by hand with a smaller
  ``max.message.bytes``), it is written again in reference form, whatever its size;
* if that fails too, or any other error persists over a few attempts, the input is
  *parked unwritten*: logged once at error level with where to find it and why, counted in
  ``statement_router_parked_total{how="unwritable"}`` (alert on it), and the consumer moves
  on. The input itself is still in its topic, at the offset the log names.

Every referred record counts in ``statement_router_parked_total{how="referred"}``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import structlog
from aiokafka.errors import MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError

from events.limits import MAX_INVALID_COPY_BYTES
from events.wire import SourceRecord, SourceRef, encode_invalid, invalid_key
from routing.observability import metrics

__all__ = ["INVALID_SEND_ATTEMPTS", "InvalidSender", "Refused", "write_invalid"]

log = structlog.get_logger(__name__)

INVALID_SEND_ATTEMPTS = 4
"""Tries of one invalid record (0.2 + 0.4 + 0.8 s of backoff between them) before it is
parked unwritten; a size refusal is not retried, it is written in reference form at once."""

_SIZE_ERRORS = (MessageSizeTooLargeError, RecordTooLargeError, RecordListTooLargeError)
_FIRST_BACKOFF_S = 0.2


class InvalidSender(Protocol):
    """What is needed of a producer: ``AIOKafkaProducer.send``."""

    async def send(
        self, topic: str, value: bytes | None = None, key: bytes | None = None
    ) -> asyncio.Future[object]: ...


@dataclass(frozen=True, slots=True)
class Refused:
    """One input this consumer could not read, and why."""

    record: SourceRecord
    reason: str
    statement_id: str | None = None


def _encode(item: Refused, detected_by: str, *, refer: bool) -> bytes:
    rec = item.record
    return encode_invalid(
        value=rec.value,
        key=rec.key,
        reason=item.reason,
        source=SourceRef(rec.topic, rec.partition, rec.offset),
        detected_at=datetime.now(UTC).isoformat(),
        statement_id=item.statement_id,
        detected_by=detected_by,
        copy_limit=-1 if refer else MAX_INVALID_COPY_BYTES,
    )


async def _send_one(producer: InvalidSender, topic: str, key: bytes, value: bytes) -> None:
    await (await producer.send(topic, value=value, key=key))


async def _write(
    producer: InvalidSender, topic: str, item: Refused, component: str, detected_by: str
) -> None:
    value = _encode(item, detected_by, refer=False)
    size = len(item.record.value or b"")
    referred = size > MAX_INVALID_COPY_BYTES
    key = invalid_key(item.record.key)
    backoff = _FIRST_BACKOFF_S
    error: BaseException | None = None
    for attempt in range(1, INVALID_SEND_ATTEMPTS + 1):
        try:
            await _send_one(producer, topic, key, value)
        except _SIZE_ERRORS as exc:
            if referred:
                error = exc
                break
            value, referred = _encode(item, detected_by, refer=True), True
            continue
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = exc
            if attempt < INVALID_SEND_ATTEMPTS:
                await asyncio.sleep(backoff)
                backoff *= 2
            continue
        else:
            if referred:
                metrics.PARKED.labels(component, "referred").inc()
            return
    rec = item.record
    metrics.PARKED.labels(component, "unwritable").inc()
    log.error(
        "invalid_record_unwritable",
        component=component,
        topic=rec.topic,
        partition=rec.partition,
        offset=rec.offset,
        payload_bytes=size if rec.value is not None else None,
        reason=item.reason[:500],
        error=f"{type(error).__name__}: {error}" if error is not None else None,
        action=f"parked: the input stays at {rec.topic} partition {rec.partition} offset "
        f"{rec.offset}; {topic} refused its invalid record, so nothing else refers to it",
    )


async def write_invalid(
    producer: InvalidSender,
    topic: str,
    refused: Sequence[Refused],
    *,
    component: str,
    detected_by: str,
) -> None:
    """Write one ``statement.invalid/v1`` per refused input (see the module docstring).

    Never raises for a record the broker refuses: the caller's batch goes on.
    """
    await asyncio.gather(
        *(_write(producer, topic, item, component, detected_by) for item in refused)
    )
