"""Logging set-up (structlog): readable in a terminal, JSON for log shippers.

Two guards run on every line whatever the caller passed, our own lines and the standard
library's (faust, aiokafka, alembic, uvicorn) alike: IBANs are masked wherever they appear
in a value (nested containers, exception text and tracebacks included), and fields that
hold secrets or statement content are redacted. They sit in the processor chain rather
than at the call sites because a call site forgets; the chain does not.

The fields ``statement_id``, ``connector_id`` and ``cabinet_id`` reach a line either as
keyword arguments, through a bound logger, or through ``structlog.contextvars`` (bound
per event by the consumers: a partition task's context is its own, so two partitions'
statements never mix their fields).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

from routing.domain.iban import mask_iban

# An IBAN-shaped run: two letters, two digits, then 11–30 letters or digits, either
# unbroken or printed in groups of four. Delimited by anything but a letter or a digit
# (not ``\b``: ``_`` is a word character, and file names such as ``2024-01-02_FR76….txt``
# must be masked too). Case-insensitive, see ``_mask_match``.
_IBAN_RE = re.compile(
    r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}"
    r"(?:[A-Za-z0-9]{11,30}|(?: [A-Za-z0-9]{4}){2,7}(?: [A-Za-z0-9]{1,4})?)"
    r"(?![A-Za-z0-9])"
)
# A long base64 run is most likely statement content (``content_b64`` quoted in an
# exception or a model's repr): no legitimate field of ours is that long and unbroken.
_BASE64_RE = re.compile(r"[A-Za-z0-9+/]{96,}={0,2}")
# Keys whose values are never logged: exact names for statement content, substrings for
# credentials (``webhook_secret``, ``operator_token_sha256``, ``Authorization``, …).
_CONTENT_KEYS = frozenset(
    {"content", "content_b64", "raw", "raw_b64", "body", "payload", "file_content"}
)
_SECRET_WORDS = ("token", "password", "passwd", "secret", "authorization", "api_key",
                 "private_key", "cookie", "credential")
# Kept for callers that imported it: every key redacted whatever its casing.
_SECRET_KEYS = _CONTENT_KEYS | frozenset(_SECRET_WORDS)
_REDACTED = "[redacted]"
_MAX_DEPTH = 6


def _mod97_ok(compact: str) -> bool:
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    try:
        return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1
    except ValueError:
        return False


def _mask_match(match: re.Match[str]) -> str:
    """Mask an upper-case candidate always (even an invalid IBAN is somebody's account
    number with a typo); a lower- or mixed-case one only if its ISO 7064 check holds, so a
    hex digest such as a ``content_sha256`` is not mistaken for an IBAN."""
    text = match.group(0)
    if text == text.upper() or _mod97_ok("".join(text.split()).upper()):
        return mask_iban(text)
    return text


def mask_text(text: str) -> str:
    """``text`` with every IBAN masked and long base64 runs (content) removed."""
    text = _BASE64_RE.sub("[base64 redacted]", text)
    return _IBAN_RE.sub(_mask_match, text)


_mask_text = mask_text  # the name this module used before


def _is_sensitive(key: object) -> bool:
    if not isinstance(key, str):
        return False
    lowered = key.lower()
    return lowered in _CONTENT_KEYS or any(word in lowered for word in _SECRET_WORDS)


def _scrub(value: Any, depth: int = 0) -> Any:
    """A copy of ``value`` safe to log: masked strings, redacted keys at any depth.

    Values the renderers would ``repr`` (models, dataclasses, exceptions, arbitrary
    objects) are scrubbed field by field or as text first, since a repr can carry an IBAN
    or a ``content_b64``.
    """
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return f"[{len(value)} bytes redacted]"
    if depth >= _MAX_DEPTH:
        return "[nested too deep]"
    if isinstance(value, Mapping):
        return {k: _REDACTED if _is_sensitive(k) else _scrub(v, depth + 1)
                for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub(v, depth + 1) for v in value]
    dump = getattr(value, "model_dump", None)  # a pydantic model
    if callable(dump):
        try:
            return _scrub(dump(mode="json"), depth)
        except Exception:  # a model that cannot dump itself: its text, masked
            return mask_text(str(value))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _scrub({f.name: getattr(value, f.name) for f in dataclasses.fields(value)},
                      depth)
    return mask_text(str(value))


def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Mask IBANs in every value (at any depth) and drop secrets and statement content.

    Runs after ``format_exc_info``, so an exception's message and traceback are masked too.
    ``exc_info`` itself (still present when a renderer formats exceptions) is left alone.
    """
    for key, value in list(event.items()):
        if key == "exc_info":
            continue
        if _is_sensitive(key):
            event[key] = _REDACTED
        else:
            event[key] = _scrub(value)
    return event


def _renderer(fmt: str) -> Any:
    if fmt == "json":
        return structlog.processors.JSONRenderer()
    return structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())


def processors_for(fmt: str) -> list[Any]:
    """The chain every structlog line goes through: context, level, time, exception text,
    then the guards (``redact``) and last the renderer: ``json`` gives one JSON object per
    line, anything else the console layout."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact,
        _renderer(fmt),
    ]


class _OurHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The root handler ``configure_logging`` installs; a second call replaces it."""


def configure_logging(fmt: str = "console", level: str = "INFO") -> None:
    """Configure structlog and the stdlib root logger (once per process, at start-up).

    The standard library's records (faust, aiokafka, alembic, uvicorn) go through the same
    guards and renderer as ours: a JSON log shipper then gets JSON on every line, and a
    library that quotes a record or an exception cannot leak an IBAN.
    """
    numeric = logging.getLevelName(level)
    structlog.configure(
        processors=processors_for(fmt),
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = _OurHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_logger_name,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redact,
                _renderer(fmt),
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _OurHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    # Migrations run on every embedded start, and faust narrates every service start and
    # stop: at INFO that buries our own lines.
    for chatty in ("alembic", "faust", "mode", "aiokafka", "uvicorn.error"):
        logging.getLogger(chatty).setLevel(max(numeric, logging.WARNING))
