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
file). SWIFT envelopes (``{1:…}{2:…}{4:``, ``-}``), the SOH/ETX bytes (``\x01``, ``\x03``)
that frame messages sent over SWIFT links, and blank lines between blocks belong to no
statement. A tag line outside any block is refused; other lines there (bank headers such
as ``:940:``, ``0000 01INGBNL2AXXXX00001`` and ``940 00``, or ``ABNANL2A`` then ``940``)
are ignored. When that tag line follows a block ended by a line holding only ``-`` (a
``:86:`` continuation line a bank started with ``-``, which SWIFT forbids), the refusal
names the ``-`` line: that is where the file is wrong.

Statement data: IBAN from ``:25:`` (``_iban``): the part that is a valid IBAN, whether the
bank writes ``IBAN``, ``BIC/IBAN``, ``IBAN EUR`` or ``IBANEUR``; a ``:25:`` with no IBAN in
it (``BIC/account/CCY``, a bare account number) is refused, since the router keys
statements on IBAN, and the currency is never taken for an account. Balances from
``:60F:`` (or ``:60M:``) and ``:62F:`` (or ``:62M:``); one movement per ``:61:`` with its
``:86:`` as label (lines joined by single spaces). A ``:61:`` carries a value date and an
optional entry date (MMDD): the entry date is the booking date, the value date stands in
when it is missing. One line after ``:61:`` (its supplementary details, where SNS, ASN and Rabobank
put the counterparty's account and name) is read, and is the label when there is no
``:86:``; a ``:61:`` followed by more than one such line is refused naming that layout.
``mt-940`` runs with all its correctness options on (``Options.all()``); in
particular a reversal of a credit (``RC``) is a debit. The reference is the bank
reference (after ``//``), else the customer reference unless it is ``NONREF``.

Encoding: UTF-8 when the bytes are valid UTF-8, else latin-1 (French banks use both). A
UTF-8 byte-order mark at the start of the file is skipped and belongs to no statement.

Reasons never quote the file: tags, line numbers and the masked IBAN only. ``mt-940``'s
own log records (about twenty per refused statement, quoting the tag values) are routed
to our logger at debug level, without their arguments (``_LibraryLogs``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

import mt940
import structlog

from adapters.ingest.errors import InvalidAccount, MalformedRecord
from adapters.ingest.model import (
    Balance,
    Movement,
    ParsedStatement,
    check_balance,
    check_size,
    statement_period,
)
from routing.domain.errors import InvalidIban
from routing.domain.iban import mask_iban, normalise_iban

_LINE = re.compile(rb"([^\r\n]*)(\r\n|\r|\n)?")
_TAG = re.compile(rb":([0-9]{2}[A-Z]?):")
_UTF8_BOM = b"\xef\xbb\xbf"
_FRAMING = b"\x01\x03"
"""SOH and ETX: the bytes that frame a message on a SWIFT link."""
_BIC = re.compile(r"[A-Z]{6}[A-Z0-9]{2}(?:[A-Z0-9]{3})?")
_CCY = re.compile(r"[A-Z]{3}")
_IBAN_SHAPE = re.compile(r"[A-Z]{2}[0-9]{2}[A-Z0-9]+")
_TRAILING_CCY = re.compile(r"(.+?) ?([A-Z]{3})")

log = structlog.get_logger(__name__)


class _LibraryLogs(logging.Handler):
    """Re-emit ``mt-940``'s records on our logger at debug level, without their arguments.

    The library logs every tag it cannot match at ERROR, with the tag's value (a
    counterparty's IBAN and name) in the arguments. Its message templates say what it
    tried, which is what a developer needs; the values stay out of every log.
    """

    def emit(self, record: logging.LogRecord) -> None:
        log.debug(
            "mt940.library",
            library_logger=record.name,
            library_level=record.levelname,
            template=str(record.msg),
        )


def _route_library_logs() -> None:
    """Attach ``_LibraryLogs`` to the ``mt940`` logger once (not at import: no side effects)."""
    library = logging.getLogger("mt940")
    if not any(isinstance(h, _LibraryLogs) for h in library.handlers):
        library.addHandler(_LibraryLogs(logging.DEBUG))
        library.propagate = False


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
    dash: _Line | None = None
    """The lone ``-`` line that ended the last block, until anything else is met."""

    def flush() -> None:
        while current and not current[-1].content.strip():
            current.pop()
        if current:
            blocks.append(_Block(tuple(current)))
        current.clear()

    for line in _lines(data):
        content = line.content.lstrip(_FRAMING)
        if content.startswith(b":20:"):
            flush()
            dash = None
            current.append(line)
        elif content.startswith((b"-", b"{")):
            dash = line if current and content.strip() == b"-" else None
            flush()
        elif current:
            _check_continuation(current, line)
            current.append(line)
        elif (tag := _TAG.match(content)) is not None:
            tag_name = tag.group(0).decode("ascii")
            if dash is not None:
                raise MalformedRecord(
                    f"a line holding only '-' ends the statement here (SWIFT's end of a "
                    f"message), but line {line.number} goes on with a {tag_name} tag: a :86: "
                    "continuation line must not start with '-'",
                    dash.number,
                )
            raise MalformedRecord(
                f"tag {tag_name} is outside a statement: no :20: line opened it",
                line.number,
            )
        elif content.strip():
            dash = None
    flush()
    return blocks


def _check_continuation(current: list[_Line], line: _Line) -> None:
    """Refuse a second line after a ``:61:``: only one line of supplementary details exists.

    SNS, ASN and Rabobank put the counterparty on the line after ``:61:``, which SWIFT
    allows as the statement line's supplementary details (34 characters) and we read.
    A counterparty spread over more lines is another layout, refused by name rather than
    by ``mt-940``'s pattern error.
    """
    if not line.content.strip() or _TAG.match(line.content):
        return
    opener = next(
        (i for i in range(len(current) - 1, -1, -1) if _TAG.match(current[i].content)), None
    )
    if opener is None or not current[opener].content.startswith(b":61:"):
        return
    if any(ln.content.strip() for ln in current[opener + 1 :]):
        raise MalformedRecord(
            f"the :61: statement line on line {current[opener].number} is followed by more "
            "than one line before the next tag: the layout with the counterparty over several "
            "lines after :61: is not supported (one line of supplementary details is)",
            line.number,
        )


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
    check_size(raw, "MT940", block.first_line)
    text = _decode(raw)
    _route_library_logs()
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


def _unreadable(exc: Exception, block: _Block) -> MalformedRecord:
    """Name the tag line mt-940 could not match, when its exception says which it was.

    Only the tag, its line and the layout's name: the value would put the file's content
    (a counterparty's IBAN and name) in the reason.
    """
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
            f":{tag.id}: does not match the MT940 layout of {tag.slug.replace('_', ' ')}", line
        )
    return MalformedRecord(
        f"MT940 statement cannot be read ({type(exc).__name__})", block.first_line
    )


def _balance(info: dict[str, Any], which: str, line: int) -> Balance:
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
    return Balance(Decimal(amount.amount), str(amount.currency), _date(day), line)


def _iban(value: object, line: int) -> str:
    """The one IBAN in a ``:25:`` value, in any of the forms banks write it.

    Each ``/``-separated part is tried as it is, then without a trailing currency code
    (``IBAN EUR``, ``IBANEUR``); a part is taken only when it is a valid IBAN, so neither
    a BIC nor a currency can pass for one.
    """
    if not value:
        raise MalformedRecord("the statement has no :25: account identification", line)
    parts = [part.strip() for part in str(value).upper().split("/") if part.strip()]
    found: list[str] = []
    for part in parts:
        trailing = _TRAILING_CCY.fullmatch(part)
        for candidate in (part, trailing.group(1) if trailing else None):
            if candidate is None:
                continue
            try:
                iban = normalise_iban(candidate)
            except InvalidIban:
                continue
            if iban not in found:
                found.append(iban)
            break
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise InvalidAccount(
            f":25: names {len(found)} different IBANs; a statement is one account's", line
        )
    shape = "/".join(_shape(part) for part in parts)
    raise InvalidAccount(
        f":25: holds no valid IBAN (its form is {shape}): the router keys statements on "
        "IBAN, so a statement whose account is not given as an IBAN cannot be routed",
        line,
    )


def _shape(part: str) -> str:
    """What a ``:25:`` part looks like, in words, without quoting it."""
    compact = part.replace(" ", "")
    if _CCY.fullmatch(compact):
        return "currency"
    if _BIC.fullmatch(compact):
        return "BIC"
    if _IBAN_SHAPE.fullmatch(compact):
        return "IBAN with an invalid checksum or length"
    return "account number"


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
