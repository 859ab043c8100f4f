"""What a parsed bank file becomes: one ``ParsedStatement`` per account and statement.

Plain frozen dataclasses rather than pydantic models: values built by our own parsers need no
validation layer, and they are cheap to build by the million (DESIGN §8 scale targets).

Every format follows the same rules, so downstream code never needs to know which parser ran:

* amounts are exact ``Decimal`` values, negative for debits;
* ``period_end`` is the closing balance's date and ``period_start`` is the earliest booking
  date among the movements (the closing date when there are none), unless the file states
  the period itself (camt.053 ``FrToDt``). A daily statement whose opening balance is dated
  the previous business day is therefore still the one day of its movements;
* ``raw`` is the exact bytes of this statement taken from the file (each parser documents
  its slice), so a statement re-sent from the same file has the same ``content_sha256``;
* ``first_line`` is the 1-based line of the statement's first record in the file, so an
  operator can find it with an editor.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Literal

from adapters.ingest.errors import BalanceMismatch, StatementTooLarge
from events.limits import MAX_STATEMENT_BYTES

BankFormat = Literal["cfonb120", "camt053", "mt940"]
"""The ``format`` values of ``statement.received/v1`` (DESIGN §4)."""

BANK_FORMATS: tuple[BankFormat, ...] = ("cfonb120", "camt053", "mt940")


@dataclass(frozen=True, slots=True)
class Balance:
    """An opening or closing balance as a parser read it, with the line it stood on."""

    amount: Decimal
    currency: str
    day: date
    line: int


@dataclass(frozen=True, slots=True)
class Movement:
    """One booked line of a statement.

    ``label`` is the bank's text for the line, with continuation records (CFONB ``05``,
    multi-line MT940 ``:86:``) joined by single spaces. ``reference`` is the bank's own
    reference for the line when the file has one.
    """

    booking_date: date
    value_date: date | None
    amount: Decimal
    label: str
    reference: str | None


@dataclass(frozen=True, slots=True)
class ParsedStatement:
    """One account's statement, as cut out of a bank file."""

    iban: str
    format: BankFormat
    period_start: date
    period_end: date
    currency: str
    opening_balance: Decimal
    closing_balance: Decimal
    movements: tuple[Movement, ...]
    raw: bytes = field(repr=False)
    first_line: int

    @property
    def movements_total(self) -> Decimal:
        """The sum of the movements' amounts (``Decimal(0)`` when there are none)."""
        return sum((m.amount for m in self.movements), Decimal(0))


def statement_period(closing_date: date, movements: Iterable[Movement]) -> tuple[date, date]:
    """The period rule shared by every format when the file does not state one.

    The closing balance's date ends the period; the earliest booking date starts it. A
    booking date after the closing date (seen in files whose balances are dated the
    previous business day) extends the end instead of producing an inverted period.
    """
    booked = [m.booking_date for m in movements]
    return min([closing_date, *booked]), max([closing_date, *booked])


def check_balance(
    opening: Decimal,
    movements: Iterable[Movement],
    closing: Decimal,
    account: str,
    line: int | None,
) -> None:
    """Refuse a statement whose movements do not lead from its opening to its closing balance.

    Every format is checked the same way: a statement that does not add up was cut or
    parsed wrongly (or tampered with), and a partner would book wrong figures from it. The
    reason gives the gap, not the balances: those are the file's content (docs/ingest.md,
    what a reason may say).
    """
    total = sum((m.amount for m in movements), Decimal(0))
    if opening + total != closing:
        raise BalanceMismatch(
            f"balances do not add up for {account}: the opening balance plus the movements "
            f"misses the closing balance by {closing - opening - total}",
            line,
        )


def check_size(raw: bytes, what: str, line: int) -> None:
    """Refuse a statement over the size rule before its parser reads it.

    Parsers are slow over a 20 MB statement (``pycamt`` took 9 minutes, ``mt-940`` most of
    a minute) and ``lxml`` refuses a text over 10 MB as a syntax error: the real fault, the
    size, would be reported late or not at all. The producer's own check
    (``MAX_STATEMENT_BYTES`` as configured, which may be lower) still applies to every
    statement this lets through.
    """
    if len(raw) > MAX_STATEMENT_BYTES:
        raise StatementTooLarge(
            f"the {what} statement is {len(raw):,} bytes, over the limit of "
            f"{MAX_STATEMENT_BYTES:,} bytes for one statement (MAX_STATEMENT_BYTES, "
            "docs/operations.md#limits); it is refused unread: split the statement or send "
            "it by another channel",
            line,
        )
