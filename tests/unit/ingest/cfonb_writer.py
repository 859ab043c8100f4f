"""A small CFONB 120 writer for the tests, with the statements the parser must read back.

It is written independently of ``adapters.ingest.cfonb120`` (from the same layout), so a
round trip checks the parser against a second reading of the standard rather than against
itself. ``render`` returns the file's bytes and the exact ``ParsedStatement`` list the
parser must return, including each statement's ``raw`` bytes and first line.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Literal

from adapters.ingest.model import Movement, ParsedStatement
from routing.domain.iban import iban_from_rib

_POSITIVE = "{ABCDEFGHI"
_NEGATIVE = "}JKLMNOPQR"


@dataclass(frozen=True)
class WMovement:
    booking: date
    value: date | None
    units: int
    """The amount in minor units (cents for 2 decimals)."""
    label: str = ""
    reference: str = ""
    complements: tuple[str, ...] = ()


@dataclass(frozen=True)
class WStatement:
    bank: str
    guichet: str
    account: str
    old_date: date
    new_date: date
    opening_units: int
    movements: tuple[WMovement, ...] = ()
    currency: str = "EUR"
    decimals: int = 2
    blank_currency: bool = False
    """Leave currency and decimals blank on 01/07 (then they must be EUR and 2)."""

    @property
    def closing_units(self) -> int:
        return self.opening_units + sum(m.units for m in self.movements)


def amount_field(units: int) -> str:
    digits = f"{abs(units):014d}"
    return digits[:13] + (_NEGATIVE if units < 0 else _POSITIVE)[int(digits[13])]


def _ddmmyy(day: date | None) -> str:
    return "      " if day is None else f"{day.day:02d}{day.month:02d}{day.year % 100:02d}"


def _head(kind: str, st: WStatement, blank: bool = False) -> str:
    money = "    " if blank else f"{st.currency}{st.decimals}"
    return f"{kind}{st.bank}    {st.guichet}{money} {st.account}  "


def records(st: WStatement, short_05: bool = False) -> list[str]:
    """The statement's records: 01, then 04 (+ 05s) per movement, then 07."""
    out = [
        _head("01", st, st.blank_currency)
        + _ddmmyy(st.old_date)
        + " " * 50
        + amount_field(st.opening_units)
        + " " * 16
    ]
    for m in st.movements:
        out.append(
            _head("04", st)
            + _ddmmyy(m.booking)
            + "  "
            + _ddmmyy(m.value)
            + f"{m.label:<31}"
            + " " * 11
            + amount_field(m.units)
            + f"{m.reference:<16}"
        )
        for text in m.complements:
            rec = _head("05", st) + _ddmmyy(m.booking) + "     LIB" + f"{text:<70}" + "  "
            out.append(rec.rstrip(" ") if short_05 else rec)
    out.append(
        _head("07", st, st.blank_currency)
        + _ddmmyy(st.new_date)
        + " " * 50
        + amount_field(st.closing_units)
        + " " * 16
    )
    assert all(len(r) == 120 or (short_05 and r.startswith("05")) for r in out), out
    return out


def expected(st: WStatement, raw: bytes, first_line: int) -> ParsedStatement:
    def money(units: int) -> Decimal:
        return Decimal(units).scaleb(-st.decimals)

    movements = tuple(
        Movement(
            booking_date=m.booking,
            value_date=m.value,
            amount=money(m.units),
            label=" ".join(p for p in (m.label, *m.complements) if p),
            reference=m.reference or None,
        )
        for m in st.movements
    )
    days = [st.new_date, *(m.booking for m in st.movements)]
    return ParsedStatement(
        iban=iban_from_rib(st.bank, st.guichet, st.account),
        format="cfonb120",
        period_start=min(days),
        period_end=max(days),
        currency=st.currency,
        opening_balance=money(st.opening_units),
        closing_balance=money(st.closing_units),
        movements=movements,
        raw=raw,
        first_line=first_line,
    )


def render(
    statements: list[WStatement],
    line_ending: Literal["\r\n", "\n", "\r", ""] = "\r\n",
    blank_line_between: bool = False,
    short_05: bool = False,
) -> tuple[bytes, list[ParsedStatement]]:
    """The file, and what parsing it must give.

    With ``line_ending=""`` the file has no line breaks; short 05 records and blank lines
    need line breaks, so they are not written then.
    """
    unbroken = line_ending == ""
    out = b""
    line = 1
    parsed: list[ParsedStatement] = []
    for index, st in enumerate(statements):
        recs = records(st, short_05=short_05 and not unbroken)
        block = "".join(r + line_ending for r in recs).encode("latin-1")
        parsed.append(expected(st, block, line))
        out += block
        line += len(recs)
        if blank_line_between and not unbroken and index < len(statements) - 1:
            out += line_ending.encode()
            line += 1
    return out, parsed
