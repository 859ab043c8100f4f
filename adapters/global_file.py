"""The global-file builder (DESIGN §3), and the file staff download from « Relevés ».

Building
--------
The builder consumes ``statements.global-file`` in consumer group
``<prefix>.global-file``. For each batch it:

1. stores every statement in its cabinet's global file (``GlobalFileStore.store``: one
   transaction, idempotent on the statement's IBAN, id and content);
2. sends one ``delivery.outcome/v1`` ``stored_global_file`` per statement to
   ``deliveries.outcomes``;
3. commits the batch's offsets once the broker acknowledged those outcomes. The
   committing loop (``routing.broker.consumer.consume_committing``) awaits the acks and
   the commit while it stores the next batch, so neither adds to the next batch's latency.

A crash anywhere re-reads the batch: step 1 then changes nothing, and step 2 re-sends
outcomes whose ``at`` is the time of the *first* write, i.e. the very same records, which
the ledger recognises as duplicates. Invalid records go to ``statements.invalid``, referred
to rather than copied when large, and never fail the batch (``routing.services.parking``).

A statement is (IBAN, ``statement_id``), and its ``content_sha256`` tells a redelivery
from a reused id (``routing.domain.identity``). A redelivery is absorbed
(``global_file_duplicate_ignored``). Another account's statement under the same id is
simply another statement. Another content under the same IBAN and id is kept beside the
first, both go into the download, and the builder says so: a warning
(``global_file_statement_id_reused``, with both contents' SHA-256) and the outcome's
``detail``, which the statement's trace shows its cabinet.

Downloading
-----------
:func:`build_download` assembles the file for a period, as the staff use it:

* only CFONB 120 statements: one ``.txt``, the statements' records concatenated in
  (period_start, received_at, statement_id, IBAN, content) order. Each statement is
  normalised first: split into lines whatever its line breaks (CRLF, LF, CR or none at
  all), lines longer than 120 characters cut every 120, blank records dropped, short
  records padded with spaces to 120 (CFONB records are fixed-width), every record ended
  by CRLF;
* any camt.053 or MT940 statement: a ``.zip`` holding that same CFONB ``.txt`` (when
  there are CFONB statements) plus one file per other statement, named
  ``<period_start>_<client_ref or IBAN>_<statement_id>.<statement key>.<xml|sta>``, byte
  for byte as the bank sent it (the key keeps two statements that share an id apart). A
  CFONB statement is therefore in the archive exactly once (inside the concatenated
  file), so importing everything never imports a statement twice;
* no statement in the period: an empty ``.txt`` (200, ``X-Statement-Count: 0``), since
  "nothing for that period" is an answer, not an error.

The archive is deterministic (fixed timestamps and order), so the same period always
yields the same bytes.
"""

from __future__ import annotations

import asyncio
import base64
import io
import re
import zipfile
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from datetime import date

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord
from sqlalchemy.ext.asyncio import AsyncEngine

from events.schemas import DeliveryOutcome, StatementGlobalFile
from events.topics import Topics
from events.wire import InvalidEvent, cut_reason, decode
from routing.broker.consumer import ConsumerRole
from routing.domain.iban import mask_iban
from routing.domain.identity import statement_key
from routing.observability import metrics
from routing.ports import GlobalFileEntry, GlobalFileStore, StoredStatement
from routing.services.parking import Refused, write_invalid
from routing.store.engine import sqlite_writer_lock
from routing.store.global_file import identity_of

log = structlog.get_logger(__name__)

RECORD_LENGTH = 120
CRLF = b"\r\n"
_LINE_BREAK = re.compile(rb"\r\n|\r|\n")
_BLANK = b" \t\x1a\x00"  # spaces, tabs, a DOS end-of-file mark, NUL padding
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest a zip can say: fixed for determinism


# --- the download ----------------------------------------------------------------------


def cfonb_records(content: bytes) -> list[bytes]:
    """One CFONB 120 statement's records, normalised (see the module docstring)."""
    records: list[bytes] = []
    for line in _LINE_BREAK.split(content):
        for start in range(0, len(line), RECORD_LENGTH):
            record = line[start : start + RECORD_LENGTH]
            if record.strip(_BLANK):
                records.append(record.ljust(RECORD_LENGTH, b" "))
    return records


def concatenated_cfonb(entries: Sequence[GlobalFileEntry]) -> bytes:
    """The CFONB statements' records, in the given order, each ended by CRLF."""
    return b"".join(
        record + CRLF
        for entry in entries
        if entry.format == "cfonb120"
        for record in cfonb_records(entry.content)
    )


def _safe(text: str) -> str:
    return _UNSAFE.sub("_", text).strip("._-")


def member_name(entry: GlobalFileEntry) -> str:
    """``<period_start>_<client_ref or IBAN>_<statement_id>.<statement key>.<ext>`` (safe
    characters). The key (``routing.domain.identity``) tells apart two statements sharing
    an id: two accounts of one client, or another content under a reused id.

    The statement id and the extension follow the file-drop adapters' naming (``.txt``,
    ``.xml``, ``.sta``; ids with ``:`` made safe and hashed), imported here only because
    ``adapters.delivery`` loads every adapter (asyncssh included) and this is rarely used.
    """
    from adapters.delivery.naming import EXTENSIONS, file_stem

    who = _safe(entry.client_ref or "") or entry.iban
    ext = EXTENSIONS.get(entry.format, "bin")  # type: ignore[call-overload]
    key = statement_key(entry.iban, entry.statement_id, entry.content_sha256)
    stem = file_stem(entry.statement_id)
    return f"{entry.period_start.isoformat()}_{who}_{stem}.{key}.{ext}"


def download_stem(cabinet_id: str, start: date, end: date) -> str:
    """``releves-<cabinet>-<from>-<to>``. Cabinet ids follow ``routing.domain.ids`` (no dot
    at all); one created before that rule keeps only its letters, digits, ``-`` and ``_``."""
    cabinet = _ID_UNSAFE.sub("_", cabinet_id).strip("_-") or "cabinet"
    return f"releves-{cabinet}-{start.isoformat()}-{end.isoformat()}"


@dataclass(frozen=True, slots=True)
class Download:
    filename: str
    media_type: str
    content: bytes
    statements: int


def _zip_entry(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 3  # unix, so the permissions below are read
    info.external_attr = 0o644 << 16
    archive.writestr(info, data)


def build_download(
    cabinet_id: str, start: date, end: date, entries: Sequence[GlobalFileEntry]
) -> Download:
    """The file for a period; ``entries`` in file order (as ``GlobalFileStore`` returns)."""
    stem = download_stem(cabinet_id, start, end)
    others = [e for e in entries if e.format != "cfonb120"]
    if not others:
        return Download(
            f"{stem}.txt", "text/plain; charset=latin-1", concatenated_cfonb(entries), len(entries)
        )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        if len(others) < len(entries):
            _zip_entry(archive, f"{stem}.txt", concatenated_cfonb(entries))
        for entry in others:
            _zip_entry(archive, member_name(entry), entry.content)
    return Download(f"{stem}.zip", "application/zip", buffer.getvalue(), len(entries))


# --- the builder -----------------------------------------------------------------------


def stored_detail(result: StoredStatement) -> str:
    """The ``stored_global_file`` outcome's detail; for a reused id it names the other
    contents, so the cabinet reading the trace learns that its file holds both."""
    where = f"in the global file of cabinet {result.cabinet_id}"
    if not result.other_contents:
        return where
    others = ", ".join(sha[:12] for sha in result.other_contents)
    plural = "statement" if len(result.other_contents) == 1 else "statements"
    return (
        f"{where}, beside {len(result.other_contents)} other {plural} of this account under "
        f"the same id with other content (SHA-256 {others}…): the id was reused, all are kept"
    )


def global_file_entry(record: ConsumerRecord) -> GlobalFileEntry:
    """A ``statements.global-file`` record as a global-file entry; ``InvalidEvent`` if bad."""
    event = decode(record.value, StatementGlobalFile, where="statements.global-file")
    return GlobalFileEntry(
        statement_id=event.statement_id,
        cabinet_id=event.cabinet_id,
        iban=event.iban,
        client_ref=event.client_ref,
        format=event.format,
        period_start=event.period_start,
        period_end=event.period_end,
        received_at=event.received_at,
        source=event.source,
        content=base64.b64decode(event.content_b64),  # validated with its SHA-256
        content_sha256=event.content_sha256,
        routed_at=event.routing.decided_at,
        routing=event.routing.model_dump(mode="json"),
        kafka_topic=record.topic,
        kafka_partition=record.partition,
        kafka_offset=record.offset,
    )


class GlobalFileBuilder:
    """Stores each batch, then reports it on ``deliveries.outcomes`` (see the module doc)."""

    def __init__(
        self,
        store: GlobalFileStore,
        producer: AIOKafkaProducer,
        topics: Topics,
        engine: AsyncEngine | None = None,
    ) -> None:
        self._store = store
        self._engine = engine  # for the SQLite writer lock shared with the ledger
        self._producer = producer
        self._topics = topics
        self.stats = {"records": 0, "stored": 0, "duplicates": 0, "invalid": 0}

    async def handle(self, records: list[ConsumerRecord]) -> Awaitable[object] | None:
        """Store the batch and send its outcomes; the outcomes' acks are returned, not
        awaited (``routing.broker.consumer.consume_committing`` awaits them before it
        commits the batch, while the next batch is stored)."""
        entries: list[GlobalFileEntry] = []
        messages: list[tuple[str, bytes | None, bytes | None]] = []
        invalid: list[Refused] = []
        for record in records:
            try:
                entries.append(global_file_entry(record))
            except InvalidEvent as exc:
                log.warning(
                    "invalid_global_file_event",
                    statement_id=exc.statement_id,
                    reason=cut_reason(exc.reason),
                    partition=record.partition,
                    offset=record.offset,
                    payload_bytes=len(record.value) if record.value is not None else None,
                )
                invalid.append(Refused(record, exc.reason, exc.statement_id))
        async with sqlite_writer_lock(self._engine):
            stored = await self._store.store(entries)
        by_identity = {identity_of(e): e for e in entries}
        for result in stored:
            entry = by_identity[(result.iban, result.statement_id, result.content_sha256)]
            outcome = DeliveryOutcome(
                statement_id=result.statement_id,
                outcome="stored_global_file",
                at=result.stored_at,
                iban=entry.iban,
                cabinet_id=result.cabinet_id,
                detail=stored_detail(result),
                content_sha256=result.content_sha256,
            )
            messages.append(
                (self._topics.outcomes, result.statement_id.encode(), outcome.to_json())
            )
        # Enqueued in order, acks awaited by the committing loop beside the next batch.
        acks = [await self._producer.send(topic, value=value, key=key)
                for topic, key, value in messages]
        # Never fails the batch (park and refer): the valid statements above are stored.
        await write_invalid(
            self._producer,
            self._topics.invalid,
            invalid,
            component="global-file",
            detected_by="global-file-builder",
        )
        for result in stored:
            # One line per statement, like the adapters' statement_delivered: the trace an
            # operator greps for. No connector: the global file is where unbound IBANs go.
            if not result.created:
                event, level = "global_file_duplicate_ignored", log.info
            elif result.other_contents:
                event, level = "global_file_statement_id_reused", log.warning
            else:
                event, level = "statement_stored_global_file", log.info
            level(
                event,
                statement_id=result.statement_id,
                cabinet_id=result.cabinet_id,
                iban=mask_iban(result.iban),
                content_sha256=result.content_sha256,
                other_contents=list(result.other_contents) or None,
                connector_id=None,
            )
        created = sum(1 for r in stored if r.created)
        reused = sum(1 for r in stored if r.created and r.other_contents)
        self.stats["records"] += len(records)
        self.stats["stored"] += created
        self.stats["duplicates"] += len(entries) - created
        self.stats["invalid"] += len(records) - len(entries)
        metrics.GLOBAL_FILE_STATEMENTS.labels("stored").inc(created - reused)
        metrics.GLOBAL_FILE_STATEMENTS.labels("duplicate").inc(len(entries) - created)
        metrics.GLOBAL_FILE_STATEMENTS.labels("id_reused").inc(reused)
        metrics.INVALID.labels("global-file").inc(len(records) - len(entries))
        for result in stored:
            if result.created:
                entry = by_identity[(result.iban, result.statement_id, result.content_sha256)]
                metrics.GLOBAL_FILE_LATENCY.observe(
                    metrics.seconds_since(entry.received_at, result.stored_at)
                )
        return asyncio.gather(*acks) if acks else None


def global_file_role(topics: Topics) -> ConsumerRole:
    """The builder reads ``statements.global-file`` in group ``<prefix>.global-file``."""
    return ConsumerRole(
        name="global_file_builder",
        topic=topics.global_file,
        group=topics.group("global-file"),
        client_id="global-file-builder",
    )
