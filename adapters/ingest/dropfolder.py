"""Where ingested files go afterwards, and the drop-folder watcher.

Layout of a watched folder ``DIR``::

    DIR/                      bank feeds drop files here (write as .part/.tmp, then rename)
    DIR/done/<name>           published: every statement acknowledged by the broker
    DIR/quarantine/<name>     refused: nothing of it was published
    DIR/quarantine/<name>.error.json   why (format, code, line, reason, time)

A file leaves ``DIR`` only after its outcome is final, so a crash at any point leaves it
in ``DIR`` and the next run ingests it again. For a published file that means
republishing the same statement ids (they are derived from the content, see
``adapters.ingest.producer``), which the idempotent sinks absorb; never a partial or
different statement.

When is a file complete? A writer that renames a finished ``.part``/``.tmp`` file into
place is always safe, and is what bank feeds should do. Otherwise a file is taken once its
size, modification time and inode are the same on two consecutive polls. That is the
usual heuristic, and it can be fooled by a writer pausing longer than the poll interval
mid-file; CFONB and MT940 cut at a record boundary would even parse. Hence the advice.

Dotfiles and names ending in ``.part`` or ``.tmp`` are never taken. Sub-folders (``done/``,
``quarantine/``) and anything that is not a regular file are ignored. Complete files are
ingested one at a time, oldest first (modification time, then name), so a Monday file is
published before the Tuesday file dropped after it, which keeps per-IBAN order (DESIGN §5).

Moves never overwrite: a name already taken in ``done/`` or ``quarantine/`` (the same file
name dropped twice) gets a counter, ``releve.1.txt``, ``releve.2.txt``, …
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

import structlog

from adapters.ingest.producer import IngestReport
from routing.broker.errors import BrokerError
from routing.services.backoff import RetrySchedule

__all__ = [
    "DONE",
    "ERROR_SCHEMA",
    "ERROR_SUFFIX",
    "IGNORED_SUFFIXES",
    "QUARANTINE",
    "DropResult",
    "error_document",
    "error_path",
    "is_candidate",
    "move_to_done",
    "quarantine",
    "settle",
    "watch",
]

log = structlog.get_logger(__name__)

DONE = "done"
QUARANTINE = "quarantine"
ERROR_SUFFIX = ".error.json"
ERROR_SCHEMA = "ingest.error/v1"
IGNORED_SUFFIXES = (".part", ".tmp")
_MAX_BACKOFF_S = 30.0


def is_candidate(name: str) -> bool:
    """Whether a file name in the drop folder may be ingested (not a dotfile, not partial)."""
    return not name.startswith(".") and not name.lower().endswith(IGNORED_SUFFIXES)


def error_path(quarantined: Path) -> Path:
    """The ``<name>.error.json`` that explains a quarantined file, beside it."""
    return quarantined.with_name(quarantined.name + ERROR_SUFFIX)


def _free_target(directory: Path, name: str) -> Path:
    """``directory/name``, or ``stem.N.suffix`` with the first N not taken."""
    target = directory / name
    stem, suffix = Path(name).stem, Path(name).suffix
    counter = 0
    while target.exists():
        counter += 1
        target = directory / f"{stem}.{counter}{suffix}"
    return target


def _move(path: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    # A rename when both are on one file system (always for DIR/done, DIR/quarantine).
    shutil.move(path, target)
    return target


def _write_atomically(path: Path, text: str) -> None:
    """Write via a temporary dotfile and a rename: a reader never sees half a document."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def error_document(report: IngestReport, quarantined: Path | None = None) -> dict[str, Any]:
    """The content of ``<name>.error.json`` (schema ``ingest.error/v1``, docs/ingest.md).

    It names the line and the reason, as the CLI does, plus what an operator needs to
    match it with the file and the logs: the format, the stable error code, the size and
    SHA-256 of the file as read, and the time. Never the file's content.
    """
    refusal = report.refusal
    if refusal is None:
        raise ValueError(f"{report.path.name} was not refused")
    return {
        "schema": ERROR_SCHEMA,
        "file": report.path.name,
        "quarantined_as": quarantined.name if quarantined is not None else None,
        "format": refusal.format,
        "code": refusal.code,
        "line": refusal.line,
        "reason": refusal.reason,
        "message": refusal.message,
        "size": report.size,
        "sha256": report.sha256,
        "source": report.source,
        "detected_at": refusal.detected_at.astimezone(UTC).isoformat(),
        "detected_by": "ingest",
    }


def quarantine(path: Path, report: IngestReport, directory: Path) -> Path:
    """Move a refused file into ``directory`` with its ``.error.json``; return its new path.

    The explanation is written first and the file moved last: a crash in between leaves
    the file in place, to be refused again (rewriting the same explanation), rather than a
    quarantined file nobody can explain.
    """
    directory.mkdir(parents=True, exist_ok=True)
    target = _free_target(directory, path.name)
    document = error_document(report, target)
    _write_atomically(error_path(target), json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    return _move(path, target)


def move_to_done(path: Path, directory: Path) -> Path:
    """Move a published file into ``directory``; return its new path."""
    return _move(path, _free_target(directory, path.name))


def settle(
    path: Path, report: IngestReport, *, done: Path | None, quarantined: Path | None
) -> Path | None:
    """Put a file where its outcome says: ``quarantined`` if refused, ``done`` if published.

    ``None`` for either folder leaves such files where they are. Returns the new path, or
    None when the file was not moved.
    """
    if report.refusal is not None:
        return quarantine(path, report, quarantined) if quarantined is not None else None
    return move_to_done(path, done) if done is not None else None


@dataclass(frozen=True, slots=True)
class DropResult:
    """A file of the drop folder, ingested and moved."""

    report: IngestReport
    moved_to: Path


_Signature = tuple[int, int, int]  # size, mtime in ns, inode


def _scan(directory: Path) -> dict[str, _Signature]:
    found: dict[str, _Signature] = {}
    with os.scandir(directory) as entries:
        for entry in entries:
            if not is_candidate(entry.name):
                continue
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue  # removed or renamed while we looked
            found[entry.name] = (st.st_size, st.st_mtime_ns, st.st_ino)
    return found


async def _sleep(stop_event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop_event.wait(), timeout=seconds)


async def watch(
    directory: Path,
    publish: Callable[[Path], Awaitable[IngestReport]],
    stop_event: asyncio.Event,
    poll_interval: float = 0.5,
    *,
    on_result: Callable[[DropResult], None] | None = None,
) -> None:
    """Ingest every complete file dropped into ``directory`` until ``stop_event`` is set.

    ``publish`` is typically ``functools.partial(publish_file, producer, topics)``. A file
    being ingested when the stop comes is finished first (its sends are already under
    way), then the loop returns; nothing else is started.

    Failures never end the loop, because a watcher is a long-running role:

    * the broker failing (``BrokerError``, e.g. ``PublishFailed`` mid-file) leaves the
      file in place and retries it with exponential backoff (up to 30 s), which
      republishes the same statement ids;
    * a file that cannot be read or moved (``OSError``: permissions, a full disk) is
      logged and left alone until it changes.
    """
    done_dir, quarantine_dir = directory / DONE, directory / QUARANTINE
    done_dir.mkdir(parents=True, exist_ok=True)
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    log.info("ingest.watching", directory=str(directory), poll_interval=poll_interval)
    # While the broker is down: the poll interval doubled per failed poll, capped, without
    # jitter (one watcher per folder has no herd to spread).
    backoff = RetrySchedule(
        base_seconds=poll_interval * 2, max_seconds=max(_MAX_BACKOFF_S, poll_interval * 2)
    )
    previous: dict[str, _Signature] = {}
    stuck: dict[str, _Signature] = {}
    failures = 0
    while not stop_event.is_set():
        current = _scan(directory)
        stuck = {name: sig for name, sig in stuck.items() if current.get(name) == sig}
        complete = sorted(
            (sig[1], name)
            for name, sig in current.items()
            if previous.get(name) == sig and name not in stuck
        )
        previous = current
        broker_down = False
        for _mtime, name in complete:
            if stop_event.is_set():
                break
            path = directory / name
            try:
                report = await publish(path)
            except BrokerError as exc:
                failures += 1
                broker_down = True
                log.warning("ingest.broker_failed", file=name, error=exc.message, attempt=failures)
                break
            except OSError as exc:
                stuck[name] = current[name]
                log.error("ingest.unreadable", file=name, error=str(exc))
                continue
            failures = 0
            try:
                moved = settle(path, report, done=done_dir, quarantined=quarantine_dir)
            except OSError as exc:
                stuck[name] = current[name]
                log.error("ingest.move_failed", file=name, error=str(exc), ok=report.ok)
                continue
            assert moved is not None  # both folders are given
            previous.pop(name, None)
            log.info(
                "ingest.settled",
                file=name,
                moved_to=str(moved.relative_to(directory)),
                statements=len(report.statements),
                refused=not report.ok,
            )
            if on_result is not None:
                on_result(DropResult(report, moved))
        delay = poll_interval
        if broker_down:
            delay = backoff.ceiling(failures + 1)
        await _sleep(stop_event, delay)
    log.info("ingest.stopped", directory=str(directory))
