"""Logging set-up (structlog): readable in a terminal, JSON for log shippers.

Two processors guard every line whatever the caller passed: IBANs are masked wherever
they appear in a value, and fields that hold secrets or statement content are redacted.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from routing.domain.iban import mask_iban

# Two letters, two digits, then 11–30 alphanumerics, optionally grouped by spaces.
_IBAN_RE = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
_SECRET_KEYS = frozenset(
    {"token", "password", "secret", "authorization", "content", "content_b64", "raw", "raw_b64"}
)


def _mask_text(text: str) -> str:
    return _IBAN_RE.sub(lambda m: mask_iban(m.group(0)), text)


def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Mask IBANs in every string value and drop secrets and statement content."""
    for key, value in list(event.items()):
        if key.lower() in _SECRET_KEYS:
            event[key] = "[redacted]"
        elif isinstance(value, str):
            event[key] = _mask_text(value)
    return event


def configure_logging(fmt: str = "console", level: str = "INFO") -> None:
    """Configure structlog and the stdlib root logger once per process."""
    numeric = logging.getLevelName(level)
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(
        level=numeric, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    # Migrations run on every embedded start, and faust narrates every service start and
    # stop: at INFO that buries our own lines.
    for chatty in ("alembic", "faust", "mode", "aiokafka", "uvicorn.error"):
        logging.getLogger(chatty).setLevel(max(numeric, logging.WARNING))
