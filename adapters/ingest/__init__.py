"""Bank-file ingestion: turn CFONB 120, camt.053 and MT940 files into per-account statements.

This package is pure: it reads bytes and returns values (or raises ``BankFileError``). It
knows nothing about the broker, so the same code serves the demo feeder, a CLI import and the
tests. Each ``ParsedStatement`` carries the exact bytes of its own statement (``raw``), which
is what ``statement.received/v1``'s ``content_b64`` is built from.
"""

from adapters.ingest.detect import detect_format, parse_file
from adapters.ingest.errors import (
    BalanceMismatch,
    BankFileError,
    InvalidAccount,
    MalformedRecord,
    StatementTooLarge,
    UnknownFormat,
    UnsafeXml,
)
from adapters.ingest.model import BankFormat, Movement, ParsedStatement

__all__ = [
    "BalanceMismatch",
    "BankFileError",
    "BankFormat",
    "InvalidAccount",
    "MalformedRecord",
    "Movement",
    "ParsedStatement",
    "StatementTooLarge",
    "UnknownFormat",
    "UnsafeXml",
    "detect_format",
    "parse_file",
]
