"""``statement-router ingest``: publish bank files to ``statements.received``.

Two modes, one rule per file (all of its statements published, or none):

* ``ingest FILE...`` publishes the given files in order. A refused file is moved to a
  quarantine folder (``--quarantine``, default ``quarantine/`` beside the file) with its
  ``<name>.error.json``, and its reason goes to stderr; the other files are still
  ingested. A published file stays where it is unless ``--done DIR`` is given. ``--keep``
  moves nothing (to publish files you must not move, such as the checked-in samples).
* ``ingest --watch DIR`` watches a drop folder until SIGINT/SIGTERM, moving each file to
  ``DIR/done/`` or ``DIR/quarantine/`` (``adapters.ingest.dropfolder``).
* ``ingest --dry-run FILE...`` reads the files as publishing would and prints, per file,
  the format and per statement the masked IBAN, period, balances, currency and number of
  movements, or the refusal with its line (``adapters.ingest.preview``). It needs no
  broker and moves nothing: a bank feed checks a new bank's files with it.

It publishes to a running broker: ``KAFKA_BOOTSTRAP_SERVERS``, or ``--bootstrap`` with the
address ``statement-router up`` prints for its embedded broker. ``statements.received``
must exist with ``TOPIC_PARTITIONS`` partitions (``statement-router topics create``); it
is checked first, because a send to a missing topic would auto-create it with the wrong
partition count.

Exit codes: 0 all published (or, with ``--dry-run``, all readable); 7 at least one file
refused (the others were published), a statement over the size limit among them
(``statement_too_large``: its size and the limit, ``MAX_STATEMENT_BYTES``); 8 no broker
configured, or the broker is unreachable or failed (files not yet acknowledged stay where
they were; ingesting them again republishes the same statement ids); 1 a file could not be
read or moved; 2 bad usage.
"""

from __future__ import annotations

import asyncio
import functools
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from routing.entrypoints.cli.common import (
    EXIT_INVALID,
    EXIT_REFUSED,
    EXIT_UNAVAILABLE,
    broker_or_none,
    fail,
    print_json,
    require_reachable,
    run,
    running_up_broker,
    settings,
)
from routing.entrypoints.cli.pipeline import topic_catalogue

if TYPE_CHECKING:
    from adapters.ingest.dropfolder import DropResult
    from adapters.ingest.preview import FilePreview
    from adapters.ingest.producer import FormatChoice, IngestReport
    from config.settings import Settings
    from events.topics import Topics

__all__ = ["IngestFormat", "ingest"]

_CLIENT_ID = "statement-router-ingest"


class IngestFormat(StrEnum):
    """``--format``: detect from the content (the default), or force a parser."""

    AUTO = "auto"
    CFONB120 = "cfonb120"
    CAMT053 = "camt053"
    MT940 = "mt940"


def _choice(fmt: IngestFormat) -> FormatChoice:
    choices: dict[IngestFormat, FormatChoice] = {
        IngestFormat.AUTO: "auto",
        IngestFormat.CFONB120: "cfonb120",
        IngestFormat.CAMT053: "camt053",
        IngestFormat.MT940: "mt940",
    }
    return choices[fmt]


def _bootstrap(cfg: Settings, option: str | None) -> str:
    servers = broker_or_none(cfg, option)
    if servers is None:
        running = running_up_broker(cfg)
        where = (
            f"the `statement-router up` running on DATA_DIR={cfg.data_dir} has its broker at "
            f"{running}: pass --bootstrap {running}"
            if running is not None
            else "pass --bootstrap HOST:PORT (the embedded broker's address, printed by "
            "`statement-router up`) or point KAFKA_BOOTSTRAP_SERVERS at a running Kafka"
        )
        fail(
            f"no Kafka to publish to: KAFKA_BOOTSTRAP_SERVERS is not set; {where}",
            EXIT_UNAVAILABLE,
        )
    return servers


def _outcome(report: IngestReport, moved_to: Path | None) -> dict[str, Any]:
    """One file's result for ``--json``: ids, masked IBANs and periods, never the content.

    The output ends up in CI logs and shell histories like any other, so it names accounts
    the way logs and errors do: by masked IBAN.
    """
    from adapters.ingest.dropfolder import error_document
    from routing.domain.iban import mask_iban

    return {
        "file": str(report.path),
        "ok": report.ok,
        "format": report.format,
        "topic": report.topic,
        "source": report.source,
        "statements": [
            {
                "statement_id": s.statement_id,
                "iban": mask_iban(s.iban),
                "period_start": s.period_start.isoformat(),
                "period_end": s.period_end.isoformat(),
            }
            for s in report.statements
        ],
        "moved_to": str(moved_to) if moved_to is not None else None,
        "error": error_document(report, moved_to) if not report.ok else None,
    }


def _echo(report: IngestReport, moved_to: Path | None) -> None:
    name = report.path.name
    if report.refusal is None:
        where = f"; moved to {moved_to}" if moved_to is not None else ""
        typer.echo(
            f"published {len(report.statements)} statements from {name} ({report.format}) "
            f"to {report.topic}{where}"
        )
        return
    where = (
        f"; moved to {moved_to} (reason in {moved_to.name}.error.json)"
        if moved_to is not None
        else ""
    )
    typer.echo(
        f"error: {name}: {report.refusal.message} [{report.refusal.code}]; "
        f"nothing was published{where}",
        err=True,
    )


def _echo_preview(preview: FilePreview) -> None:
    if preview.refusal is not None:
        typer.echo(
            f"error: {preview.file}: {preview.refusal.message} [{preview.refusal.code}]",
            err=True,
        )
        return
    count = len(preview.statements)
    typer.echo(
        f"{preview.file}: {preview.format}, {count} statement{'s' if count != 1 else ''} "
        "(dry run: nothing published)"
    )
    for s in preview.statements:
        typer.echo(
            f"  line {s.first_line}: {s.masked_iban}  "
            f"{s.period_start.isoformat()}..{s.period_end.isoformat()}  {s.currency}  "
            f"opening {s.opening_balance}  closing {s.closing_balance}  "
            f"{s.movements} movement{'s' if s.movements != 1 else ''}"
        )


def _dry_run(files: list[Path], fmt: IngestFormat, source: str | None, as_json: bool) -> None:
    """Preview each file; exit 7 when one would be refused, 1 when one cannot be read."""
    from adapters.ingest.preview import preview_file

    outcomes: list[dict[str, Any]] = []
    refused = unreadable = False
    for path in files:
        try:
            data = path.read_bytes()
        except OSError as exc:
            unreadable = True
            typer.echo(f"error: cannot read {path}: {exc.strerror}", err=True)
            continue
        preview = preview_file(
            data,
            filename=path.name,
            fmt=_choice(fmt),
            source=source,
            max_statement_bytes=settings().max_statement_bytes,
        )
        refused = refused or not preview.ok
        outcomes.append({**preview.as_json(), "file": str(path)})
        if not as_json:
            _echo_preview(preview)
    if as_json:
        print_json(outcomes)
    if refused:
        raise typer.Exit(EXIT_INVALID)
    if unreadable:
        raise typer.Exit(EXIT_REFUSED)


async def _start_producer(cfg: Settings, bootstrap: str, topics: Topics) -> Any:
    """Check the topic, then start a producer (the caller stops it)."""
    from adapters.ingest.producer import producer_params, require_received_topic
    from routing.broker.errors import kafka_errors
    from routing.broker.producer import make_producer

    await require_received_topic(bootstrap, topics)
    producer = make_producer(
        producer_params(cfg, bootstrap_servers=bootstrap, client_id=_CLIENT_ID)
    )
    try:
        async with kafka_errors("starting the ingest producer", bootstrap):
            await producer.start()
    except BaseException:
        await producer.stop()
        raise
    return producer


async def _ingest_files(
    cfg: Settings,
    bootstrap: str,
    files: list[Path],
    *,
    fmt: IngestFormat,
    source: str | None,
    done: Path | None,
    quarantine_dir: Path | None,
    keep: bool,
    as_json: bool,
    outcomes: list[dict[str, Any]],
) -> int:
    """Publish each file in turn and return the exit code. BrokerError stops the run.

    A refused file does not stop the others: each file is its own unit.
    """
    from adapters.ingest.dropfolder import QUARANTINE, settle
    from adapters.ingest.producer import publish_file

    topics = topic_catalogue(cfg)
    producer = await _start_producer(cfg, bootstrap, topics)
    refused = trouble = False
    try:
        for path in files:
            try:
                report = await publish_file(
                    producer,
                    topics,
                    path,
                    fmt=_choice(fmt),
                    source=source,
                    max_statement_bytes=cfg.max_statement_bytes,
                )
            except OSError as exc:
                trouble = True
                typer.echo(f"error: cannot read {path}: {exc}", err=True)
                continue
            moved = None
            if not keep:
                quarantined = quarantine_dir or path.parent / QUARANTINE
                try:
                    moved = settle(path, report, done=done, quarantined=quarantined)
                except OSError as exc:
                    trouble = True
                    typer.echo(f"error: cannot move {path}: {exc}", err=True)
            refused = refused or not report.ok
            outcomes.append(_outcome(report, moved))
            if not as_json:
                _echo(report, moved)
    finally:
        await producer.stop()
    return EXIT_INVALID if refused else EXIT_REFUSED if trouble else 0


def _watch(
    cfg: Settings,
    bootstrap: str,
    directory: Path,
    *,
    fmt: IngestFormat,
    source: str | None,
    poll_interval: float,
    as_json: bool,
) -> None:
    from adapters.ingest.dropfolder import watch
    from adapters.ingest.producer import publish_file
    from routing.broker.errors import BrokerError
    from routing.entrypoints.runtime import until_signalled

    topics = topic_catalogue(cfg)

    def echo(result: DropResult) -> None:
        if as_json:
            print_json(_outcome(result.report, result.moved_to))
        else:
            _echo(result.report, result.moved_to)

    async def main(stop: asyncio.Event) -> None:
        producer = await _start_producer(cfg, bootstrap, topics)
        try:
            typer.echo(
                f"watching {directory} for bank files, publishing to {topics.received} on "
                f"{bootstrap}; done/ and quarantine/ are inside it. Ctrl-C stops.",
                err=True,
            )
            publish = functools.partial(
                publish_file,
                producer,
                topics,
                fmt=_choice(fmt),
                source=source,
                max_statement_bytes=cfg.max_statement_bytes,
            )
            await watch(directory, publish, stop, poll_interval, on_result=echo)
        finally:
            await producer.stop()

    try:
        run(until_signalled(main))
    except BrokerError as exc:
        fail(exc.message, EXIT_UNAVAILABLE)


def ingest(
    files: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Bank files to publish (CFONB 120, camt.053, MT940).",
            exists=True,
            dir_okay=False,
            readable=True,
            show_default=False,
        ),
    ] = None,
    fmt: Annotated[
        IngestFormat,
        typer.Option("--format", help="The files' format; auto detects it from the content."),
    ] = IngestFormat.AUTO,
    source: Annotated[
        str | None,
        typer.Option(
            "--source", help="The bank feed's name in the events (default: file:<basename>)."
        ),
    ] = None,
    watch_dir: Annotated[
        Path | None,
        typer.Option(
            "--watch",
            help="Watch this drop folder instead (files go to done/ or quarantine/ in it).",
            exists=True,
            file_okay=False,
        ),
    ] = None,
    bootstrap: Annotated[
        str | None,
        typer.Option(
            "--bootstrap",
            help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP_SERVERS), e.g. the "
            "embedded broker's address printed by `statement-router up`.",
        ),
    ] = None,
    quarantine_dir: Annotated[
        Path | None,
        typer.Option(
            "--quarantine",
            help="Where refused FILEs go, with <name>.error.json (default: quarantine/ "
            "beside each file).",
            file_okay=False,
        ),
    ] = None,
    done: Annotated[
        Path | None,
        typer.Option(
            "--done", help="Move published FILEs here (default: leave them).", file_okay=False
        ),
    ] = None,
    keep: Annotated[
        bool, typer.Option("--keep", help="Move no FILE, not even refused ones.")
    ] = False,
    poll_interval: Annotated[
        float, typer.Option("--poll-interval", help="Seconds between polls of --watch.", min=0.05)
    ] = 0.5,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Only read the FILEs and print what would be published (format, masked "
            "IBAN, period, balances, movements) or the refusal; needs no broker, moves nothing.",
        ),
    ] = False,
) -> None:
    """Publish bank files as statement.received/v1 events, one per statement, keyed by IBAN.

    Each file is all-or-nothing: a file with any error publishes nothing and is moved to
    quarantine with <name>.error.json naming the line and the reason.
    """
    if watch_dir is not None and files:
        raise typer.BadParameter("give FILEs or --watch DIR, not both")
    if watch_dir is None and not files:
        raise typer.BadParameter("give the FILEs to ingest, or --watch DIR")
    if watch_dir is not None and (quarantine_dir or done or keep):
        raise typer.BadParameter(
            "--quarantine, --done and --keep are for FILEs; --watch DIR always uses "
            "DIR/done/ and DIR/quarantine/"
        )
    from adapters.ingest.producer import MAX_SOURCE_LENGTH
    from routing.broker.errors import BrokerError

    if source is not None and not 1 <= len(source) <= MAX_SOURCE_LENGTH:
        raise typer.BadParameter(f"--source must be 1 to {MAX_SOURCE_LENGTH} characters")
    if dry_run:
        if watch_dir is not None or quarantine_dir or done or keep or bootstrap:
            raise typer.BadParameter(
                "--dry-run reads FILEs only: it publishes and moves nothing, so --watch, "
                "--quarantine, --done, --keep and --bootstrap do not apply"
            )
        assert files is not None
        _dry_run(files, fmt, source, as_json)
        return
    cfg = settings()
    servers = _bootstrap(cfg, bootstrap)
    require_reachable(servers, "publishing bank files")
    if watch_dir is not None:
        _watch(
            cfg,
            servers,
            watch_dir,
            fmt=fmt,
            source=source,
            poll_interval=poll_interval,
            as_json=as_json,
        )
        return
    assert files is not None
    outcomes: list[dict[str, Any]] = []
    try:
        code = run(
            _ingest_files(
                cfg,
                servers,
                files,
                fmt=fmt,
                source=source,
                done=done,
                quarantine_dir=quarantine_dir,
                keep=keep,
                as_json=as_json,
                outcomes=outcomes,
            )
        )
    except BrokerError as exc:
        if as_json:
            print_json(outcomes)
        fail(exc.message, EXIT_UNAVAILABLE)
    if as_json:
        print_json(outcomes)
    if code:
        raise typer.Exit(code)
