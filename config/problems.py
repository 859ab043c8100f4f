"""Bad settings as one line a person can act on, and variables that look like settings.

Why not pydantic's own report: it is a multi-line traceback that names the field in
lower case (``api_port``) while the operator typed ``API_PORT``, quotes the raw value
(which may be a token or a database password) and says nothing of the form expected.
Here each problem names the environment variable and the expected form, never the value.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import SecretStr, ValidationError
from pydantic.fields import FieldInfo

#: Variables that start like ``STATEMENT_ROUTER_TOKEN`` but are not it: a setting written
#: with a prefix it does not have (``STATEMENT_ROUTER_LOG_LEVEL``) would silently do nothing.
PREFIX = "STATEMENT_ROUTER_"


class SettingsError(ValueError):
    """The environment holds a value no setting accepts; the message is one line."""


def variable_name(name: str, info: FieldInfo) -> str:
    alias = info.validation_alias
    return alias if isinstance(alias, str) else name.upper()


def _bounds(info: FieldInfo) -> str:
    low: Any = None
    high: Any = None
    low_word = ""
    for item in info.metadata:
        if isinstance(item, annotated_types.Ge):
            low = item.ge
        elif isinstance(item, annotated_types.Gt):
            low, low_word = item.gt, "above"
        elif isinstance(item, annotated_types.Le):
            high = item.le
    if low is not None and high is not None:
        if low_word == "above":
            return f" above {low:g} and at most {high:g}"
        return f" from {low:g} to {high:g}"
    if low is not None:
        return f" above {low:g}" if low_word == "above" else f" of at least {low:g}"
    return ""


def _core_type(annotation: Any) -> Any:
    """``int | None`` → ``int``: unset is the default, so the form expected is the other."""
    if get_origin(annotation) in (Union, types.UnionType):
        kept = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(kept) == 1:
            return kept[0]
    return annotation


def expected_form(info: FieldInfo) -> str:
    """The form a setting takes, from its declaration (or its ``json_schema_extra``)."""
    extra = info.json_schema_extra
    if isinstance(extra, dict):
        given = extra.get("expected")
        if isinstance(given, str):
            return given
    kind = _core_type(info.annotation)
    if get_origin(kind) is Literal:
        return "one of " + ", ".join(str(v) for v in get_args(kind)) + " (any case)"
    if kind is bool:
        return "true or false (also 1/0, yes/no, on/off)"
    if kind is int:
        return "an integer" + _bounds(info)
    if kind is float:
        return "a number" + _bounds(info)
    if kind is SecretStr:
        return "a non-empty string"
    for item in info.metadata:
        pattern = getattr(item, "pattern", None)
        if pattern:
            return f"a value matching {pattern}"
    return "a valid value"


def describe(error: ValidationError, fields: Mapping[str, FieldInfo]) -> str:
    """One line naming each bad variable and what it expects; never the value given."""
    problems: list[str] = []
    for item in error.errors(include_input=False, include_url=False):
        loc = item.get("loc", ())
        name = str(loc[0]) if loc else ""
        info = fields.get(name)
        if info is None:  # an alias (STATEMENT_ROUTER_TOKEN) in the location
            matches = [(n, f) for n, f in fields.items() if f.validation_alias == name]
            name, info = matches[0] if matches else (name, None)
        if info is None:
            problems.append(f"{name.upper()}: {item.get('msg', 'invalid value')}")
            continue
        custom = item.get("ctx", {}).get("error") if item.get("type") == "value_error" else None
        form = str(custom) if custom else expected_form(info)
        problems.append(f"{variable_name(name, info)} must be {form}")
    return "invalid setting: " + "; ".join(dict.fromkeys(problems))


def unknown_prefixed(environ: Mapping[str, str], fields: Mapping[str, FieldInfo]) -> list[str]:
    """A warning per ``STATEMENT_ROUTER_…`` variable that is not a setting (it is ignored)."""
    known = {variable_name(n, f) for n, f in fields.items()}
    plain = {n.upper() for n in fields}
    warnings: list[str] = []
    for key in sorted(environ):
        upper = key.upper()
        if not upper.startswith(PREFIX) or upper in known:
            continue
        rest = upper.removeprefix(PREFIX)
        hint = (
            f"settings have no prefix: did you mean {rest}?"
            if rest in plain
            else "see docs/configuration.md for the settings"
        )
        warnings.append(f"{key} is not a setting and is ignored ({hint})")
    return warnings
