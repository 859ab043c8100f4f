"""The adapter workers' commands: run them, list and replay dead letters, operator tokens.

* ``statement-router adapters [--connector X ...]``: deliver to the partners configured in
  ``CONNECTORS_FILE`` (all of them by default), one supervised worker per connector,
  following the file as it changes (``adapters.supervisor``, ``adapters.catalogue_reload``);
* ``statement-router adapters enable X``: restart connector X's worker in the running
  adapters process (after a 410, or a fatal error that stopped it), through the control
  topic (``adapters.control``);
* ``statement-router dlq list --connector X`` and ``dlq replay --connector X
  (--statement ID ... | --all) [--force]``;
* ``statement-router operator token``: a new operator token for the ``/ops`` API.

Exit codes follow docs/api.md#exit-codes: 5 unknown connector or dead letter, 6 already replayed,
7 invalid configuration, 8 broker unavailable (or a worker crashed on it).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated

import typer

from routing.entrypoints.cli.common import (
    EXIT_CONFLICT,
    EXIT_INVALID,
    EXIT_NOT_FOUND,
    EXIT_UNAVAILABLE,
    catalogue,
    fail,
    print_json,
    require_broker,
    require_reachable,
    run,
    run_role,
    settings,
    usage_error,
)
from routing.entrypoints.cli.pipeline import topic_catalogue

if TYPE_CHECKING:
    from adapters.dlq import DeadLetterEntry
    from config.settings import Settings

adapters_app = typer.Typer(
    help="Deliver partner statements (one isolated worker per connector); enable a stopped "
         "or disabled connector.",
    invoke_without_command=True,
)
dlq_app = typer.Typer(help="Dead letters: list and replay failed partner deliveries.",
                      no_args_is_help=True)
operator_app = typer.Typer(help="Operator access to the /ops API.", no_args_is_help=True)

ConnectorOpt = Annotated[str, typer.Option("--connector", help="The connector, e.g. acd.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def _bootstrap(cfg: Settings, action: str) -> str:
    bootstrap = require_broker(cfg)
    require_reachable(bootstrap, action)
    return bootstrap


def _known(cfg: Settings, connector_id: str) -> str:
    if connector_id not in catalogue(cfg):
        fail(f"connector {connector_id} is not in the connector catalogue "
             f"({', '.join(catalogue(cfg))})", EXIT_NOT_FOUND)
    return connector_id


@adapters_app.callback()
def adapters(
    ctx: typer.Context,
    connector: Annotated[
        list[str] | None,
        typer.Option("--connector", help="Run only this connector (repeatable). Default: all."),
    ] = None,
) -> None:
    """Deliver partner statements: one isolated worker per connector (CONNECTORS_FILE).

    Connectors added to, changed in or removed from the file are picked up while it runs.
    """
    if ctx.invoked_subcommand is not None:
        return
    from adapters.catalogue_reload import ReloadingAdapters
    from adapters.delivery import DeliveryConfigError
    from adapters.endpoints import load_connectors
    from adapters.worker import AdapterCrashed
    from routing.broker.errors import BrokerError
    from routing.entrypoints.bootstrap import run_adapters_role
    from routing.observability.metrics_http import metrics_endpoint

    cfg = settings()
    bootstrap = require_broker(cfg)
    try:
        endpoints = load_connectors(cfg).endpoints
    except DeliveryConfigError as exc:
        fail(str(exc), EXIT_INVALID)
    for connector_id in connector or []:
        _known(cfg, connector_id)
    ids = list(connector) if connector else list(endpoints)
    missing = [c for c in ids if c not in endpoints]
    if missing or not ids:
        where = cfg.connectors_file or "(CONNECTORS_FILE is not set)"
        fail(f"no partner endpoint for {', '.join(missing) or 'any connector'} in {where}; "
             "see docs/delivery.md", EXIT_INVALID)

    path = cfg.connectors_file
    assert path is not None  # no file: no endpoint, refused above

    async def main(stop: asyncio.Event) -> None:
        async with metrics_endpoint(cfg):
            pool = ReloadingAdapters(cfg, topic_catalogue(cfg), path,
                                     bootstrap_servers=bootstrap, connector_ids=connector)
            await run_adapters_role(cfg, bootstrap, lambda producer: pool.run(stop, producer))

    try:
        run_role("adapters", bootstrap, main)
    except (AdapterCrashed, BrokerError) as exc:
        fail(str(exc), EXIT_UNAVAILABLE)


@adapters_app.command("enable")
def adapters_enable(
    connector: Annotated[str, typer.Argument(help="The connector to resume, e.g. acd.")],
    wait: Annotated[
        float,
        typer.Option("--wait", help="Seconds to wait for its worker to report running "
                                    "(0: do not wait)."),
    ] = 30.0,
    as_json: JsonOpt = False,
) -> None:
    """Resume a connector stopped by a fatal error or disabled by a 410, without a restart.

    Publishes an enable command on the adapters' control topic; the adapters process
    running the connector restarts its worker, which resumes from its committed offset.
    """
    from adapters.control import request_enable, wait_for_running
    from routing.broker.errors import BrokerError

    cfg = settings()
    bootstrap = _bootstrap(cfg, "enabling a connector")
    connector_id = _known(cfg, connector)
    topics = topic_catalogue(cfg)
    try:
        command = run(request_enable(bootstrap, topics, connector_id, requested_by="cli"))
        state = (run(wait_for_running(bootstrap, topics, command, within=wait))
                 if wait > 0 else None)
    except BrokerError as exc:
        fail(exc.message, EXIT_UNAVAILABLE)
    if as_json:
        print_json({"connector_id": connector_id, "requested_at": command.at.isoformat(),
                    "worker": state.state if state is not None else None,
                    "worker_since": state.at.isoformat() if state is not None else None})
    elif state is not None:
        typer.echo(f"{connector_id}: worker running again since {state.at.isoformat()}")
    else:
        typer.echo(f"{connector_id}: enable requested at {command.at.isoformat()}")
    if wait > 0 and state is None:
        fail(f"no adapters process reported {connector_id}'s worker running within {wait:g} s: "
             "is `statement-router adapters` running for it? (a process that starts later "
             "starts every worker anyway)", EXIT_UNAVAILABLE)


def _echo_entry(entry: DeadLetterEntry) -> None:
    s = entry.summary()
    status = "open" if entry.open else f"replayed {s['replayed_at']}"
    code = s["last_status_code"] if s["last_status_code"] is not None else "-"
    typer.echo(f"{s['dead_lettered_at']}  {s['statement_id']}  {s['iban']}  "
               f"attempts={s['attempts']} status={code}  [{status}]\n    {s['reason']}")
    if (parked := s["parked"]) is not None:
        typer.echo(f"    parked: not copied; the record is {parked['topic']} partition "
                   f"{parked['partition']} offset {parked['offset']} "
                   f"({parked['payload_bytes']} bytes)")


@dlq_app.command("list")
def dlq_list(
    connector: ConnectorOpt,
    open_only: Annotated[bool, typer.Option("--open", help="Only those not replayed.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """List a connector's dead letters: statement, masked IBAN, reason, attempts, time."""
    from adapters.dlq import list_dead_letters
    from routing.broker.errors import BrokerError

    cfg = settings()
    bootstrap = _bootstrap(cfg, "listing dead letters")
    connector_id = _known(cfg, connector)
    try:
        entries = run(list_dead_letters(bootstrap, topic_catalogue(cfg), connector_id))
    except BrokerError as exc:
        fail(exc.message, EXIT_UNAVAILABLE)
    if open_only:
        entries = [e for e in entries if e.open]
    if as_json:  # the body of GET /ops/dlq/{connector_id}
        print_json(
            {
                "connector_id": connector_id,
                "open": sum(1 for e in entries if e.open),
                "dead_letters": [e.summary() for e in entries],
            }
        )
        return
    for entry in entries:
        _echo_entry(entry)
    still_open = sum(1 for e in entries if e.open)
    typer.echo(f"{len(entries)} dead letter(s) for {connector_id}, {still_open} open")


@dlq_app.command("replay")
def dlq_replay(
    connector: ConnectorOpt,
    statement: Annotated[
        list[str] | None,
        typer.Option("--statement", help="Replay this statement's dead letter (repeatable)."),
    ] = None,
    replay_all: Annotated[bool, typer.Option("--all", help="Replay every open dead letter.")] = (
        False
    ),
    force: Annotated[
        bool, typer.Option("--force", help="Replay a --statement even if already replayed.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Re-publish dead letters to the partner topic; the worker delivers them again."""
    from adapters.dlq import (
        AlreadyReplayed,
        DeadLetterError,
        NoSuchDeadLetter,
        RecordGone,
        ReplayReport,
        replay_dead_letters,
    )
    from routing.broker.errors import BrokerError

    if bool(statement) == replay_all:
        usage_error("give either --statement ID (repeatable) or --all")
    cfg = settings()
    bootstrap = _bootstrap(cfg, "replaying dead letters")
    connector_id = _known(cfg, connector)
    try:
        report: ReplayReport = run(replay_dead_letters(
            bootstrap, topic_catalogue(cfg), connector_id,
            statement_ids=None if replay_all else list(statement or []), force=force))
    except NoSuchDeadLetter as exc:
        fail(exc.message, EXIT_NOT_FOUND)
    except AlreadyReplayed as exc:
        fail(exc.message, EXIT_CONFLICT)
    except RecordGone as exc:
        fail(exc.message, EXIT_NOT_FOUND)
    except DeadLetterError as exc:
        fail(exc.message)
    except BrokerError as exc:
        fail(exc.message, EXIT_UNAVAILABLE)
    if as_json:
        print_json(report.as_dict())
        return
    for sid in report.replayed:
        typer.echo(f"replayed {sid}")
    for sid in report.gone or []:
        typer.echo(f"not replayed {sid}: its parked record is gone from the partner topic "
                   "(retention); ask its producer to send it again")
    typer.echo(f"{len(report.replayed)} statement(s) replayed to {connector_id}")


@operator_app.command("token")
def operator_token() -> None:
    """Make an operator token. Give the token to the operators; configure only its hash."""
    from routing.entrypoints.api.ops import new_operator_token

    token, digest = new_operator_token()
    typer.echo("# Put this in the API's environment (the token itself is never stored):")
    typer.echo(f"OPERATOR_TOKEN_SHA256={digest}")
    typer.echo("# The operator token, shown once (Authorization: Bearer <token>):")
    typer.echo(token)
