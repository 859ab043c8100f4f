"""What every CLI command shares: settings, the store's lifetime, and refusals as exit codes.

A refusal prints its reason on stderr and exits non-zero, with a code per kind so that
scripts can tell them apart (docs/api.md lists them).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import typer

from routing.domain.errors import (
    AuthenticationFailed,
    Conflict,
    DomainError,
    InvalidIban,
    InvalidIdentifier,
    NotFound,
    PermissionDenied,
)
from routing.domain.model import Actor

if TYPE_CHECKING:
    from config.catalogue import Catalogue
    from config.errors import ConfigError
    from config.settings import Settings
    from routing.ports import StateStore

# The CLI's modules import the heavy libraries (aiokafka, SQLAlchemy, Alembic, asyncssh,
# FastAPI, pydantic-settings) inside the commands that use them, so `--help` and the
# light commands start without them (benchmarks/cli_startup.py, docs/performance.md).

T = TypeVar("T")

EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNAUTHENTICATED = 3
EXIT_FORBIDDEN = 4
EXIT_NOT_FOUND = 5
EXIT_CONFLICT = 6
EXIT_INVALID = 7
EXIT_UNAVAILABLE = 8

_EXIT_CODES: tuple[tuple[type[DomainError], int], ...] = (
    (AuthenticationFailed, EXIT_UNAUTHENTICATED),
    (PermissionDenied, EXIT_FORBIDDEN),
    (NotFound, EXIT_NOT_FOUND),
    (Conflict, EXIT_CONFLICT),
    (InvalidIban, EXIT_INVALID),
    (InvalidIdentifier, EXIT_INVALID),
)


def catalogue(cfg: Settings) -> Catalogue:
    """The deployment's connector catalogue (``routing.entrypoints.bootstrap.catalogue``)."""
    from routing.entrypoints.bootstrap import catalogue as deployment_catalogue

    return deployment_catalogue(cfg)


def fail(message: str, code: int = EXIT_REFUSED) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def usage_error(message: str) -> NoReturn:
    """A command given the wrong options: exit 2, as the options' own parser does."""
    raise typer.BadParameter(message)


def exit_code_for(exc: DomainError) -> int:
    for kind, code in _EXIT_CODES:
        if isinstance(exc, kind):
            return code
    return EXIT_REFUSED


def config_refused(exc: ConfigError) -> NoReturn:
    """A ``ConfigError`` (a broker configuration no role can run on) exits 8, as a missing
    ``KAFKA_BOOTSTRAP_SERVERS`` does: the command has no broker it may use."""
    fail(exc.message, EXIT_UNAVAILABLE)


def run(coro: Awaitable[T]) -> T:
    """Run a coroutine, turning refusals, outages and configuration errors into a message
    and an exit code: the CLI's one place for that (docs/api.md#exit-codes).
    """
    from config.errors import ConfigError
    from routing.broker.errors import BrokerError
    from routing.entrypoints.bootstrap import store_unavailable_errors

    try:
        return asyncio.run(_as_coroutine(coro))
    except DomainError as exc:
        fail(exc.message, exit_code_for(exc))
    except ConfigError as exc:
        config_refused(exc)
    except store_unavailable_errors() as exc:
        fail(f"the state store is unavailable: {exc}", EXIT_UNAVAILABLE)
    except BrokerError as exc:
        fail(f"the broker is unavailable: {exc}", EXIT_UNAVAILABLE)


async def _as_coroutine(awaitable: Awaitable[T]) -> T:
    return await awaitable


def require_database(cfg: Settings) -> None:
    """Refuse, rather than create an empty embedded database, when there is none.

    Only ``cabinet create`` (the first step of any setup), ``db upgrade`` and ``up`` create
    the embedded SQLite file: a command run with the wrong ``DATA_DIR`` (the demo's data is
    under ``var/demo``) must say so, not answer "invalid token" from a new empty file.
    """
    if cfg.database_url:
        return
    path = cfg.data_dir / "statement-router.db"
    if path.exists():
        return
    fail(f"no such database: {path} (DATA_DIR={cfg.data_dir}); {_where_data_is(cfg)}",
         EXIT_UNAVAILABLE)


def require_broker(cfg: Settings) -> str:
    """``KAFKA_BOOTSTRAP_SERVERS`` (``routing.entrypoints.bootstrap.broker_address``), or exit 8
    saying where a broker is.

    While a ``statement-router up`` runs on ``DATA_DIR`` the advice is its broker's
    address, not "run `statement-router up`" (which would be refused: one runs already).
    """
    address = broker_or_none(cfg)
    if address is not None:
        return address
    running = running_up_broker(cfg)
    if running is not None:
        fail(
            "KAFKA_BOOTSTRAP_SERVERS is not set; the `statement-router up` running on "
            f"DATA_DIR={cfg.data_dir} has its broker at {running}: set "
            f"KAFKA_BOOTSTRAP_SERVERS={running}",
            EXIT_UNAVAILABLE,
        )
    fail(
        "KAFKA_BOOTSTRAP_SERVERS is not set: run `statement-router up` for the embedded "
        "broker, or point it at a running Kafka",
        EXIT_UNAVAILABLE,
    )


def broker_or_none(cfg: Settings, given: str | None = None) -> str | None:
    """The broker address (``routing.entrypoints.bootstrap.broker_address``: ``given``, else
    ``KAFKA_BOOTSTRAP_SERVERS``), None when neither is set, for the caller's advice; a
    configuration no role can run on exits 8 with its reason."""
    from config.errors import ConfigError
    from routing.entrypoints.bootstrap import broker_address

    if not (given or cfg.kafka_bootstrap_servers):
        return None
    try:
        return broker_address(cfg, given)
    except ConfigError as exc:
        config_refused(exc)


def running_up_broker(cfg: Settings) -> str | None:
    from routing.entrypoints.up_lock import lock_path, running_up

    for demo in (False, True):
        running = running_up(lock_path(cfg.data_dir, demo=demo))
        if running and running.get("broker"):
            return str(running["broker"])
    return None


def require_reachable(bootstrap: str, action: str) -> None:
    """Exit 8 with one line when no bootstrap server accepts a TCP connection.

    Checked before a role builds its Kafka clients: an aiokafka client whose ``start``
    fails is left unclosed and logs about it at exit, so failing first keeps the
    refusal to the one line every role prints.
    """
    import socket

    reasons = []
    for server in bootstrap.split(","):
        address = server.strip().rpartition("://")[2]
        host, _, port = address.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]") or "localhost", int(port)), 5):
                return
        except (OSError, ValueError) as exc:
            reasons.append(f"{address}: {getattr(exc, 'strerror', None) or exc}")
    fail(f"cannot reach Kafka at {bootstrap} while {action} ({'; '.join(reasons)})",
         EXIT_UNAVAILABLE)


def run_role(
    role: str, bootstrap: str, main: Callable[[asyncio.Event], Awaitable[None]]
) -> None:
    """Run a long-running role until SIGINT/SIGTERM, as every role runs.

    The broker unreachable, at start or later, ends it with one line ``error: …`` and
    exit 8 (``adapters``' behaviour, docs/api.md#exit-codes), never a traceback.
    """
    from routing.broker.errors import BrokerError
    from routing.entrypoints.runtime import until_signalled

    require_reachable(bootstrap, f"starting the {role}")

    async def guarded(stop: asyncio.Event) -> None:
        from aiokafka.errors import KafkaError

        try:
            await main(stop)
        except KafkaError as exc:
            raise BrokerError(f"Kafka at {bootstrap} failed in the {role}: {exc}") from exc

    run(until_signalled(guarded))


def _where_data_is(cfg: Settings) -> str:
    from routing.entrypoints.up_lock import lock_path, running_up

    for demo in (False, True):
        running = running_up(lock_path(cfg.data_dir, demo=demo))
        if running and running.get("data_dir"):
            return f"a `statement-router up` runs with DATA_DIR={running['data_dir']}"
    demo_db = cfg.data_dir / "demo" / "statement-router.db"
    if demo_db.exists():
        return f"the demo's data is under DATA_DIR={demo_db.parent}"
    return "set DATA_DIR (or DATABASE_URL), or create a cabinet first (`cabinet create`)"


def with_store(
    settings: Settings, action: Callable[[StateStore], Awaitable[T]], *, create: bool = False
) -> T:
    """Open the store, run ``action`` on it, close it; refusals become exit codes.

    ``create``: the embedded database may be created (``cabinet create``); otherwise a
    missing one is refused with "no such database" (``require_database``).
    """
    from routing.entrypoints.bootstrap import open_store

    if not create:
        require_database(settings)

    async def main() -> T:
        async with open_store(settings) as store:
            return await action(store)

    return run(main())


def as_user(token: str | None, action: Callable[[StateStore, Actor], Awaitable[T]]) -> T:
    """Run ``action`` for the user holding ``token`` (or ``STATEMENT_ROUTER_TOKEN``)."""
    cfg = settings()
    secret = token_or_fail(token, cfg)

    async def authenticated(store: StateStore) -> T:
        return await action(store, await store.authenticate(secret))

    return with_store(cfg, authenticated)


def settings() -> Settings:
    """The settings; a bad value ends the process with one line and exit 7, no traceback.

    ``SystemExit`` rather than ``typer.Exit``: ``main`` reads the settings before typer
    runs (for the log level), where only a plain exit ends the process cleanly.
    """
    from config.settings import SettingsError, get_settings, settings_warnings

    try:
        cfg = get_settings()
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(EXIT_INVALID) from None
    global _warned
    if not _warned:
        _warned = True
        for warning in settings_warnings():
            typer.echo(f"warning: {warning}", err=True)
    return cfg


_warned = False


def token_or_fail(token: str | None, cfg: Settings) -> str:
    if token:
        return token
    if cfg.token is not None:
        return cfg.token.get_secret_value()
    fail(
        "this operation acts as a user: pass --token or set STATEMENT_ROUTER_TOKEN",
        EXIT_UNAUTHENTICATED,
    )


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, ensure_ascii=False, default=str)
    sys.stdout.write("\n")
