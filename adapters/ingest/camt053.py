"""camt.053 (ISO 20022 ``BkToCstmrStmt``): safety checks of our own, then ``pycamt``.

Safety first (DESIGN §7: "entities and network off"). Before any XML parser sees the bytes:

1. a byte scan refuses any ``<!DOCTYPE`` or ``<!ENTITY`` (``UnsafeXml``, with its line).
   camt.053 never needs a DTD, and refusing them outright closes entity expansion
   ("billion laughs"), external entities (XXE, local files, network) and DTD fetches at
   once; a DOCTYPE quoted inside a comment is refused too, which costs nothing real;
2. the document is then read by ``xml.parsers.expat`` with handlers that refuse any
   DOCTYPE or entity declaration (a second line for encodings the byte scan cannot see),
   with parameter-entity parsing off. That pass finds each ``Stmt`` element's byte range
   and line;
3. only then does ``pycamt`` parse, and it builds its lxml parser with
   ``resolve_entities=False, no_network=True`` and no DTD loading.

Statements: one ``ParsedStatement`` per ``Stmt`` element (an account's statement; banks
send one per account and day), in document order, even when a ``Stmt`` spans several days.
Its ``raw`` is a complete camt.053 document made only of bytes of the file: everything
before the first ``<Stmt>`` (XML declaration, ``Document`` and ``BkToCstmrStmt`` start
tags with their namespace declarations, ``GrpHdr``), then this ``Stmt``'s exact bytes from
``<Stmt`` to ``</Stmt>``, then everything after the last ``</Stmt>`` (closing tags). A file
with one ``Stmt`` is thus its own ``raw``, byte for byte, and every ``raw`` is a valid
camt.053 a partner can read on its own (a bare ``<Stmt>`` fragment would not be).

Each ``raw`` is what ``pycamt`` parses, so the statement's data and bytes cannot diverge.
What is read, and from where:

* IBAN: ``Acct/Id/IBAN`` (``pycamt``), validated with ``normalise_iban``. An account given
  only as ``Acct/Id/Othr/Id`` (a local account number) is refused: the router keys
  statements on IBAN;
* currency: ``Acct/Ccy``, else the closing balance's ``Ccy``;
* balances: ``Bal`` with ``Tp/CdOrPrtry/Cd`` ``OPBD`` (else ``PRCD``) and ``CLBD``, read
  exactly from ``pycamt``'s tree: ``get_statement_info`` turns debit balances into floats;
* period: ``FrToDt`` when present, else the shared rule of ``model.statement_period``. A
  booked entry whose booking date falls outside ``FrToDt`` is refused with its line: its
  statement would otherwise be published for a period that does not hold it;
* dates: ``Dt`` as written; a ``DtTm`` with a time zone (``2025-03-03T23:00:00Z``) is
  turned into the date in Europe/Paris (here the 4th), the time zone of the French
  accounting the router serves; a ``DtTm`` without one is taken as written. The same rule
  applies to booking and value dates, balance dates and ``FrDtTm``/``ToDtTm``;
* movements: ``pycamt.get_transactions``, one per transaction detail (``TxDtls``) or per
  entry without details; entries whose status is not booked (``PDNG``, ``INFO``) are left
  out, as they are not in the closing balance. The sign comes from ``CdtDbtInd``. The
  label is ``AddtlNtryInf`` followed by the remittance information (``Ustrd`` lines), so
  a batch's details keep the entry's label and their own invoice text; whitespace runs
  become single spaces. The reference is ``AcctSvcrRef``, else the end-to-end id.

Then the opening balance plus the movements must give the closing balance, as for every
format. Line numbers are the file's lines: the element's for the account, balances and
period, the ``Ntry``'s for an entry outside the period, the ``Stmt``'s for other entry
problems (``pycamt`` does not say where a transaction was). Reasons quote no value from
the file (no account identifier, amount, reference or date as written).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, NoReturn
from xml.parsers import expat
from zoneinfo import ZoneInfo

from pycamt.parser import Camt053Parser

from adapters.ingest.errors import InvalidAccount, MalformedRecord, UnsafeXml
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

CAMT053_NAMESPACE_PREFIX = "urn:iso:std:iso:20022:tech:xsd:camt.053."

_DECLARATION = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
_BOOKED = {None, "", "BOOK"}
_NS_SEP = " "
BOOKING_TIME_ZONE = ZoneInfo("Europe/Paris")
"""Where a ``DtTm`` with a time zone is read: French accounting books in Paris time."""


@dataclass(frozen=True, slots=True)
class _StmtSpan:
    start: int
    end: int
    line: int


def _line_at(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def refuse_declarations(data: bytes) -> None:
    """Refuse a DOCTYPE or ENTITY declaration anywhere in the bytes, naming its line."""
    found = _DECLARATION.search(data)
    if found is not None:
        raise UnsafeXml(
            f"XML declares a {found.group(1).decode().upper()}: DTDs and entities are refused "
            "(they can read local files, reach the network or expand without bound)",
            _line_at(data, found.start()),
        )
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in data[:512]:
        raise MalformedRecord(
            "only ASCII-compatible encodings (UTF-8, ISO-8859-*) are accepted for camt.053"
        )


def _scan(data: bytes) -> list[_StmtSpan]:
    """One expat pass: refuse declarations again, check the root, find the ``Stmt`` spans."""
    parser = expat.ParserCreate(namespace_separator=_NS_SEP)
    parser.namespace_prefixes = True  # names become "uri local prefix" when prefixed
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    path: list[str] = []
    spans: list[_StmtSpan] = []
    opened: list[tuple[int, int]] = []
    stmt = ""

    def refuse(*_args: object) -> NoReturn:
        raise UnsafeXml(
            "XML declares a DOCTYPE or an entity: DTDs and entities are refused",
            parser.CurrentLineNumber,
        )

    def refuse_external(*_args: object) -> int:
        refuse()

    def start(name: str, _attrs: object) -> None:
        nonlocal stmt
        if not path:
            namespace, local, prefix = [*name.split(_NS_SEP), "", ""][:3]
            if not local:
                namespace, local = "", namespace
            if local != "Document" or not namespace.startswith(CAMT053_NAMESPACE_PREFIX):
                raise MalformedRecord(
                    f"not a camt.053 document: the root element is {local!r} in namespace "
                    f"{namespace or 'none'!r}, expected Document in {CAMT053_NAMESPACE_PREFIX}*",
                    parser.CurrentLineNumber,
                )
            if prefix:
                # pycamt looks elements up in the root's default namespace only.
                raise MalformedRecord(
                    f"camt.053 with a namespace prefix ({prefix}:Document) is not supported: "
                    "the camt.053 namespace must be the default namespace (xmlns=...)",
                    parser.CurrentLineNumber,
                )
            stmt = f"{namespace}{_NS_SEP}Stmt"
        path.append(name)
        if len(path) == 3 and name == stmt:
            opened.append((parser.CurrentByteIndex, parser.CurrentLineNumber))

    def end(name: str) -> None:
        if len(path) == 3 and name == stmt:
            begin, line = opened.pop()
            close = data.index(b">", parser.CurrentByteIndex) + 1
            spans.append(_StmtSpan(begin, close, line))
        path.pop()

    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.UnparsedEntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse_external
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        raise MalformedRecord(
            f"not well-formed XML: {expat.ErrorString(exc.code)}", exc.lineno
        ) from None
    return spans


def parse(data: bytes) -> list[ParsedStatement]:
    """Parse a camt.053 file into one statement per ``Stmt`` element, in document order."""
    refuse_declarations(data)
    spans = _scan(data)
    if not spans:
        raise MalformedRecord("the camt.053 document holds no Stmt element", 1)
    prefix, suffix = data[: spans[0].start], data[spans[-1].end :]
    first_line = spans[0].line
    raws = [prefix + data[span.start : span.end] + suffix for span in spans]
    for raw, span in zip(raws, spans, strict=True):
        check_size(raw, "camt.053", span.line)
    return [
        _statement(raw, line_offset=span.line - first_line, line=span.line)
        for raw, span in zip(raws, spans, strict=True)
    ]



def _statement(raw: bytes, line_offset: int, line: int) -> ParsedStatement:
    try:
        parser = Camt053Parser(raw)
        infos: list[dict[str, Any]] = parser.get_statement_info()
        transactions: list[dict[str, Any]] = parser.get_transactions()
    except Exception as exc:  # pycamt raises bare AttributeErrors etc. on odd documents
        raise MalformedRecord(
            f"camt.053 statement cannot be read ({type(exc).__name__})", line
        ) from None
    reader = _Reader(parser.tree, parser.namespaces, line_offset, line)
    info = infos[0]
    iban = _iban(info.get("IBAN"), reader.line_of(".//Acct"), reader.has(".//Acct/Id/Othr/Id"))
    opening, closing = reader.balance(("OPBD", "PRCD")), reader.balance(("CLBD",))
    currency = str(info.get("Currency") or closing.currency)
    for balance in (opening, closing):
        if balance.currency not in ("", currency):
            raise MalformedRecord(
                f"balance in {balance.currency}, the account is in {currency}", balance.line
            )
    account = f"account {mask_iban(iban)}"
    movements = tuple(
        _movement(tx, currency, account, line) for tx in transactions if tx.get("Status") in _BOOKED
    )
    check_balance(opening.amount, movements, closing.amount, account, closing.line)
    period = reader.period()
    if period is not None:
        reader.check_entries_within(period, account)
    else:
        period = statement_period(closing.day, movements)
    return ParsedStatement(
        iban=iban,
        format="camt053",
        period_start=period[0],
        period_end=period[1],
        currency=currency,
        opening_balance=opening.amount,
        closing_balance=closing.amount,
        movements=movements,
        raw=raw,
        first_line=line,
    )


class _Reader:
    """Exact reads from ``pycamt``'s parsed tree of one statement, with the file's lines."""

    def __init__(self, tree: Any, namespaces: Any, line_offset: int, line: int) -> None:
        self._stmt: Any = tree.find(".//Stmt", namespaces)
        self._ns = namespaces
        self._offset = line_offset
        self._line = line

    def has(self, path: str) -> bool:
        return self._stmt.find(path, self._ns) is not None

    def check_entries_within(self, period: tuple[date, date], account: str) -> None:
        """Refuse a booked entry booked outside ``FrToDt``, naming its line."""
        for entry in self._stmt.findall("Ntry", self._ns):
            status = self._text(entry, "Sts/Cd") or self._text(entry, "Sts")
            if status not in _BOOKED:
                continue
            booked = entry.find("BookgDt", self._ns)
            if booked is None:
                continue
            line = int(booked.sourceline) + self._offset
            when = self._text(booked, "Dt") or self._text(booked, "DtTm") or ""
            day = _day(when, "booking date (BookgDt)", line)
            if not period[0] <= day <= period[1]:
                raise MalformedRecord(
                    f"an entry of {account} is booked on {day.isoformat()}, outside the "
                    f"statement's period {period[0].isoformat()}..{period[1].isoformat()} "
                    "(FrToDt): it would be published as part of a period that does not hold it",
                    line,
                )

    def line_of(self, path: str) -> int:
        """The file's line of the statement's first ``path`` element, else the ``Stmt``'s."""
        found = self._stmt.find(path, self._ns)
        return self._line if found is None else int(found.sourceline) + self._offset

    def _text(self, element: Any, path: str) -> str | None:
        found = element.find(path, self._ns)
        return None if found is None or found.text is None else str(found.text).strip()

    def balance(self, codes: tuple[str, ...]) -> Balance:
        by_code: dict[str, Any] = {}
        for bal in self._stmt.findall("Bal", self._ns):
            code = self._text(bal, "Tp/CdOrPrtry/Cd")
            if code is not None:
                by_code.setdefault(code, bal)
        bal = next((by_code[c] for c in codes if c in by_code), None)
        if bal is None:
            raise MalformedRecord(f"the statement has no {' or '.join(codes)} balance", self._line)
        line = int(bal.sourceline) + self._offset
        amt = bal.find("Amt", self._ns)
        amount = _decimal(None if amt is None else amt.text, "balance amount", line)
        if self._text(bal, "CdtDbtInd") == "DBIT":
            amount = -amount
        day = self._text(bal, "Dt/Dt") or self._text(bal, "Dt/DtTm") or ""
        return Balance(
            amount=amount,
            currency=str(amt.get("Ccy", "")) if amt is not None else "",
            day=_day(day, f"{codes[0]} balance date", line),
            line=line,
        )

    def period(self) -> tuple[date, date] | None:
        fr_to = self._stmt.find("FrToDt", self._ns)
        if fr_to is None:
            return None
        line = int(fr_to.sourceline) + self._offset
        start = self._text(fr_to, "FrDtTm") or ""
        end = self._text(fr_to, "ToDtTm") or ""
        return _day(start, "FrDtTm", line), _day(end, "ToDtTm", line)


def _iban(value: object, line: int, has_other_id: bool) -> str:
    if not value and has_other_id:
        raise InvalidAccount(
            "the statement's account is identified only by Acct/Id/Othr/Id, not by an IBAN "
            "(Acct/Id/IBAN): the router keys statements on IBAN, so it cannot be routed",
            line,
        )
    if not value:
        raise MalformedRecord("the statement's account has no IBAN (Acct/Id/IBAN)", line)
    try:
        return normalise_iban(str(value))
    except InvalidIban:
        raise InvalidAccount(
            "the statement's IBAN (Acct/Id/IBAN) is not a valid IBAN", line
        ) from None


def _decimal(value: object, what: str, line: int) -> Decimal:
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise MalformedRecord(f"{what} is not a decimal number", line) from None
    if not amount.is_finite():
        raise MalformedRecord(f"{what} is not a decimal number", line)
    return amount


def _day(value: str, what: str, line: int) -> date:
    """An ISO ``Dt`` as written, or a ``DtTm``'s date in Europe/Paris when it has a zone."""
    try:
        if "T" not in value:
            return date.fromisoformat(value)
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise MalformedRecord(f"{what} is not an ISO date or date-time", line) from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(BOOKING_TIME_ZONE)
    return moment.date()


def _movement(tx: dict[str, Any], currency: str, account: str, line: int) -> Movement:
    reference = tx.get("TransactionID") or tx.get("EndToEndId")
    where = f"an entry of {account}"
    if tx.get("Currency") not in (None, currency):
        raise MalformedRecord(
            f"{where} is in {tx.get('Currency')}, the account is in {currency}", line
        )
    amount = _decimal(tx.get("Amount"), f"amount of {where}", line)
    indicator = tx.get("CreditDebitIndicator")
    if indicator not in ("CRDT", "DBIT"):
        raise MalformedRecord(f"{where} has no CdtDbtInd (CRDT or DBIT)", line)
    booking = str(tx.get("BookingDate") or "").strip()
    value = str(tx.get("ValueDate") or "").strip()
    parts = [tx.get("AdditionalEntryInformation"), tx.get("RemittanceInformationFull")]
    label = " ".join(dict.fromkeys(str(part) for part in parts if part))
    return Movement(
        booking_date=_day(booking, f"booking date of {where}", line),
        value_date=_day(value, f"value date of {where}", line) if value else None,
        amount=-amount if indicator == "DBIT" else amount,
        label=" ".join(str(label).split()),
        reference=str(reference) if reference else None,
    )
