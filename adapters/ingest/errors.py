"""Why a bank file was refused: one root, one subclass per kind of refusal.

Ingestion never skips bad input silently (DESIGN §4): a refused file becomes a
``statement.invalid/v1`` event whose reason is this exception's message, so the message
must let an operator find and fix the problem without a debugger. It therefore names the
line (1-based) whenever there is one, as ``"line 12: <reason>"``; ``line`` and ``reason``
are also kept apart for callers that format them differently. ``code`` is the stable,
machine-readable kind.
"""

from __future__ import annotations


class BankFileError(Exception):
    """Root of every refusal of a bank file."""

    code = "bank_file_error"

    def __init__(self, reason: str, line: int | None = None) -> None:
        super().__init__(f"line {line}: {reason}" if line is not None else reason)
        self.reason = reason
        self.line = line


class MalformedRecord(BankFileError):
    """A record or element does not have the shape its format requires (incl. truncation)."""

    code = "malformed_record"


class InvalidAccount(BankFileError):
    """The account cannot form a valid IBAN (a RIB with bad characters, a bad checksum)."""

    code = "invalid_account"


class BalanceMismatch(BankFileError):
    """Opening balance plus the movements does not give the closing balance."""

    code = "balance_mismatch"


class UnsafeXml(BankFileError):
    """An XML file declares a DOCTYPE or entities, which we never let a parser expand."""

    code = "unsafe_xml"


class UnknownFormat(BankFileError):
    """The bytes are none of the formats we carry (or the requested format is unknown)."""

    code = "unknown_format"


class StatementTooLarge(BankFileError):
    """A statement is over the size rule's limit (``MAX_STATEMENT_BYTES`` of content)."""

    code = "statement_too_large"
