"""The identifiers people choose: cabinet, connector and user ids (one rule for all three).

These ids become parts of file names and paths (the « Relevés » download's name, a
directory drop's ``partners/<connector_id>``), of Kafka topic names
(``statements.partner.<connector_id>``), of HTTP headers and of log lines. One conservative
alphabet keeps every such use safe without escaping: no ``/``, ``\\`` or ``.`` to climb out
of a directory, no control character or space to forge a log line or a header, and no upper
case (two ids that differ only by case would collide on a case-insensitive file system).

The store refuses any other id when it is created, the API declares the rule (OpenAPI
``pattern``) and checks it on every path parameter and body field that carries one, the
connectors file refuses such a connector, and the CLI reports the refusal with exit code 7.
"""

from __future__ import annotations

import re
from typing import Literal

from routing.domain.errors import InvalidIdentifier

#: The rule, as a regular expression (also published in the OpenAPI schema).
ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
ID_MAX_LENGTH = 64
ID_RULE = (
    "1 to 64 characters among lowercase letters a-z, digits, '-' and '_', "
    "starting with a letter or a digit"
)

_ID = re.compile(ID_PATTERN)

IdKind = Literal["cabinet", "connector", "user"]


def id_problem(kind: IdKind, value: str) -> str | None:
    """The sentence that says why ``value`` is not an allowed ``kind`` id, or None."""
    if _ID.fullmatch(value) is not None:
        return None
    return f"{kind} id {value!r} is not allowed: use {ID_RULE}"


def ensure_valid_id(kind: IdKind, value: str) -> str:
    """``value`` itself if it is an allowed ``kind`` id; ``InvalidIdentifier`` otherwise."""
    problem = id_problem(kind, value)
    if problem is not None:
        raise InvalidIdentifier(problem)
    return value
