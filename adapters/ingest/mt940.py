"""MT940 (SWIFT customer statement): statement blocks cut by us, tags parsed by ``mt-940``.

We cut the file into statement blocks ourselves, because ``raw`` must be exact bytes of
the file and ``mt940.parse_statements`` only returns parsed objects. Then each block's
bytes are decoded and handed to ``mt940.parse``, so what is parsed is exactly what is
carried.

A block starts at a line beginning with ``:20:`` and runs to the last non-blank line
before whichever comes first: the next ``:20:`` line, a line beginning with ``-`` (the
SWIFT end of text block, ``-}``; SWIFT forbids a continuation line from starting with
``-``), a line beginning with ``{`` (the next message's envelope) or the end of the file.
``raw`` is that exact slice of the file, from the first byte of the ``:20:`` line to the
end of the block's last line including its line terminator (CRLF, LF or CR, as in the
file). SWIFT envelopes (``{1:…}{2:…}{4:``, ``-}``) and blank lines between blocks belong
to no statement. A tag line outside any block is refused; other lines there (bank
headers some files carry) are ignored.

Statement data: IBAN from ``:25:`` (the part after the last ``/`` when the bank writes
``BIC/IBAN``), validated with ``normalise_iban``; balances from ``:60F:`` (or ``:60M:``)
and ``:62F:`` (or ``:62M:``); one movement per ``:61:`` with its ``:86:`` as label
(lines joined by single spaces). A ``:61:`` carries a value date and an optional entry
date (MMDD): the entry date is the booking date, the value date stands in when it is
missing. ``mt-940`` runs with all its correctness options on (``Options.all()``); in
particular a reversal of a credit (``RC``) is a debit. The reference is the bank
reference (after ``//``), else the customer reference unless it is ``NONREF``.

Encoding: UTF-8 when the bytes are valid UTF-8, else latin-1 (French banks use both). A
UTF-8 byte-order mark at the start of the file is skipped and belongs to no statement.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

import mt940

from adapters.ingest.errors import InvalidAccount, MalformedRecord
from adapters.ingest.model import Movement, ParsedStatement, check_balance, statement_period
from routing.domain.errors import InvalidIban
from routing.domain.iban import mask_iban, normalise_iban

_LINE = re.compile(rb"([^\r\n]*)(\r\n|\r|\n)?")
_TAG = re.compile(rb":([0-9]{2}[A-Z]?):")
_UTF8_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class _Line:
    number: int
    content: bytes
    start: int
    end: int
    """Offset just past the line's terminator."""


@dataclass(frozen=True, slots=True)
class _Block:
    lines: tuple[_Line, ...]

    @property
    def first_line(self) -> int:
        return self.lines[0].number

    def tag_line(self, *tags: bytes) -> int:
        """The line of the first of ``tags`` in the block, else of the ``:20:``."""
        for line in self.lines:
            match = _TAG.match(line.content)
            if match and match.group(1) in tags:
                return line.number
        return self.first_line

    def tag_value(self, tag: bytes) -> str | None:
        """The first ``tag`` line's value, read from the bytes.

        ``:25:`` is read this way because mt-940 cuts it at SWIFT's 35 characters, and
        ``BIC/IBAN`` for a French account takes 36.
        """
        prefix = b":" + tag + b":"
        for line in self.lines:
            if line.content.startswith(prefix):
                return _decode(line.content[len(prefix) :]).strip()
        return None

    def count(self, tag: bytes) -> list[int]:
        return [ln.number for ln in self.lines if ln.content.startswith(b":" + tag + b":")]


def _lines(data: bytes) -> list[_Line]:
    lines: list[_Line] = []
    pos = len(_UTF8_BOM) if data.startswith(_UTF8_BOM) else 0  # no statement's byte
    while pos < len(data):
        match = _LINE.match(data, pos)
        assert match is not None  # the pattern matches the empty string
        lines.append(_Line(len(lines) + 1, match.group(1), pos, match.end()))
        pos = match.end()
    return lines


def _blocks(data: bytes) -> list[_Block]:
    blocks: list[_Block] = []
    current: list[_Line] = []

    def flush() -> None:
        while current and not current[-1].content.strip():
            current.pop()
        if current:
            blocks.append(_Block(tuple(current)))
        current.clear()

    for line in _lines(data):
        content = line.content
        if content.startswith(b":20:"):
            flush()
            current.append(line)
        elif content.startswith((b"-", b"{")):
            flush()
        elif current:
            current.append(line)
        elif _TAG.match(content):
            raise MalformedRecord(
                f"tag {content[:5].decode('latin-1')!r} is outside a statement: no :20: "
                "line opened it",
                line.number,
            )
    flush()
    return blocks


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def parse(data: bytes) -> list[ParsedStatement]:
    """Parse an MT940 file into one statement per ``:20:`` block, in file order."""
    blocks = _blocks(data)
    if not blocks:
        raise MalformedRecord("the file holds no MT940 statement (no :20: line)")
    return [_statement(block, data) for block in blocks]


def _statement(block: _Block, data: bytes) -> ParsedStatement:
    raw = data[block.lines[0].start : block.lines[-1].end]
    text = _decode(raw)
    try:
        parsed = mt940.parse(text, options=mt940.Options.all())
    except Exception as exc:  # mt-940 raises bare RuntimeErrors, ValueErrors, … on bad tags
        raise _unreadable(exc, block) from None
    info: dict[str, Any] = dict(parsed.data)
    iban = _iban(block.tag_value(b"25"), block.tag_line(b"25"))
    account = f"account {mask_iban(iban)}"
    opening = _balance(info, "opening", block.tag_line(b"60F", b"60M"))
    closing = _balance(info, "closing", block.tag_line(b"62F", b"62M"))
    if opening.currency != closing.currency:
        raise MalformedRecord(
            f"the opening balance is in {opening.currency}, the closing balance in "
            f"{closing.currency}",
            closing.line,
        )
    lines_61 = block.count(b"61")
    if len(parsed) != len(lines_61):
        raise MalformedRecord(
            f"{len(lines_61)} :61: movement lines but {len(parsed)} movements could be read; "
            f"check the :61: lines {', '.join(map(str, lines_61))}",
            block.first_line,
        )
    movements = tuple(
        _movement(dict(tx.data), closing.currency, line)
        for tx, line in zip(parsed, lines_61, strict=True)
    )
    check_balance(opening.amount, movements, closing.amount, account, closing.line)
    period_start, period_end = statement_period(closing.day, movements)
    return ParsedStatement(
        iban=iban,
        format="mt940",
        period_start=period_start,
        period_end=period_end,
        currency=closing.currency,
        opening_balance=opening.amount,
        closing_balance=closing.amount,
        movements=movements,
        raw=raw,
        first_line=block.first_line,
    )


@dataclass(frozen=True, slots=True)
class _Balance:
    amount: Decimal
    currency: str
    day: date
    line: int


def _unreadable(exc: Exception, block: _Block) -> MalformedRecord:
    """Name the tag line mt-940 could not match, when its exception says which it was."""
    if len(exc.args) == 3 and isinstance(exc.args[1], mt940.tags.Tag):
        tag, value = exc.args[1], str(exc.args[2])
        prefix = f":{tag.id}:".encode()
        line = next(
            (
                ln.number
                for ln in block.lines
                if ln.content.startswith(prefix) and value[:16] in _decode(ln.content)
            ),
            block.first_line,
        )
        return MalformedRecord(
            f":{tag.id}: {value!r} does not match the MT940 layout of {tag.slug}", line
        )
    return MalformedRecord(f"MT940 statement cannot be read: {exc}", block.first_line)


def _balance(info: dict[str, Any], which: str, line: int) -> _Balance:
    """``:60F:``/``:60M:`` or ``:62F:``/``:62M:``, signed (``D`` is negative) and exact."""
    balance = info.get(f"final_{which}_balance") or info.get(f"intermediate_{which}_balance")
    tags = ":60F: or :60M:" if which == "opening" else ":62F: or :62M:"
    if not isinstance(balance, mt940.models.Balance):
        raise MalformedRecord(f"the statement has no {which} balance ({tags})", line)
    amount, day = balance.amount, balance.date
    if not isinstance(amount, mt940.models.Amount) or not amount.currency or day is None:
        raise MalformedRecord(
            f"the {which} balance ({tags}) lacks an amount, currency or date", line
        )
    return _Balance(Decimal(amount.amount), str(amount.currency), _date(day), line)


def _iban(value: object, line: int) -> str:
    if not value:
        raise MalformedRecord("the statement has no :25: account identification", line)
    candidate = str(value).strip().rsplit("/", 1)[-1]
    try:
        return normalise_iban(candidate)
    except InvalidIban as exc:
        raise InvalidAccount(f":25: {exc.message}", line) from None


def _date(value: object) -> date:
    """``mt-940`` dates are ``datetime.date`` subclasses; keep plain dates in our model."""
    assert isinstance(value, date)
    return date(value.year, value.month, value.day)


def _movement(tx: dict[str, Any], currency: str, line: int) -> Movement:
    amount = tx["amount"]
    if amount.currency not in (None, "", currency):
        raise MalformedRecord(
            f":61: movement is in {amount.currency}, the statement is in {currency}", line
        )
    value_date = _date(tx["date"])
    entry_date = tx.get("entry_date")
    reference = tx.get("bank_reference") or tx.get("customer_reference")
    if reference == "NONREF":
        reference = None
    label = tx.get("transaction_details") or tx.get("extra_details") or ""
    return Movement(
        booking_date=_date(entry_date) if entry_date else value_date,
        value_date=value_date,
        amount=Decimal(amount.amount),
        label=" ".join(str(label).split()),
        reference=str(reference) if reference else None,
    )
