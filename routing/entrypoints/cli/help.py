"""What ``--help`` shows: plain metavars, the commands in panels, and ``--version``.

Typer's help labels each value with its Python annotation (``<bool>``, ``<list[Path]>``),
which tells an operator nothing: the values are shown here as ``TEXT``, ``PATH``,
``INTEGER`` or the list of choices, and flags show none. The top-level commands are
grouped by who runs them (back office, user, processes), the panels set here once rather
than on each registration, so a new command only needs a line in ``PANELS``.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

import typer
import typer.main
from typer.core import TyperArgument, TyperGroup, TyperOption

BACK_OFFICE = "Back office (So bank's operators, no token)"
USER = "User: the FAQ's operations (--token)"
PROCESSES = "Processes (long-running roles, one-shot publishing)"

# "group command" or "command" -> panel. Mixed groups get their commands' own panels.
PANELS: dict[str, str] = {
    "db": BACK_OFFICE,
    "cabinet": BACK_OFFICE,
    "cabinet create": BACK_OFFICE,
    "cabinet connectors": USER,
    "user": BACK_OFFICE,
    "mandate": BACK_OFFICE,
    "operator": BACK_OFFICE,
    "partner": BACK_OFFICE,
    "dlq": BACK_OFFICE,
    "monitor": BACK_OFFICE,
    "topics": BACK_OFFICE,
    "schemas": BACK_OFFICE,
    "iban": USER,
    "iban add": BACK_OFFICE,
    "iban show": USER,
    "iban list": USER,
    "iban bind": USER,
    "iban unbind": USER,
    "connectors": USER,
    "diagnose": USER,
    "trace": USER,
    "global-file": USER,
    "global-file download": USER,
    "global-file build": PROCESSES,
    "up": PROCESSES,
    "api": PROCESSES,
    "relay": PROCESSES,
    "router": PROCESSES,
    "ledger": PROCESSES,
    "adapters": PROCESSES,
    "ingest": PROCESSES,
}

_WORDS = {
    "str": "TEXT",
    "int": "INTEGER",
    "int range": "INTEGER",
    "float": "NUMBER",
    "float range": "NUMBER",
    "bool": "BOOLEAN",
    "Path": "PATH",
    "path": "PATH",
    "file": "FILE",
    "dir": "DIR",
    "datetime": "DATETIME",
}


def human_type(label: str) -> str:
    """``<list[Path]>`` -> ``PATH``, ``<a|b>`` -> ``[a|b]``, ``<str>`` -> ``TEXT``."""
    inner = label.removeprefix("<").removesuffix(">")
    if inner.startswith("list[") and inner.endswith("]"):
        inner = inner[len("list[") : -1]
    if "|" in inner:
        return f"[{inner}]"
    return _WORDS.get(inner, inner.upper())


class HumanOption(TyperOption):
    def display_type(self, ctx: Any) -> str:
        if self.is_flag:
            return ""
        return human_type(super().display_type(ctx))


class HumanArgument(TyperArgument):
    def display_type(self, ctx: Any) -> str:
        return human_type(super().display_type(ctx))


def _humanise_param(param: Any) -> None:
    if type(param) is TyperOption:
        param.__class__ = HumanOption
    elif type(param) is TyperArgument:
        param.__class__ = HumanArgument


def humanise(command: Any, path: str = "") -> None:
    """Plain metavars on every parameter and the panels of ``PANELS``, recursively."""
    for param in command.params:
        _humanise_param(param)
    help_option = command.get_help_option  # made on first use, after this walk

    def human_help_option(ctx: Any) -> Any:
        option = help_option(ctx)
        _humanise_param(option)
        return option

    command.get_help_option = human_help_option
    if isinstance(command, TyperGroup):
        for name, sub in command.commands.items():
            key = f"{path} {name}".strip()
            if key in PANELS:
                sub.rich_help_panel = PANELS[key]  # type: ignore[attr-defined]
            humanise(sub, key)


def version() -> str:
    try:
        return metadata.version("statement-router")
    except metadata.PackageNotFoundError:  # pragma: no cover - run from a bare checkout
        return "unknown"


def version_option(value: bool) -> None:
    """``--version``: print the installed version and stop (before any setting is read)."""
    if value:
        typer.echo(f"statement-router {version()}")
        raise typer.Exit()


class HumanTyper(typer.Typer):
    """A Typer whose help is humanised (``humanise``) when the command line runs."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        command = typer.main.get_command(self)
        humanise(command)
        return command(*args, **kwargs)
