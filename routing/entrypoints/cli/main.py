"""``statement-router``: the operations of the FAQ, the back office, and the processes.

User-level operations (the FAQ's) authenticate with a user's token (``--token`` or
``STATEMENT_ROUTER_TOKEN``) and obey the same rules as the API. Back-office operations
(cabinets, users, IBANs, mandates) are for So bank's operators and run without a token.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer

from routing.domain.decide import diagnose as diagnose_state
from routing.domain.model import Actor, IbanState, MandateStatus, Profile
from routing.entrypoints.cli import adapters as adapters_cli
from routing.entrypoints.cli import ingest, pipeline, statements
from routing.entrypoints.cli import monitor as monitor_cli
from routing.entrypoints.cli import partner as partner_cli
from routing.entrypoints.cli.common import (
    EXIT_CONFLICT,
    EXIT_INVALID,
    as_user,
    catalogue,
    fail,
    print_json,
    run,
    settings,
    with_store,
)
from routing.entrypoints.cli.help import HumanTyper, version_option

if TYPE_CHECKING:
    from routing.ports import StateStore


class LocalBrokerKind(StrEnum):
    """The brokers ``up`` can start itself."""

    tansu = "tansu"
    kafka = "kafka"


app = HumanTyper(
    name="statement-router",
    help="Route bank statements to partner connectors or to the cabinet's global file.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _options(
    _version: Annotated[
        bool | None,
        typer.Option("--version", help="Print the version and exit.", is_eager=True,
                     callback=version_option),
    ] = None,
) -> None:
    """Route bank statements to partner connectors or to the cabinet's global file."""
db_app = typer.Typer(help="The state store's schema.", no_args_is_help=True)
cabinet_app = typer.Typer(help="Cabinets and their connectors.", no_args_is_help=True)
cabinet_connectors_app = typer.Typer(
    help="A cabinet's connectors (superviseur or administrateur).", no_args_is_help=True
)
user_app = typer.Typer(help="Users and their tokens.", no_args_is_help=True)
iban_app = typer.Typer(help="Client IBANs and their connector.", no_args_is_help=True)
mandate_app = typer.Typer(help="Mandates (the bank's approval of an IBAN).", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(cabinet_app, name="cabinet")
cabinet_app.add_typer(cabinet_connectors_app, name="connectors")
app.add_typer(user_app, name="user")
app.add_typer(iban_app, name="iban")
app.add_typer(mandate_app, name="mandate")
app.add_typer(pipeline.topics_app, name="topics")
app.add_typer(pipeline.schemas_app, name="schemas")
app.command("relay")(pipeline.relay)
app.command("router")(pipeline.router)
app.command("ingest")(ingest.ingest)
statements.register(app)  # global-file download/build, trace, ledger
app.add_typer(adapters_cli.adapters_app, name="adapters")
app.add_typer(adapters_cli.dlq_app, name="dlq")
app.add_typer(adapters_cli.operator_app, name="operator")
app.add_typer(partner_cli.partner_app, name="partner")
app.command("monitor")(monitor_cli.monitor)

TokenOpt = Annotated[
    str | None,
    typer.Option("--token", help="The acting user's token (default: $STATEMENT_ROUTER_TOKEN)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def _state_dict(state: IbanState) -> dict[str, object]:
    return {
        "iban": state.iban,
        "cabinet_id": state.cabinet_id,
        "client_ref": state.client_ref,
        "connector_id": state.connector_id,
        "connector_on_cabinet": state.connector_on_cabinet,
        "mandate_status": state.mandate_status.value,
        "active": state.active,
        "version": state.version,
        "updated_at": state.updated_at.isoformat(),
    }


def _echo_state(state: IbanState, as_json: bool) -> None:
    if as_json:
        print_json(_state_dict(state))
        return
    connector = state.connector_id or "Aucun connecteur"
    typer.echo(
        f"{state.iban}  cabinet={state.cabinet_id}  connector={connector}  "
        f"mandate={state.mandate_status.value}  version={state.version}"
    )


# --- db --------------------------------------------------------------------------------
@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the state store's schema to the latest version (Alembic)."""
    from routing.store.migrate import upgrade

    cfg = settings()
    run(upgrade(cfg.effective_database_url))
    typer.echo("database is at the latest schema version")


# --- back office -----------------------------------------------------------------------
@cabinet_app.command("create")
def cabinet_create(
    cabinet_id: Annotated[str, typer.Argument(help="The cabinet's id.")],
    name: Annotated[str, typer.Option("--name", help="Display name.")],
) -> None:
    """Create a cabinet."""

    async def action(store: StateStore) -> None:
        await store.create_cabinet(cabinet_id, name)

    with_store(settings(), action, create=True)
    typer.echo(f"cabinet {cabinet_id} created")


@user_app.command("create")
def user_create(
    cabinet: Annotated[str, typer.Option("--cabinet", help="The user's cabinet.")],
    profile: Annotated[Profile, typer.Option("--profile", help="The user's profile.")],
    name: Annotated[str | None, typer.Option("--name", help="Display name.")] = None,
) -> None:
    """Create a user. The token is printed once, on the last line; only its hash is kept."""

    async def action(store: StateStore) -> str:
        user = await store.create_user(cabinet, profile, name)
        typer.echo(f"user {user.user_id} ({user.profile.value}) created in cabinet {cabinet}")
        return user.token

    token = with_store(settings(), action)
    typer.echo(token)


@iban_app.command("add")
def iban_add(
    iban: Annotated[str, typer.Argument(help="The client's IBAN.")],
    cabinet: Annotated[str, typer.Option("--cabinet", help="The cabinet the IBAN belongs to.")],
    client: Annotated[str | None, typer.Option("--client", help="The client's reference.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Register a client IBAN under a cabinet; its mandate starts pending."""

    async def action(store: StateStore) -> IbanState:
        return await store.add_iban(iban, cabinet, client)

    _echo_state(with_store(settings(), action), as_json)


@mandate_app.command("set")
def mandate_set(
    iban: Annotated[str, typer.Argument(help="The IBAN.")],
    status: Annotated[MandateStatus, typer.Argument(help="The mandate's new status.")],
    as_json: JsonOpt = False,
) -> None:
    """Record the bank's mandate decision: approved makes the IBAN active."""

    async def action(store: StateStore) -> IbanState:
        return await store.set_mandate(iban, status)

    _echo_state(with_store(settings(), action), as_json)


# --- the FAQ operations, as a user -----------------------------------------------------
@app.command("connectors")
def connectors(as_json: JsonOpt = False) -> None:
    """List the connector catalogue and the adapter each connector uses."""
    from routing.entrypoints.cli.catalogue import catalogue_in_use

    specs = catalogue_in_use(settings()).values()
    if as_json:
        print_json(
            [{"connector_id": s.connector_id, "name": s.name, "adapter": s.adapter} for s in specs]
        )
        return
    for spec in specs:
        typer.echo(f"{spec.connector_id:<12} {spec.name:<12} {spec.adapter}")


@cabinet_connectors_app.command("list")
def cabinet_connectors_list(
    cabinet_id: Annotated[str, typer.Argument(help="The cabinet.")],
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List the connectors added to a cabinet."""

    async def action(store: StateStore, actor: Actor) -> list[str]:
        return await store.list_cabinet_connectors(actor, cabinet_id)

    ids = as_user(token, action)
    if as_json:  # the body of GET /cabinets/{id}/connectors
        from routing.entrypoints.cli.catalogue import catalogue_in_use

        specs = catalogue_in_use(settings())
        print_json(
            {
                "cabinet_id": cabinet_id,
                "connectors": [
                    {"connector_id": i, "name": specs[i].name, "adapter": specs[i].adapter}
                    if i in specs
                    else {"connector_id": i, "name": i, "adapter": "unknown"}
                    for i in ids
                ],
            }
        )
    else:
        for connector_id in ids:
            typer.echo(connector_id)


@cabinet_connectors_app.command("add")
def cabinet_connectors_add(
    cabinet_id: Annotated[str, typer.Argument(help="The cabinet.")],
    connector_id: Annotated[str, typer.Argument(help="The connector, e.g. acd.")],
    token: TokenOpt = None,
) -> None:
    """Add a connector to a cabinet (rule 1: superviseur or administrateur)."""

    async def action(store: StateStore, actor: Actor) -> bool:
        return await store.add_cabinet_connector(actor, cabinet_id, connector_id)

    added = as_user(token, action)
    verb = "added to" if added else "was already on"
    typer.echo(f"connector {connector_id} {verb} cabinet {cabinet_id}")


@cabinet_connectors_app.command("remove")
def cabinet_connectors_remove(
    cabinet_id: Annotated[str, typer.Argument(help="The cabinet.")],
    connector_id: Annotated[str, typer.Argument(help="The connector, e.g. acd.")],
    token: TokenOpt = None,
) -> None:
    """Remove a connector from a cabinet (rule 2: only when no IBAN is bound to it)."""

    async def action(store: StateStore, actor: Actor) -> None:
        await store.remove_cabinet_connector(actor, cabinet_id, connector_id)

    as_user(token, action)
    typer.echo(f"connector {connector_id} removed from cabinet {cabinet_id}")


@iban_app.command("show")
def iban_show(
    iban: Annotated[str, typer.Argument(help="The IBAN.")],
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show an IBAN of your cabinet."""

    async def action(store: StateStore, actor: Actor) -> IbanState:
        return await store.get_iban(actor, iban)

    _echo_state(as_user(token, action), as_json)


@iban_app.command("list")
def iban_list(
    cabinet_id: Annotated[str, typer.Argument(help="Your cabinet.")],
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List your cabinet's IBANs: connector, mandate, active (the FAQ's « page IBAN »)."""

    async def action(store: StateStore, actor: Actor) -> list[IbanState]:
        return await store.list_ibans(actor, cabinet_id)

    states = as_user(token, action)
    if as_json:  # the body of GET /cabinets/{id}/ibans
        from routing.entrypoints.api.models import CabinetIbansOut, IbanStateOut

        body = CabinetIbansOut(cabinet_id=cabinet_id, ibans=[IbanStateOut.of(s) for s in states])
        print_json(body.model_dump(mode="json"))
        return
    for state in states:
        _echo_state(state, False)


@iban_app.command("bind")
def iban_bind(
    iban: Annotated[str, typer.Argument(help="The IBAN.")],
    connector_id: Annotated[str, typer.Argument(help="A connector added to the cabinet.")],
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Bind an IBAN to a connector (rule 3: the connector must be on the cabinet)."""

    async def action(store: StateStore, actor: Actor) -> IbanState:
        return await store.bind_iban(actor, iban, connector_id)

    _echo_state(as_user(token, action), as_json)


@iban_app.command("unbind")
def iban_unbind(
    iban: Annotated[str, typer.Argument(help="The IBAN.")],
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Set the IBAN's connector to « Aucun connecteur » (rule 4)."""

    async def action(store: StateStore, actor: Actor) -> IbanState:
        return await store.bind_iban(actor, iban, None)

    _echo_state(as_user(token, action), as_json)


@app.command("diagnose")
def diagnose(
    iban: Annotated[str, typer.Argument(help="The IBAN whose statements do not arrive.")],
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the FAQ checklist for an IBAN of your cabinet."""
    from routing.domain.decide import Verdict
    from routing.entrypoints.api.models import DiagnosisOut
    from routing.entrypoints.bootstrap import delivery_ledger
    from routing.store.sql import SqlStateStore

    async def action(store: StateStore, actor: Actor) -> DiagnosisOut:
        state = await store.get_iban(actor, iban)
        result = diagnose_state(state, catalogue(settings()))
        if result.verdict is not Verdict.CONTACT_SUPPORT or not isinstance(store, SqlStateStore):
            return DiagnosisOut.of(state.iban, result)
        # As GET /ibans/{iban}/diagnosis: every check passes, so the last statements say more.
        recent = await delivery_ledger(store).recent_statements(actor, state.iban, limit=5)
        return DiagnosisOut.of(state.iban, result, recent)

    result = as_user(token, action)
    if as_json:
        print_json(result.model_dump(mode="json"))
        return
    for check in result.checks:
        mark = "ok " if check.ok else "NOK"
        typer.echo(f"{check.step}. [{mark}] {check.message_fr}")
    typer.echo(f"=> {result.message_fr}")
    for recent in result.recent_statements:
        typer.echo(f"   {recent.statement_id}  {recent.status}  ({recent.last_outcome})")


# --- processes -------------------------------------------------------------------------
@app.command("api")
def api(
    host: Annotated[str | None, typer.Option("--host", help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option("--port", help="TCP port.")] = None,
) -> None:
    """Serve the HTTP API (default 127.0.0.1:8080)."""
    import asyncio

    from routing.entrypoints.runtime import until_signalled
    from routing.entrypoints.serve import serve_api

    cfg = settings()
    bind_host, bind_port = host or cfg.api_host, port if port is not None else cfg.api_port

    async def main(stop: asyncio.Event) -> None:
        # Stopped like every other role, so SIGTERM ends in exit 0: left to itself, uvicorn
        # re-raises the signal after its graceful shutdown and the process dies of it.
        await serve_api(cfg, bind_host, bind_port, stop)

    run(until_signalled(main))


@app.command("up")
def up(
    demo: Annotated[bool, typer.Option("--demo", help="Seed and feed the demo.")] = False,
    exit_after_demo: Annotated[
        bool, typer.Option("--exit-after-demo", help="Stop once the demo report is printed.")
    ] = False,
    broker: Annotated[
        LocalBrokerKind,
        typer.Option(
            "--broker",
            help=(
                "The broker to start when KAFKA_BOOTSTRAP_SERVERS is unset: tansu (embedded, "
                "no setup) or kafka (Apache Kafka itself; needs a JDK, and Maven on first use)."
            ),
        ),
    ] = LocalBrokerKind.tansu,
) -> None:
    """Start everything on this machine: broker (embedded unless configured), API, pipeline."""
    from adapters.delivery import DeliveryConfigError
    from routing.entrypoints.up import run_up
    from routing.entrypoints.up_lock import UpRefused

    cfg = settings()
    if demo and "log_level" not in cfg.model_fields_set:
        # The demo's report is for a person to read: the roles' info lines would interleave
        # with it. Warnings and errors still show; LOG_LEVEL=INFO brings the rest back.
        from routing.observability.logs import configure_logging

        configure_logging(cfg.log_format, "WARNING")
    try:
        run(run_up(cfg, demo=demo, exit_after_demo=exit_after_demo, broker=broker.value))
    except UpRefused as exc:
        fail(str(exc), EXIT_CONFLICT)
    except DeliveryConfigError as exc:  # the message and exit code of `adapters`
        fail(str(exc), EXIT_INVALID)


def main() -> None:
    import sys

    if sys.argv[1:] and not {"--help", "--version"} & set(sys.argv[1:]):
        # Only for a command that runs: help and the version need no settings, logging
        # or collector tuning, and start faster without them.
        from routing.entrypoints.runtime import tune_gc
        from routing.observability.logs import configure_logging

        cfg = settings()
        configure_logging(cfg.log_format, cfg.log_level)
        tune_gc()
    try:
        app()
    except Exception as exc:
        from config.catalogue import CatalogueError  # imported late: see CLI start-up

        if not isinstance(exc, CatalogueError):
            raise
        # CONNECTORS_FILE declares no valid catalogue: one line, as for a bad setting.
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(EXIT_INVALID) from None


__all__ = ["app", "main"]
