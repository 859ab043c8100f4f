"""The statements' commands: the global file (download, and the builder role), the
statement trace, and the ledger role.

``global-file download`` and ``trace`` act as a user (``--token``) under the same rules as
the API; ``global-file build`` and ``ledger`` are long-running roles, like ``router``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from routing.domain.errors import DomainError
from routing.domain.identity import is_statement_key
from routing.domain.model import Actor
from routing.entrypoints.cli.common import (
    EXIT_INVALID,
    EXIT_NOT_FOUND,
    exit_code_for,
    fail,
    print_json,
    require_broker,
    require_database,
    run,
    run_role,
    settings,
    token_or_fail,
)
from routing.entrypoints.cli.pipeline import topic_catalogue
from routing.ports import AmbiguousStatement, StatementTrace, StateStore, UnknownStatement

if TYPE_CHECKING:
    from adapters.global_file import Download
    from config.settings import Settings
    from routing.entrypoints.api.statements import StatementTraceOut
    from routing.store.global_file import SqlGlobalFileStore
    from routing.store.ledger import SqlDeliveryLedger

# The heavier modules (the stores, the builder, the API models) are imported inside the
# commands, so that every other command of the CLI starts without them.
global_file_app = typer.Typer(
    help="The cabinets' global files (« Relevés »): download, and the builder role.",
    no_args_is_help=True,
)

TokenOpt = Annotated[
    str | None,
    typer.Option("--token", help="The acting user's token (default: $STATEMENT_ROUTER_TOKEN)."),
]


@dataclass(frozen=True, slots=True)
class Services:
    store: StateStore
    global_file: SqlGlobalFileStore
    ledger: SqlDeliveryLedger


@asynccontextmanager
async def open_services(cfg: Settings) -> AsyncIterator[Services]:
    """The state store, the global file and the ledger on one engine (one pool)."""
    from routing.entrypoints.bootstrap import open_store
    from routing.store.global_file import SqlGlobalFileStore
    from routing.store.ledger import SqlDeliveryLedger
    from routing.store.sql import SqlStateStore

    require_database(cfg)
    async with open_store(cfg) as store:
        if not isinstance(store, SqlStateStore):  # pragma: no cover - the only store today
            raise TypeError("the global file and the ledger need the SQL state store")
        yield Services(store, SqlGlobalFileStore(store.engine), SqlDeliveryLedger(store.engine))


def _date(text: str, option: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        fail(f"{option} {text!r} is not a date (YYYY-MM-DD)", EXIT_INVALID)


@global_file_app.command("download")
def download(
    cabinet: Annotated[str, typer.Option("--cabinet", help="Your cabinet.")],
    start: Annotated[str, typer.Option("--from", help="First day, YYYY-MM-DD (inclusive).")],
    end: Annotated[str, typer.Option("--to", help="Last day, YYYY-MM-DD (inclusive).")],
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            help="File to write (.txt or .zip, as the period's format; no extension: the "
            "right one is added); an existing directory gets the default name.",
        ),
    ],
    token: TokenOpt = None,
) -> None:
    """Download the cabinet's global file for a period (as « Télécharger » does).

    A CFONB 120 .txt, or a .zip when other formats are present; see docs/global-file.md.
    """
    from adapters.global_file import build_download

    first, last = _date(start, "--from"), _date(end, "--to")
    if first > last:
        fail(f"the period ends ({last}) before it starts ({first})", EXIT_INVALID)
    if not output.is_dir() and not output.parent.is_dir():
        fail(f"--output {output}: the directory {output.parent} does not exist; create it "
             "first, or give an existing directory", EXIT_INVALID)
    cfg = settings()
    secret = token_or_fail(token, cfg)

    async def action() -> Download:
        async with open_services(cfg) as services:
            actor = await services.store.authenticate(secret)
            entries = await services.global_file.statements(actor, cabinet, first, last)
        return build_download(cabinet, first, last, entries)

    result = run(action())
    path = _output_path(output, result.filename)
    try:
        path.write_bytes(result.content)
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror or exc}")
    typer.echo(f"wrote {result.statements} statement(s) to {path}")


_FORMATS = {
    ".txt": "a CFONB 120 text file (.txt): every statement of the period is CFONB 120",
    ".zip": "a ZIP archive (.zip): the period holds camt.053 or MT940 statements",
}


def _output_path(output: Path, filename: str) -> Path:
    """Where the download goes: a directory gets the default name, a name without an
    extension gets the format's, and a name with the other format's extension is refused
    (a ZIP saved as .txt would be imported as CFONB by the cabinet's tool)."""
    if output.is_dir():
        return output / filename
    suffix = Path(filename).suffix
    if not output.suffix:
        return output.with_name(output.name + suffix)
    if output.suffix.lower() != suffix:
        fail(f"--output {output}: the global file for this period is {_FORMATS[suffix]}; "
             f"name it *{suffix}, or give a directory for the default name ({filename})",
             EXIT_INVALID)
    return output


def _run_role(role: str, runner: Callable[..., Awaitable[object]]) -> None:
    """Run a consumer role (builder or ledger) on the state store until a signal."""
    from routing.observability.metrics_http import metrics_endpoint

    cfg = settings()
    bootstrap = require_broker(cfg)

    async def main(stop: asyncio.Event) -> None:
        await _migrate_embedded(cfg)
        async with metrics_endpoint(cfg):
            await runner(
                cfg,
                topic_catalogue(cfg),
                cfg.effective_database_url,
                stop,
                bootstrap_servers=bootstrap,
            )

    run_role(role, bootstrap, main)


@global_file_app.command("build")
def build() -> None:
    """Run the global-file builder: store each routed statement in its cabinet's file."""
    from routing.entrypoints.bootstrap import run_global_file_builder

    _run_role("global-file builder", run_global_file_builder)


def trace(
    statement_id: Annotated[str, typer.Argument(help="The statement's id.")],
    token: TokenOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    operator: Annotated[
        bool,
        typer.Option(
            "--operator",
            help="Back office, no token: any cabinet's statement, held-unknown and invalid "
            "ones included (those are read from the broker's statements.invalid).",
        ),
    ] = False,
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            help="The statement key (16 hex digits), to choose one statement when the id "
            "names several (two accounts, or an id reused for other content).",
        ),
    ] = None,
) -> None:
    """Where a statement is and why: routing trace, every step, status (your cabinet's)."""
    from routing.entrypoints.api.statements import StatementTraceOut

    cfg = settings()
    if key is not None and not is_statement_key(key):
        fail(f"--key must be a statement key, 16 lower-case hex digits (got {key!r})",
             EXIT_INVALID)
    if operator:
        result = _operator_trace(cfg, statement_id, as_json, key)
        if result is None:
            return
    else:
        secret = token_or_fail(token, cfg)

        async def action() -> StatementTraceOut:
            async with open_services(cfg) as services:
                actor = await services.store.authenticate(secret)
                with _listing_ambiguity():
                    found = await _trace_by_prefix(services, actor, statement_id, key)
                return StatementTraceOut.of(found)

        result = run(action())
    if as_json:
        print_json(result.model_dump(mode="json"))
        return
    cabinet = result.cabinet_id or "(none)"
    typer.echo(f"{result.statement_id}  cabinet={cabinet}  iban={result.iban or '?'}"
               f"  key={result.key or '?'}")
    if result.other_contents:
        typer.echo(f"note: {len(result.other_contents)} other statement(s) of this account "
                   "under the same id (a reused id); each has its own key")
    typer.echo(f"status: {result.summary}")
    if result.routing is not None:
        r = result.routing
        checks = (
            "unknown"
            if r.checks is None
            else ", ".join(f"{c.name}={'ok' if c.ok else 'NOK'}" for c in r.checks)
        )
        typer.echo(
            f"routing: {r.destination} ({r.reason})  state_version={r.state_version}  "
            f"checks: {checks}"
        )
    for step in result.outcomes:
        attempt = f" #{step.attempt}" if step.attempt is not None else ""
        typer.echo(f"  {step.at.isoformat()}  {step.outcome}{attempt}  {step.detail or ''}")


@contextlib.contextmanager
def _listing_ambiguity() -> Iterator[None]:
    """An id that names several statements (routing.domain.identity): list them, one line
    each with the key to pass as ``--key``, and exit as the API's 409 would."""
    try:
        yield
    except AmbiguousStatement as exc:
        lines = [
            f"  --key {c.key or '?'}  iban={c.iban or '?'}  status={c.status}  "
            f"first_seen={c.first_seen.isoformat() if c.first_seen else '?'}  "
            f"content_sha256={c.content_sha256 or '?'}"
            for c in exc.candidates
        ]
        fail("\n".join([exc.message, *lines]), exit_code_for(exc))


async def _trace_by_prefix(
    services: Services, actor: Actor, prefix: str, key: str | None = None
) -> StatementTrace:
    """The trace of the statement whose id is ``prefix``, or the only one of the actor's
    cabinet whose id starts with it (the demo report prints ids; type a few characters).
    ``key`` chooses among the statements an id names (``AmbiguousStatement`` otherwise)."""
    try:
        return await services.ledger.trace(actor, prefix, key)
    except UnknownStatement:
        pass
    found: list[str] = []
    for candidate in await services.ledger.statement_ids_starting(prefix):
        try:
            await services.ledger.trace(actor, candidate)
        except AmbiguousStatement:
            pass  # the actor's, several times over: still one id that matches
        except DomainError:
            continue  # another cabinet's: not a candidate
        found.append(candidate)
    if len(found) == 1:
        return await services.ledger.trace(actor, found[0], key)
    if not found:
        raise UnknownStatement(prefix)
    names = ", ".join(found)
    fail(f"{prefix!r} starts several statement ids ({names}); give more of it", EXIT_INVALID)


def _operator_trace(
    cfg: Settings, prefix: str, as_json: bool, key: str | None = None
) -> StatementTraceOut | None:
    """The ledger's trace of any statement; else its record in ``statements.invalid``
    (printed here, None returned), else exit 5."""
    from routing.entrypoints.api.statements import StatementTraceOut

    async def from_ledger() -> StatementTraceOut | None:
        async with open_services(cfg) as services:
            with _listing_ambiguity():
                found = await services.ledger.operator_trace(prefix, key)
                if found is None:
                    ids = await services.ledger.statement_ids_starting(prefix)
                    if len(ids) > 1:
                        fail(f"{prefix!r} starts several statement ids ({', '.join(ids)}); "
                             "give more of it", EXIT_INVALID)
                    found = await services.ledger.operator_trace(ids[0], key) if ids else None
            return None if found is None else StatementTraceOut.of(found)

    traced = run(from_ledger())
    if traced is not None:
        return traced
    from routing.entrypoints.cli.pipeline import invalid_records

    records = run(invalid_records(cfg, prefix))
    if not records:
        fail(f"statement {prefix} is neither in the delivery ledger nor in "
             f"{cfg.topic_prefix}.statements.invalid", EXIT_NOT_FOUND)
    if as_json:
        print_json(records)
        return None
    for record in records:
        typer.echo(f"{record.get('statement_id') or '(no id)'}  status: invalid "
                   f"(never routed; {cfg.topic_prefix}.statements.invalid)")
        typer.echo(f"reason: {record.get('reason')}")
    return None


def ledger() -> None:
    """Run the delivery ledger: record every delivery outcome, once."""
    from routing.entrypoints.bootstrap import run_ledger

    _run_role("ledger", run_ledger)


async def _migrate_embedded(cfg: Settings) -> None:
    """The embedded SQLite file migrates itself (as ``open_store`` does); PostgreSQL only
    through ``db upgrade``."""
    from routing.store.migrate import upgrade

    if not cfg.database_url:
        await upgrade(cfg.effective_database_url)


def register(app: typer.Typer) -> None:
    """Add these commands to the main CLI (one line in ``routing.entrypoints.cli.main``)."""
    app.add_typer(global_file_app, name="global-file")
    app.command("trace")(trace)
    app.command("ledger")(ledger)
