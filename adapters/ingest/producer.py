"""Publish bank files as ``statement.received/v1`` events: one per statement, keyed by IBAN.

This is the producer half of ingestion (the parsers are the other half), written as
library code so the ``ingest`` command, the drop-folder watcher and ``up --demo`` share it.

Statement ids (``statement_id``) are derived from the content, never drawn at random::

    statement_id = f"{format}-" + sha256(f"{iban}|{period_start}|{period_end}|" + raw)[:32]

(hex, dates in ISO form, ``raw`` the statement's own bytes as cut by its parser). The
same statement re-sent, from the same file or from another file holding the same bytes,
therefore carries the same id, and the sinks, which are idempotent on ``statement_id``
(DESIGN §5), absorb it. That is what makes a retry after a failed or interrupted publish
safe: it republishes the same ids, never new ones. 128 bits of SHA-256 make an accidental
collision between different statements practically impossible, while keeping the id short.

A file is all-or-nothing. Everything that can refuse it happens *before* the first send:
detection, parsing, building and validating every ``StatementReceived`` model, and the
size of every statement (one over :data:`~events.limits.MAX_STATEMENT_BYTES` of content
is refused with its size and the limit, code ``statement_too_large``: the size rule of
``events.limits``, which every later record is sized from). Only when every statement of
the file has an event does publishing start, and a file is reported as published only once
every send has been acknowledged (``acks=all``).

The one partial outcome left is a broker failing mid-file: some events may then be
acknowledged and others not. :class:`PublishFailed` says so, the caller leaves the file
where it is (never in ``done/``), and re-ingesting it republishes every statement with the
same ids. Readers may see a statement twice; they never see a statement that differs from
the file, and a refused file publishes nothing at all.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
import traceback
from collections.abc import Awaitable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import structlog
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from adapters.ingest.detect import detect_format, parse_file
from adapters.ingest.errors import BankFileError, StatementTooLarge
from adapters.ingest.model import BankFormat, ParsedStatement
from config.settings import Settings
from events.limits import MAX_RECORD_BYTES, MAX_STATEMENT_BYTES
from events.schemas import StatementReceived
from events.topics import Topics
from routing.broker.admin import require_topics
from routing.broker.errors import BrokerError, TopicMismatch
from routing.broker.producer import ProducerParams
from routing.domain.iban import mask_iban

__all__ = [
    "INGEST_BATCH_BYTES",
    "MAX_EVENT_BYTES",
    "MAX_SOURCE_LENGTH",
    "PARSER_FAILED",
    "FormatChoice",
    "IngestReport",
    "InvalidEvent",
    "OutgoingRecord",
    "PreparedFile",
    "PublishFailed",
    "PublishedStatement",
    "Refusal",
    "StatementProducer",
    "StatementTooLarge",
    "build_events",
    "default_source",
    "prepare_file",
    "producer_params",
    "publish_file",
    "require_received_topic",
    "resolve_format",
    "send_records",
    "statement_id",
    "validate_events",
]

log = structlog.get_logger(__name__)

FormatChoice = Literal["auto", "cfonb120", "camt053", "mt940"]
"""What a caller may ask for: a format, or ``auto`` to detect it from the bytes."""

MAX_EVENT_BYTES = MAX_RECORD_BYTES
"""The largest serialised event value we send: the size rule's record limit
(``events.limits``). A statement within :data:`~events.limits.MAX_STATEMENT_BYTES` always
makes a smaller event; the check stays as the last guard before the producer."""

MAX_SOURCE_LENGTH = 200
"""``statement.received/v1``'s limit on ``source``."""

PARSER_FAILED = "parser_failed"
"""The refusal code of a file whose parser raised something other than ``BankFileError``."""

INGEST_BATCH_BYTES = 262_144
"""Producer batch size for ingestion.

A file's events are sent in one burst, so batches fill up at once: 256 KiB batches
publish about twice as fast as the pipeline's default 16 KiB on the embedded broker
(measured: 22,848 events in 1.1 s instead of 2.4 s), and ``linger_ms`` is unchanged, so a
small file waits no longer. Still well under Kafka's default 1 MB batch limit.
"""


class InvalidEvent(BankFileError):
    """A parsed statement cannot form a valid ``statement.received/v1`` event."""

    code = "invalid_event"


class PublishFailed(BrokerError):
    """The broker failed while a file's events were being sent or acknowledged.

    Some of them may have been acknowledged (``acknowledged`` of ``total``). The file must
    stay where it is; re-ingesting it republishes every statement with the same ids.
    """

    code = "publish_failed"

    def __init__(self, message: str, *, acknowledged: int, total: int) -> None:
        super().__init__(message)
        self.acknowledged = acknowledged
        self.total = total


class StatementProducer(Protocol):
    """What publishing needs from a producer: ``AIOKafkaProducer.send``.

    A protocol rather than the aiokafka class, so this module's contract is visible and a
    caller may hand in any producer built by ``routing.broker.make_producer``.
    """

    async def send(self, topic: str, value: bytes, key: bytes) -> Awaitable[Any]: ...


def producer_params(
    settings: Settings, *, bootstrap_servers: str, client_id: str = "ingest"
) -> ProducerParams:
    """The pipeline's producer settings (``ProducerParams.from_settings``), batched for files."""
    params = ProducerParams.from_settings(
        settings, bootstrap_servers=bootstrap_servers, client_id=client_id
    )
    return replace(params, max_batch_size=INGEST_BATCH_BYTES)


def statement_id(
    fmt: BankFormat, iban: str, period_start: date, period_end: date, raw: bytes
) -> str:
    """The statement's stable id (see the module docstring for the rule and why)."""
    digest = hashlib.sha256(f"{iban}|{period_start.isoformat()}|{period_end.isoformat()}|".encode())
    digest.update(raw)
    return f"{fmt}-{digest.hexdigest()[:32]}"


def default_source(filename: str | None) -> str:
    """``file:<basename>``, cut to the contract's length: a long name must not refuse a file."""
    name = Path(filename).name if filename else "unnamed"
    return f"file:{name}"[:MAX_SOURCE_LENGTH]


def _utc(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware (received_at carries a timezone)")
    return now.astimezone(UTC)


def _where(statement: ParsedStatement) -> str:
    return (
        f"the statement of account {mask_iban(statement.iban)} for "
        f"{statement.period_start.isoformat()}..{statement.period_end.isoformat()}"
    )


def _event(statement: ParsedStatement, source: str, received_at: datetime) -> StatementReceived:
    """Build and validate one event; a refusal names the statement's first line."""
    raw = statement.raw
    try:
        return StatementReceived(
            statement_id=statement_id(
                statement.format, statement.iban, statement.period_start, statement.period_end, raw
            ),
            iban=statement.iban,
            format=statement.format,
            period_start=statement.period_start,
            period_end=statement.period_end,
            received_at=received_at,
            content_b64=base64.b64encode(raw).decode("ascii"),
            source=source,
            content_sha256=hashlib.sha256(raw).hexdigest(),
        )
    except ValidationError as exc:
        # Never the input values: they would put the statement's content in the message.
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'event'}: {err['msg']}"
            for err in exc.errors(include_url=False, include_input=False)
        )
        raise InvalidEvent(
            f"{_where(statement)} cannot form a statement.received/v1 event: {problems}",
            statement.first_line,
        ) from None


def _events(
    statements: Iterable[ParsedStatement],
    source: str,
    received_at: datetime,
    max_statement_bytes: int = MAX_STATEMENT_BYTES,
) -> Iterator[tuple[ParsedStatement, StatementReceived, bytes]]:
    """Each statement with its event and the event's serialised value, size-checked.

    The statement's own size is checked first, before its base64 is built: a 20 MB
    statement is refused for what it is, without making a 27 MB event to measure.
    """
    for statement in statements:
        size = len(statement.raw)
        if size > max_statement_bytes:
            raise StatementTooLarge(
                f"{_where(statement)} is {size:,} bytes, over the limit of "
                f"{max_statement_bytes:,} bytes for one statement (MAX_STATEMENT_BYTES, "
                "docs/operations.md#limits); split the statement or send it by another channel",
                statement.first_line,
            )
        event = _event(statement, source, received_at)
        value = event.to_json()
        if len(value) > MAX_EVENT_BYTES:
            raise StatementTooLarge(
                f"{_where(statement)} makes a {len(value):,} byte event, over the limit of "
                f"{MAX_EVENT_BYTES:,} bytes for any record (docs/operations.md#limits)",
                statement.first_line,
            )
        yield statement, event, value


def validate_events(
    statements: Iterable[ParsedStatement],
    *,
    source: str,
    now: datetime,
    max_statement_bytes: int = MAX_STATEMENT_BYTES,
) -> None:
    """Build, validate and size-check every statement's event, as publishing would.

    For a parse-only preview (``ingest --dry-run``): it refuses exactly what
    ``prepare_file`` would refuse, without keeping the events.
    """
    for _ in _events(statements, source, _utc(now), max_statement_bytes):
        pass


def resolve_format(data: bytes, fmt: FormatChoice, filename: str | None) -> BankFormat:
    """The format a file is parsed with: ``fmt``, or the detected one for ``auto``."""
    return _resolve_format(data, fmt, filename)


def _resolve_format(data: bytes, fmt: FormatChoice, filename: str | None) -> BankFormat:
    return detect_format(data, filename) if fmt == "auto" else fmt


def _file_events(
    data: bytes,
    fmt: FormatChoice,
    source: str | None,
    filename: str | None,
    now: datetime,
    max_statement_bytes: int,
) -> tuple[BankFormat, Iterator[tuple[ParsedStatement, StatementReceived, bytes]]]:
    """A bank file's format and its statements' events (lazily, see :func:`_events`)."""
    received_at = _utc(now)
    detected = _resolve_format(data, fmt, filename)
    statements = parse_file(data, detected, filename)
    src = source if source is not None else default_source(filename)
    return detected, _events(statements, src, received_at, max_statement_bytes)


def build_events(
    data: bytes,
    *,
    fmt: FormatChoice = "auto",
    source: str | None = None,
    filename: str | None = None,
    now: datetime,
    max_statement_bytes: int = MAX_STATEMENT_BYTES,
) -> list[StatementReceived]:
    """Every ``statement.received/v1`` event of a bank file, or a ``BankFileError``.

    Pure: no I/O, no clock (``now`` is the ingestion time, the ``received_at`` of every
    event of the file). ``source`` defaults to ``file:<basename of filename>``. Raises on
    the first statement that cannot be parsed, built or sent, naming its line, and never
    returns a partial list: that is the all-or-nothing rule.
    """
    _, events = _file_events(data, fmt, source, filename, now, max_statement_bytes)
    return [event for _, event, _ in events]


@dataclass(frozen=True, slots=True)
class OutgoingRecord:
    """One event ready to send: the IBAN key, the JSON value, and what to report."""

    key: bytes
    value: bytes
    statement_id: str
    iban: str
    period_start: date
    period_end: date


@dataclass(frozen=True, slots=True)
class PreparedFile:
    """A bank file turned into records, every one of them validated and size-checked."""

    format: BankFormat
    records: tuple[OutgoingRecord, ...]


def prepare_file(
    data: bytes,
    *,
    fmt: FormatChoice = "auto",
    source: str | None = None,
    filename: str | None = None,
    now: datetime,
    max_statement_bytes: int = MAX_STATEMENT_BYTES,
) -> PreparedFile:
    """What ``publish_file`` sends: like ``build_events`` but keeping only the bytes.

    Only the serialised values are kept, not the models, so a large file costs its
    records once in memory rather than twice.
    """
    detected, events = _file_events(data, fmt, source, filename, now, max_statement_bytes)
    records = tuple(
        OutgoingRecord(
            key=event.iban.encode(),
            value=value,
            statement_id=event.statement_id,
            iban=event.iban,
            period_start=event.period_start,
            period_end=event.period_end,
        )
        for _, event, value in events
    )
    return PreparedFile(detected, records)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a file was refused: what ``<name>.error.json`` and the CLI report."""

    code: str
    reason: str
    line: int | None
    format: BankFormat | None
    detected_at: datetime

    @property
    def message(self) -> str:
        return f"line {self.line}: {self.reason}" if self.line is not None else self.reason

    @classmethod
    def from_error(
        cls, exc: BankFileError, fmt: BankFormat | None, detected_at: datetime
    ) -> Refusal:
        return cls(exc.code, exc.reason, exc.line, fmt, detected_at)


@dataclass(frozen=True, slots=True)
class PublishedStatement:
    """One published statement, for reports and ``--json`` (never its content)."""

    statement_id: str
    iban: str
    period_start: date
    period_end: date


@dataclass(frozen=True, slots=True)
class IngestReport:
    """What happened to one file: published (every send acknowledged) or refused."""

    path: Path
    topic: str
    source: str
    size: int
    sha256: str
    received_at: datetime
    format: BankFormat | None
    statements: tuple[PublishedStatement, ...] = ()
    refusal: Refusal | None = None
    prepare_seconds: float = 0.0
    """Reading, parsing, building and serialising (the benchmark's parse time)."""
    publish_seconds: float = 0.0
    """From the first send to the last acknowledgement."""

    @property
    def ok(self) -> bool:
        return self.refusal is None

    @property
    def statement_ids(self) -> tuple[str, ...]:
        return tuple(s.statement_id for s in self.statements)


async def send_records(
    producer: StatementProducer, topic: str, records: Sequence[OutgoingRecord]
) -> None:
    """Send every record and wait until each one is acknowledged, or raise PublishFailed.

    Every future is awaited even after a failure, so none is left with an unretrieved
    exception and the count of acknowledged records is exact.
    """
    futures: list[Awaitable[Any]] = []
    failure: BaseException | None = None
    try:
        for record in records:
            futures.append(await producer.send(topic, value=record.value, key=record.key))
    except (KafkaError, OSError, TimeoutError) as exc:
        failure = exc
    finally:
        results = await asyncio.gather(*futures, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    acknowledged = len(results) - len(errors)
    cause = failure if failure is not None else (errors[0] if errors else None)
    if cause is not None:
        what = str(cause)
        if not what.startswith(type(cause).__name__):  # aiokafka's errors name themselves
            what = f"{type(cause).__name__}: {what}".rstrip(": ")
        raise PublishFailed(
            f"the broker failed while publishing to {topic}: {what}; "
            f"{acknowledged} of {len(records)} statements were acknowledged. The file was "
            "not moved: ingest it again, which republishes the same statement ids",
            acknowledged=acknowledged,
            total=len(records),
        ) from cause


async def publish_file(
    producer: StatementProducer,
    topics: Topics,
    path: Path,
    *,
    fmt: FormatChoice = "auto",
    source: str | None = None,
    now: datetime | None = None,
    max_statement_bytes: int = MAX_STATEMENT_BYTES,
) -> IngestReport:
    """Publish every statement of the file at ``path``, all of them or none.

    A refused file is *reported*, not raised (``report.refusal``): nothing of it was sent,
    and what to do with it (quarantine) is the caller's decision. Raises
    :class:`PublishFailed` when the broker fails mid-file, and ``OSError`` when the file
    cannot be read. Parsing runs in a worker thread so a large file does not freeze the
    event loop (the API, the router or a signal handler may share it). The topics must
    exist (:func:`require_received_topic`): a send to a missing topic would make the broker
    auto-create it with the wrong partition count.
    """
    received_at = _utc(now or datetime.now(UTC))
    src = source if source is not None else default_source(path.name)
    started = time.perf_counter()
    data, digest = await asyncio.to_thread(_read, path)
    report = IngestReport(
        path=path,
        topic=topics.received,
        source=src,
        size=len(data),
        sha256=digest,
        received_at=received_at,
        format=None,
    )
    detected: BankFormat | None = None
    refusal: Refusal | None = None
    try:
        detected = _resolve_format(data, fmt, path.name)
        prepared = await asyncio.to_thread(
            prepare_file,
            data,
            fmt=detected,
            source=src,
            filename=path.name,
            now=received_at,
            max_statement_bytes=max_statement_bytes,
        )
    except BankFileError as exc:
        refusal = Refusal.from_error(exc, detected, datetime.now(UTC))
    except Exception as exc:
        # A parser bug, or a third-party parser (pycamt, mt-940) failing in a way nobody
        # wrapped. Quarantining the file keeps it, with the error, for a fix and a re-drop;
        # raising would stop a watcher and make it fail on the same file at every restart.
        # Type and place only: the exception's text may quote the file's content.
        where = traceback.extract_tb(exc.__traceback__)[-1]
        log.error(
            "ingest.parser_failed",
            file=path.name,
            format=detected,
            error_type=type(exc).__name__,
            at=f"{where.filename}:{where.lineno} in {where.name}",
        )
        refusal = Refusal(
            PARSER_FAILED,
            f"the {detected or 'format detection'} parser failed unexpectedly "
            f"({type(exc).__name__}); this is a bug, please report it with the file",
            None,
            detected,
            datetime.now(UTC),
        )
    if refusal is not None:
        log.warning(
            "ingest.refused",
            file=path.name,
            format=detected,
            code=refusal.code,
            line=refusal.line,
            reason=refusal.reason,
        )
        return replace(report, format=detected, refusal=refusal)
    del data
    prepared_at = time.perf_counter()
    await send_records(producer, topics.received, prepared.records)
    published_at = time.perf_counter()
    log.info(
        "ingest.published",
        file=path.name,
        format=prepared.format,
        statements=len(prepared.records),
        statement_ids=[r.statement_id for r in prepared.records],
        accounts=len({r.iban for r in prepared.records}),
        topic=topics.received,
    )
    return replace(
        report,
        format=prepared.format,
        statements=tuple(
            PublishedStatement(r.statement_id, r.iban, r.period_start, r.period_end)
            for r in prepared.records
        ),
        prepare_seconds=prepared_at - started,
        publish_seconds=published_at - prepared_at,
    )


def _read(path: Path) -> tuple[bytes, str]:
    data = path.read_bytes()
    return data, hashlib.sha256(data).hexdigest()


async def require_received_topic(bootstrap_servers: str, topics: Topics) -> int:
    """Check ``statements.received`` exists with the catalogue's partition count.

    Run it once before publishing. A producer's first send to a missing topic makes the
    broker auto-create it (4 partitions on Tansu), and a wrong count puts statements on
    other partition numbers than their IBAN's state: the router would then meet the wrong
    state (DESIGN §3, co-partitioning). Returns the partition count.
    """
    counts = await require_topics(bootstrap_servers, [topics.received])
    actual = counts[topics.received]
    if actual != topics.partitions:
        raise TopicMismatch(
            f"topic {topics.received} has {actual} partitions but topic_partitions is "
            f"{topics.partitions}: statements would land on other partitions than their "
            "IBAN's state. Set TOPIC_PARTITIONS to the cluster's count, or recreate the "
            "topics on an empty cluster"
        )
    return actual
