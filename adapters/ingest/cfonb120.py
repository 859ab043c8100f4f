"""CFONB 120 ("relevé de compte" in 120-character records): our own parser.

Written from the record layout of the CFONB 120 standard (DESIGN §7 gives the shared
fields); no third-party parser is used or copied.

Record layout (1-based, inclusive positions). Every record type shares the header:

=========  ==================================================================
 1-2       record type: ``01`` old balance, ``04`` movement, ``05`` complement,
           ``07`` new balance
 3-7       bank code (code banque, 5 digits)
 8-11      ``04``/``05``: internal operation code (not used); else reserved
 12-16     guichet (branch code, 5 digits)
 17-19     currency (ISO 4217); blank is read as the statement's currency, EUR by default
 20        number of decimals of the amount; blank is read as the statement's, 2 by default
 21        reserved
 22-32     account number (11 letters or digits)
 33-34     ``04``/``05``: interbank operation code (not used); else reserved
 35-40     date, DDMMYY: the balance's date (``01``/``07``), the booking date (``04``/``05``)
=========  ==================================================================

Then, per record type:

* ``01`` / ``07``: 91-104 the balance (the rest is reserved).
* ``04``: 41-42 rejection reason code (not used), **43-48 value date** (DDMMYY, may be
  blank), **49-79 label** (31 characters), 80-81 reserved, 82-88 entry number (not used),
  89 commission exemption flag (not used), 90 unavailability flag (not used),
  **91-104 amount**, **105-120 reference** (16 characters, may be blank).
* ``05``: 41-45 reserved, 46-48 qualifier of the complement (``LIB``, ``NPY``, ``RCN``, …;
  not used), **49-118 complementary information** (70 characters), 119-120 reserved. Its
  text is appended to the preceding ``04``'s label, separated by one space.

Amounts (91-104) are 13 digits then one character carrying the last digit and the sign:
``{`` and ``A``-``I`` are +0 to +9, ``}`` and ``J``-``R`` are -0 to -9; the decimals field
(20) places the decimal point.

A record carries the bank, guichet and account number but no RIB key, so the key is computed
(``iban_from_rib``) and the IBAN built from it is valid by construction. What can still be
wrong is an account number that cannot form a RIB at all (a character that is neither a
letter nor a digit, a bank code with letters): that is refused as ``InvalidAccount``.

Tolerated deviations seen in real files: no line breaks at all (the file is cut every 120
characters), blank lines, trailing spaces after the 120th character, blank currency and
decimals, a UTF-8 byte-order mark before the first record, and **short records**: banks and
transfer tools trim trailing blanks, leaving records of 104 or 109 characters. A short
record is padded with blanks when every position it lacks belongs to a field that may be
blank (``_BLANK_ALLOWED``: reserved zones, the reference, the label, the complement's
text, the value date, …); that loses nothing, since a trimmed field was blank. When the
cut reaches a field that must carry data (the amount or balance at 91-104, a date, the
account), the record is refused naming the line and that field. The last record of a file
without line breaks is handled the same way.

Account identity (see docs/ingest.md). A statement is the account its ``01`` record names:
bank code + guichet + account number, from which the IBAN is built. Inside the block,
``04`` and ``05`` records are attributed to that account when their **account number**
(22-32) is the ``01``'s: some banks write in 3-7 and 12-16 of a movement the bank and
branch that booked it, and the other well-known parsers read such files. A ``04``/``05``
with another account number, and a ``07`` whose bank, guichet or account number differs
from its ``01`` (the closing balance would be another account's), are real mixtures of
accounts and are refused.

Everything else is refused with the line it happened on: a record outside a ``01`` …
``07`` block, an unknown record type, a record for another account inside a block, and a
block whose balances do not add up. Reasons name fields by position and the account by its
masked IBAN; they never quote the account number or any other content of the file.

Statements: each ``01`` … ``07`` block is one ``ParsedStatement`` (one account, one day in
the daily files banks send), in file order. Its ``raw`` is the exact, contiguous slice of
the file from the first byte of its ``01`` record to the last byte of its ``07`` record,
plus the ``07`` record's line terminator (CRLF, LF or CR, as in the file) when the ``07``
record ends a line. Blank lines inside a block are therefore kept, blank lines between
blocks belong to no statement, and a file without line breaks gives blocks of exactly
120 × n bytes (plus the file's final line break, if any, for the last block).

Line numbers: physical lines of the file (blank lines count). In a file without line
breaks, record *k* (1-based) is reported as line *k*, the line it would be on had the
file been written with one record per line.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from adapters.ingest.errors import InvalidAccount, MalformedRecord
from adapters.ingest.model import Movement, ParsedStatement, check_balance, statement_period
from routing.domain.errors import InvalidIban
from routing.domain.iban import iban_from_rib, mask_iban

RECORD_LENGTH = 120
DEFAULT_CURRENCY = "EUR"
DEFAULT_DECIMALS = 2

_UTF8_BOM = b"\xef\xbb\xbf"
_LINE = re.compile(r"([^\r\n]*)(\r\n|\r|\n)?")
_DIGITS = re.compile(r"[0-9]+")
_CURRENCY = re.compile(r"[A-Z]{3}")
_AMOUNT = re.compile(r"([0-9]{13})([{}A-R])")
_LAST_DIGIT = {
    **{ch: (i, 1) for i, ch in enumerate("{ABCDEFGHI")},
    **{ch: (i, -1) for i, ch in enumerate("}JKLMNOPQR")},
}
_KINDS = ("01", "04", "05", "07")


@dataclass(frozen=True, slots=True)
class _Record:
    """One 120-character record and where it sits in the file."""

    line: int
    text: str
    start: int
    """Offset of the record's first byte in the file (latin-1: characters are bytes)."""
    end: int
    """Offset just past the record, and past its line terminator when it ends a line."""

    @property
    def kind(self) -> str:
        return self.text[0:2]

    def field(self, first: int, last: int) -> str:
        """Positions ``first``..``last``, 1-based and inclusive as in the standard."""
        return self.text[first - 1 : last]


def _records(data: bytes) -> Iterator[_Record]:
    """Yield the file's records, skipping blank lines, refusing truncated records."""
    text = data.decode("latin-1")
    start = len(_UTF8_BOM) if data.startswith(_UTF8_BOM) else 0
    body_end = max(start, len(text.rstrip("\r\n")))
    if "\r" in text[start:body_end] or "\n" in text[start:body_end]:
        yield from _records_by_line(text, start)
    else:
        yield from _records_unbroken(text, start, body_end)


def _records_unbroken(text: str, start: int, body_end: int) -> Iterator[_Record]:
    """A file without line breaks: one record every 120 characters."""
    for number, offset in enumerate(range(start, body_end, RECORD_LENGTH), start=1):
        chunk = text[offset : offset + RECORD_LENGTH]
        if not chunk.strip():
            continue
        end = min(offset + RECORD_LENGTH, body_end)
        yield _Record(
            number,
            _fit(chunk.rstrip(" \x1a"), number),
            offset,
            len(text) if end == body_end else end,
        )


def _records_by_line(text: str, start: int) -> Iterator[_Record]:
    """A file with line breaks: one record per non-blank line."""
    pos, number = start, 0
    while pos < len(text):
        match = _LINE.match(text, pos)
        assert match is not None  # the pattern matches the empty string
        content, next_pos = match.group(1), match.end()
        number += 1
        if content.strip(" \t\x1a"):
            yield _Record(number, _fit(content, number), pos, next_pos)
        pos = next_pos


# Fields that may be blank, per record type: (first, last) 1-based inclusive positions. A
# record shorter than 120 characters is padded only when everything it lacks lies in them.
_HEADER_BLANKS = ((17, 19), (20, 20), (21, 21), (33, 34))
_BLANK_ALLOWED: dict[str, tuple[tuple[int, int], ...]] = {
    "01": (*_HEADER_BLANKS, (8, 11), (41, 90), (105, 120)),
    "07": (*_HEADER_BLANKS, (8, 11), (41, 90), (105, 120)),
    "04": (*_HEADER_BLANKS, (8, 11), (41, 42), (43, 48), (49, 79), (80, 90), (105, 120)),
    "05": (*_HEADER_BLANKS, (8, 11), (41, 45), (46, 48), (49, 118), (119, 120)),
}
# Fields that carry data, named for the refusal of a record cut inside or before them.
_DATA_FIELDS: dict[str, tuple[tuple[int, int, str], ...]] = {
    kind: (
        (1, 2, "record type"),
        (3, 7, "bank code"),
        (12, 16, "guichet (branch code)"),
        (22, 32, "account number"),
        (35, 40, "date"),
        *(((91, 104, "amount"),) if kind == "04" else ()),
        *(((91, 104, "balance"),) if kind in ("01", "07") else ()),
    )
    for kind in _BLANK_ALLOWED
}


def _fit(content: str, line: int) -> str:
    """Bring one record to exactly 120 characters, or refuse it naming the field cut."""
    if len(content) > RECORD_LENGTH:
        if content[RECORD_LENGTH:].strip(" "):
            raise MalformedRecord(
                f"line is {len(content)} characters long, a CFONB 120 record has "
                f"{RECORD_LENGTH} (several records on one line?)",
                line,
            )
        return content[:RECORD_LENGTH]
    if len(content) < RECORD_LENGTH:
        kind = content[:2]
        cut = next(
            (
                (first, last, name)
                for first, last, name in _DATA_FIELDS.get(kind, ())
                if last > len(content)
            ),
            None,
        )
        if cut is None and kind in _BLANK_ALLOWED:
            return content.ljust(RECORD_LENGTH)
        what = (
            f"its {cut[2]} (positions {cut[0]}-{cut[1]}) is cut"
            if cut is not None
            else "an unknown record type cannot be padded"
        )
        raise MalformedRecord(
            f"record {kind!r} is {len(content)} characters long, expected {RECORD_LENGTH}: "
            f"truncated record, {what} (only fields that may be blank can be missing at the "
            "end of a record)",
            line,
        )
    return content


def _date(value: str, what: str, line: int) -> date:
    if not _DIGITS.fullmatch(value) or len(value) != 6:
        raise MalformedRecord(f"{what} is not a DDMMYY date", line)
    try:
        return date(2000 + int(value[4:6]), int(value[2:4]), int(value[0:2]))
    except ValueError:
        raise MalformedRecord(f"{what} is not a valid DDMMYY date", line) from None


def _amount(value: str, decimals: int, line: int) -> Decimal:
    match = _AMOUNT.fullmatch(value)
    if match is None:
        raise MalformedRecord(
            "amount (positions 91-104) is not 13 digits followed by a sign character "
            "({ or A-I for +0..+9, } or J-R for -0..-9)",
            line,
        )
    last, sign = _LAST_DIGIT[match.group(2)]
    units = sign * (int(match.group(1)) * 10 + last)
    return Decimal(units).scaleb(-decimals)


@dataclass(slots=True)
class _PendingMovement:
    booking_date: date
    value_date: date | None
    amount: Decimal
    label_parts: list[str]
    reference: str | None

    def build(self) -> Movement:
        label = " ".join(part for part in self.label_parts if part)
        return Movement(self.booking_date, self.value_date, self.amount, label, self.reference)


@dataclass(slots=True)
class _Block:
    """A statement being read: from its ``01`` record until its ``07`` record."""

    opening: _Record
    bank: str
    guichet: str
    account: str
    iban: str
    currency: str
    decimals: int
    opening_balance: Decimal
    movements: list[_PendingMovement] = field(default_factory=list)

    @classmethod
    def open(cls, rec: _Record) -> _Block:
        bank, guichet, account = rec.field(3, 7), rec.field(12, 16), rec.field(22, 32)
        try:
            iban = iban_from_rib(bank, guichet, account)
        except InvalidIban:
            raise InvalidAccount(
                f"the account of this 01 record cannot form a RIB: {_rib_problem(rec)}",
                rec.line,
            ) from None
        currency = _currency(rec, DEFAULT_CURRENCY)
        decimals = _decimals(rec, DEFAULT_DECIMALS)
        opening_balance = _amount(rec.field(91, 104), decimals, rec.line)
        return cls(rec, bank, guichet, account, iban, currency, decimals, opening_balance)

    @property
    def name(self) -> str:
        return f"account {mask_iban(self.iban)}"

    def check_same_account(self, rec: _Record) -> None:
        """Attribute a record to the block's account, or refuse a mixture of accounts.

        The account number identifies the account inside a block: a ``04``/``05`` whose
        bank or guichet differs from the ``01``'s (the booking branch, in some banks'
        files) still belongs to it. The ``07`` closes the ``01``'s account and must name
        it entirely.
        """
        differs = [
            name
            for (first, last, name) in (
                (3, 7, "bank code (positions 3-7)"),
                (12, 16, "guichet (positions 12-16)"),
                (22, 32, "account number (positions 22-32)"),
            )
            if rec.field(first, last) != self.opening.field(first, last)
            and (rec.kind == "07" or first == 22)
        ]
        if differs:
            raise MalformedRecord(
                f"record {rec.kind} is for another account than the statement of {self.name} "
                f"opened on line {self.opening.line}: its {' and '.join(differs)} do not "
                f"match the 01 record's (a mixture of accounts in one 01 … 07 block)",
                rec.line,
            )
        currency = _currency(rec, self.currency)
        if currency != self.currency:
            raise MalformedRecord(
                f"record {rec.kind} is in {currency}, inside the statement of {self.name} "
                f"in {self.currency} opened on line {self.opening.line}",
                rec.line,
            )

    def add_movement(self, rec: _Record) -> None:
        value = rec.field(43, 48)
        self.movements.append(
            _PendingMovement(
                booking_date=_date(rec.field(35, 40), "booking date (positions 35-40)", rec.line),
                value_date=_date(value, "value date (positions 43-48)", rec.line)
                if value.strip()
                else None,
                amount=_amount(rec.field(91, 104), _decimals(rec, self.decimals), rec.line),
                label_parts=[rec.field(49, 79).strip()],
                reference=rec.field(105, 120).strip() or None,
            )
        )

    def add_complement(self, rec: _Record) -> None:
        if not self.movements:
            raise MalformedRecord(
                "a 05 complement record must follow the 04 movement it completes", rec.line
            )
        self.movements[-1].label_parts.append(rec.field(49, 118).strip())

    def close(self, rec: _Record, data: bytes) -> ParsedStatement:
        closing_balance = _amount(rec.field(91, 104), _decimals(rec, self.decimals), rec.line)
        closing_date = _date(rec.field(35, 40), "new balance date (positions 35-40)", rec.line)
        movements = tuple(m.build() for m in self.movements)
        check_balance(self.opening_balance, movements, closing_balance, self.name, rec.line)
        period_start, period_end = statement_period(closing_date, movements)
        return ParsedStatement(
            iban=self.iban,
            format="cfonb120",
            period_start=period_start,
            period_end=period_end,
            currency=self.currency,
            opening_balance=self.opening_balance,
            closing_balance=closing_balance,
            movements=movements,
            raw=data[self.opening.start : rec.end],
            first_line=self.opening.line,
        )


def _rib_problem(rec: _Record) -> str:
    """Which RIB field is unusable, by position, without quoting it."""
    if not _DIGITS.fullmatch(rec.field(3, 7)):
        return "the bank code (positions 3-7) must be 5 digits"
    if not _DIGITS.fullmatch(rec.field(12, 16)):
        return "the guichet (positions 12-16) must be 5 digits"
    return "the account number (positions 22-32) must be 11 letters or digits"


def _currency(rec: _Record, default: str) -> str:
    value = rec.field(17, 19)
    if not value.strip():
        return default
    if not _CURRENCY.fullmatch(value):
        raise MalformedRecord(
            "currency (positions 17-19) is not a 3-letter ISO 4217 code", rec.line
        )
    return value


def _decimals(rec: _Record, default: int) -> int:
    value = rec.field(20, 20)
    if value == " ":
        return default
    if not _DIGITS.fullmatch(value):
        raise MalformedRecord("number of decimals (position 20) is not a digit", rec.line)
    return int(value)


def parse(data: bytes) -> list[ParsedStatement]:
    """Parse a CFONB 120 file into one statement per ``01`` … ``07`` block, in file order.

    Raises a ``BankFileError`` subclass naming the line for anything it cannot read
    exactly; it never returns a partial result.
    """
    statements: list[ParsedStatement] = []
    block: _Block | None = None
    for rec in _records(data):
        kind = rec.kind
        if kind not in _KINDS:
            raise MalformedRecord(
                f"unknown record type {kind!r} (CFONB 120 has 01, 04, 05 and 07)", rec.line
            )
        if kind == "01":
            if block is not None:
                raise MalformedRecord(
                    f"a new 01 record starts before the 07 record closing the statement of "
                    f"{block.name} opened on line {block.opening.line}",
                    rec.line,
                )
            block = _Block.open(rec)
            continue
        if block is None:
            raise MalformedRecord(
                f"record {kind} is outside a statement: no 01 record opened it", rec.line
            )
        block.check_same_account(rec)
        if kind == "04":
            block.add_movement(rec)
        elif kind == "05":
            block.add_complement(rec)
        else:
            statements.append(block.close(rec, data))
            block = None
    if block is not None:
        raise MalformedRecord(
            f"the statement of {block.name} has no closing 07 record", block.opening.line
        )
    if not statements:
        raise MalformedRecord("the file holds no statement (no 01 … 07 block)")
    return statements
