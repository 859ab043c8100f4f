"""What ``statement-router ingest --dry-run`` reports: a bank file read, nothing published.

A bank feed runs it on a new bank's files before going live. It goes through exactly the
checks publishing goes through (detection, parsing, the balances, building and sizing
every ``statement.received/v1`` event), so a file the preview accepts is a file
``ingest`` publishes, and a refusal is the same refusal, with the same line.

What it shows follows the leak policy (docs/ingest.md): per statement the masked IBAN,
the period, the currency, the opening and closing balances and the number of movements;
never a label, a reference or an account number. The balances are shown because checking
them against the bank's own figures is what a preview is for; they never reach a log.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import structlog

from adapters.ingest.detect import parse_file
from adapters.ingest.errors import BankFileError
from adapters.ingest.model import BankFormat, ParsedStatement
from adapters.ingest.producer import (
    PARSER_FAILED,
    FormatChoice,
    default_source,
    resolve_format,
    validate_events,
)
from events.limits import MAX_STATEMENT_BYTES
from routing.domain.iban import mask_iban

__all__ = ["FilePreview", "PreviewRefusal", "StatementPreview", "preview_file"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class StatementPreview:
    """One statement as the preview shows it."""

    masked_iban: str
    period_start: date
    period_end: date
    currency: str
    opening_balance: Decimal
    closing_balance: Decimal
    movements: int
    first_line: int

    @classmethod
    def of(cls, statement: ParsedStatement) -> StatementPreview:
        return cls(
            masked_iban=mask_iban(statement.iban),
            period_start=statement.period_start,
            period_end=statement.period_end,
            currency=statement.currency,
            opening_balance=statement.opening_balance,
            closing_balance=statement.closing_balance,
            movements=len(statement.movements),
            first_line=statement.first_line,
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "iban": self.masked_iban,
            "period_start": self.period_start.isoformat(),
            "period_end": self.period_end.isoformat(),
            "currency": self.currency,
            "opening_balance": str(self.opening_balance),
            "closing_balance": str(self.closing_balance),
            "movements": self.movements,
            "first_line": self.first_line,
        }


@dataclass(frozen=True, slots=True)
class PreviewRefusal:
    """Why the file would be refused: the same code, line and reason as ``ingest``."""

    code: str
    reason: str
    line: int | None

    @property
    def message(self) -> str:
        return f"line {self.line}: {self.reason}" if self.line is not None else self.reason

    def as_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "line": self.line,
            "reason": self.reason,
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class FilePreview:
    """One file: its format and statements, or its refusal."""

    file: str
    format: BankFormat | None
    statements: tuple[StatementPreview, ...] = ()
    refusal: PreviewRefusal | None = None

    @property
    def ok(self) -> bool:
        return self.refusal is None

    def as_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "ok": self.ok,
            "format": self.format,
            "statements": [s.as_json() for s in self.statements],
            "error": self.refusal.as_json() if self.refusal is not None else None,
        }


def preview_file(
    data: bytes,
    *,
    filename: str,
    fmt: FormatChoice = "auto",
    source: str | None = None,
    now: datetime | None = None,
    max_statement_bytes: int = MAX_STATEMENT_BYTES,
) -> FilePreview:
    """Read a bank file as ``ingest`` would, and report it without publishing anything."""
    detected: BankFormat | None = None
    try:
        detected = resolve_format(data, fmt, filename)
        statements = parse_file(data, detected, filename)
        validate_events(
            statements,
            source=source if source is not None else default_source(filename),
            now=now or datetime.now(UTC),
            max_statement_bytes=max_statement_bytes,
        )
    except BankFileError as exc:
        return FilePreview(
            filename, detected, refusal=PreviewRefusal(exc.code, exc.reason, exc.line)
        )
    except Exception as exc:
        # As in publish_file: type and place only, the text may quote the file.
        where = traceback.extract_tb(exc.__traceback__)[-1]
        log.error(
            "ingest.parser_failed",
            file=filename,
            format=detected,
            error_type=type(exc).__name__,
            at=f"{where.filename}:{where.lineno} in {where.name}",
        )
        reason = (
            f"the {detected or 'format detection'} parser failed unexpectedly "
            f"({type(exc).__name__}); this is a bug, please report it with the file"
        )
        return FilePreview(filename, detected, refusal=PreviewRefusal(PARSER_FAILED, reason, None))
    return FilePreview(filename, detected, tuple(StatementPreview.of(s) for s in statements))
