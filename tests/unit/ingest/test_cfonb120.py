"""CFONB 120: the samples read to the cent, exact raw bytes, refusals naming the line,
and hypothesis round trips through an independent writer."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from schwifty import IBAN
from schwifty.exceptions import SchwiftyException

from adapters.ingest import cfonb120
from adapters.ingest.errors import BalanceMismatch, InvalidAccount, MalformedRecord
from adapters.ingest.model import Movement, ParsedStatement
from routing.domain.iban import iban_from_rib

from .cfonb_writer import WMovement, WStatement, amount_field, records, render
from .samples import sample

IBAN_A = "FR7630006000011234567890189"
IBAN_B = "FR7630004008250001234567886"
IBAN_C = "FR6010278060760001234F50152"
MON, TUE = date(2025, 3, 3), date(2025, 3, 4)


def _without_position(statements: list[ParsedStatement]) -> list[ParsedStatement]:
    return [dataclasses.replace(s, raw=b"", first_line=0) for s in statements]


# --- the sample files -------------------------------------------------------------------


def test_multi_account_multi_day_sample_reads_to_the_cent() -> None:
    statements = cfonb120.parse(sample("cfonb120-multi.txt"))

    assert [(s.iban, s.period_start, s.period_end) for s in statements] == [
        (IBAN_A, MON, MON),
        (IBAN_B, MON, MON),
        (IBAN_C, MON, MON),
        (IBAN_A, TUE, TUE),
        (IBAN_B, TUE, TUE),
        (IBAN_C, TUE, TUE),
    ]
    assert [(s.opening_balance, s.closing_balance) for s in statements] == [
        (Decimal("15234.56"), Decimal("17534.33")),
        (Decimal("-1250.00"), Decimal("1750.00")),
        (Decimal("4321.09"), Decimal("3371.09")),
        (Decimal("17534.33"), Decimal("18470.12")),
        (Decimal("1750.00"), Decimal("1750.00")),
        (Decimal("3371.09"), Decimal("2136.54")),
    ]
    assert {s.format for s in statements} == {"cfonb120"}
    assert {s.currency for s in statements} == {"EUR"}  # B's 01/07 have a blank currency
    assert [s.first_line for s in statements] == [1, 9, 12, 16, 22, 24]
    assert [len(s.movements) for s in statements] == [4, 1, 1, 2, 0, 2]
    assert statements[0].movements == (
        Movement(
            MON,
            MON,
            Decimal("2500.00"),
            "VIR SEPA RECU /DE ACME SARL FACTURE F-2025-0042 MARS",
            "VIR0000000001",
        ),
        Movement(MON, MON, Decimal("-187.43"), "PRLV SEPA EDF EDF COMMERCE", "PRLV000000002"),
        Movement(MON, MON, Decimal("0.00"), "COMMISSION OFFERTE", None),
        Movement(
            MON, date(2025, 3, 1), Decimal("-12.80"), "CB CAFÉ DE LA GARE 01/03", "CB0000000003"
        ),
    )
    assert statements[1].movements == (
        Movement(MON, TUE, Decimal("3000.00"), "REMISE CHEQUES N°4711", "RCH0000004711"),
    )
    assert statements[3].movements[1].label == (
        "VIR SEPA RECU /DE M. DUPONT ACOMPTE DEVIS 2025-17 DUPONT-2025-17"
    )
    assert statements[5].movements[1].amount == Decimal("0.01")


def test_raw_is_the_exact_slice_from_the_01_record_to_the_07_line_break() -> None:
    data = sample("cfonb120-multi.txt")
    lines = data.split(b"\r\n")
    statements = cfonb120.parse(data)

    assert statements[0].raw == b"".join(line + b"\r\n" for line in lines[0:8])
    assert statements[4].raw == lines[21] + b"\r\n" + lines[22] + b"\r\n"
    # Blocks tile the file; only the blank line between the two days belongs to nobody.
    raws = [s.raw for s in statements]
    assert b"".join(raws[:3]) + b"\r\n" + b"".join(raws[3:]) == data
    # The short 05 line keeps its original (short) bytes.
    assert b"NPYEDF COMMERCE\r\n" in statements[0].raw


def test_the_file_without_line_breaks_gives_the_same_statements() -> None:
    data = sample("cfonb120-multi-nobreaks.txt")
    statements = cfonb120.parse(data)

    assert b"\r" not in data and b"\n" not in data
    assert _without_position(statements) == _without_position(
        cfonb120.parse(sample("cfonb120-multi.txt"))
    )
    assert b"".join(s.raw for s in statements) == data
    assert [len(s.raw) for s in statements] == [120 * n for n in (8, 3, 3, 6, 2, 4)]
    assert [s.first_line for s in statements] == [1, 9, 12, 15, 21, 23]


@pytest.mark.parametrize("ending", [b"\n", b"\r"])
def test_lf_and_cr_files_keep_their_own_line_breaks_in_raw(ending: bytes) -> None:
    data = sample("cfonb120-multi.txt").replace(b"\r\n", ending)
    statements = cfonb120.parse(data)

    assert statements[0].raw == b"".join(line + ending for line in data.split(ending)[0:8])
    assert _without_position(statements) == _without_position(
        cfonb120.parse(sample("cfonb120-multi.txt"))
    )


def test_bad_rib_sample_is_refused_on_its_line() -> None:
    with pytest.raises(InvalidAccount) as caught:
        cfonb120.parse(sample("cfonb120-bad-rib.txt"))
    assert caught.value.line == 1
    assert str(caught.value) == (
        "line 1: the account of this 01 record cannot form a RIB: the account number "
        "(positions 22-32) must be 11 letters or digits"
    )


def test_balance_mismatch_sample_names_the_account_and_the_07_line() -> None:
    with pytest.raises(BalanceMismatch) as caught:
        cfonb120.parse(sample("cfonb120-balance-mismatch.txt"))
    assert caught.value.line == 6
    assert str(caught.value) == (
        "line 6: balances do not add up for account FR60 **** **** **** **** ***0 152: the "
        "opening balance plus the movements misses the closing balance by 0.01"
    )


def test_truncated_sample_is_refused_on_its_line() -> None:
    with pytest.raises(MalformedRecord) as caught:
        cfonb120.parse(sample("cfonb120-truncated.txt"))
    assert str(caught.value) == (
        "line 4: record '04' is 87 characters long, expected 120: truncated record, its "
        "amount (positions 91-104) is cut (only fields that may be blank can be missing at "
        "the end of a record)"
    )


# --- tolerated deviations and refusals ------------------------------------------------

ST = WStatement(
    "30006",
    "00001",
    "12345678901",
    date(2025, 2, 28),
    MON,
    10_000,
    (WMovement(MON, MON, -2_550, "CB BOULANGERIE", "CB1", ("COMPLEMENT",)),),
)


def _lines(st: WStatement = ST) -> list[str]:
    return records(st)


def _file(lines: list[str], ending: str = "\r\n") -> bytes:
    return "".join(line + ending for line in lines).encode("latin-1")


def test_a_last_record_cut_into_its_balance_in_a_file_without_line_breaks_is_refused() -> None:
    data = "".join(_lines()).encode("latin-1")[:-20]
    with pytest.raises(MalformedRecord) as caught:
        cfonb120.parse(data)
    assert caught.value.line == 4
    assert "'07' is 100 characters long, expected 120: truncated record, its balance" in str(
        caught.value
    )


def test_blank_lines_trailing_spaces_and_a_utf8_bom_are_tolerated() -> None:
    lines = _lines()
    data = b"\xef\xbb\xbf" + _file(["", lines[0], "   ", lines[1], lines[2] + "    ", lines[3]])
    (statement,) = cfonb120.parse(data)
    assert statement.first_line == 2
    assert statement.closing_balance == Decimal("74.50")
    assert statement.movements[0].label == "CB BOULANGERIE COMPLEMENT"
    assert statement.raw == data[3 + 2 :]


def test_decimals_are_applied_per_record() -> None:
    st = dataclasses.replace(ST, decimals=3, currency="TND")
    (statement,) = cfonb120.parse(_file(records(st)))
    assert statement.currency == "TND"
    assert statement.opening_balance == Decimal("10.000")
    assert statement.movements[0].amount == Decimal("-2.550")
    zero = dataclasses.replace(ST, decimals=0, currency="JPY")
    assert cfonb120.parse(_file(records(zero)))[0].closing_balance == Decimal(7450)


def test_every_sign_character_is_read() -> None:
    for digit in range(10):
        for units in (digit, -digit, 1230 + digit, -(1230 + digit)):
            field = amount_field(units)
            assert cfonb120._amount(field, 2, 1) == Decimal(units).scaleb(-2), field


@pytest.mark.parametrize(
    ("lines", "line", "message"),
    [
        (lambda ls: ls[1:], 1, "record 04 is outside a statement: no 01 record opened it"),
        (lambda ls: ls[:3], 1, "has no closing 07 record"),
        (lambda ls: [ls[0], ls[0], *ls[1:]], 2, "a new 01 record starts before the 07 record"),
        (lambda ls: [ls[0], ls[2], ls[1], ls[3]], 2, "a 05 complement record must follow"),
        (lambda ls: [ls[0], "03" + ls[1][2:], *ls[2:]], 2, "unknown record type '03'"),
        (lambda ls: [ls[0], ls[1][:21] + "99999999999" + ls[1][32:], *ls[2:]], 2, "account"),
        (lambda ls: [ls[0], ls[1][:16] + "USD" + ls[1][19:], *ls[2:]], 2, "is in USD"),
        (lambda ls: [ls[0], ls[1][:16] + "E1R" + ls[1][19:], *ls[2:]], 2, "currency (positions"),
        (lambda ls: [ls[0], ls[1][:19] + "X" + ls[1][20:], *ls[2:]], 2, "decimals (position 20)"),
        (lambda ls: [ls[0], ls[1][:34] + "310225" + ls[1][40:], *ls[2:]], 2, "not a valid"),
        (lambda ls: [ls[0], ls[1][:42] + "03 325" + ls[1][48:], *ls[2:]], 2, "value date"),
        (lambda ls: [ls[0], ls[1][:103] + "S" + ls[1][104:], *ls[2:]], 2, "amount (positions"),
        (lambda ls: [ls[0], ls[1][:95] + " " + ls[1][96:], *ls[2:]], 2, "amount (positions"),
        (lambda ls: [*ls[:3], ls[3] + "0" + ls[3]], 4, "several records on one line"),
        (lambda ls: [], None, "the file holds no statement"),
    ],
)
def test_refusals_name_the_line(
    lines: Callable[[list[str]], list[str]], line: int | None, message: str
) -> None:
    with pytest.raises(MalformedRecord) as caught:
        cfonb120.parse(_file(lines(_lines())))
    assert caught.value.line == line
    assert message in caught.value.reason


# --- hypothesis ------------------------------------------------------------------------

DIGITS5 = st.from_regex(r"[0-9]{5}", fullmatch=True)
ACCOUNTS = st.from_regex(r"[0-9A-Z]{11}", fullmatch=True)
DAYS = st.dates(min_value=date(2000, 1, 1), max_value=date(2099, 12, 31))
TEXT = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefgh0123456789 /-.'&*+éèàçôÉÈÀÇ°",
    max_size=31,
).map(str.strip)
UNITS = st.one_of(st.just(0), st.integers(-(10**9), 10**9))


@st.composite
def movements(draw: st.DrawFn) -> WMovement:
    return WMovement(
        booking=draw(DAYS),
        value=draw(st.none() | DAYS),
        units=draw(UNITS),
        label=draw(TEXT),
        reference=draw(st.from_regex(r"[A-Z0-9]{0,16}", fullmatch=True)),
        complements=tuple(draw(st.lists(TEXT, max_size=2))),
    )


@st.composite
def statements(draw: st.DrawFn) -> WStatement:
    blank = draw(st.booleans())
    currency, decimals = ("EUR", 2) if blank else draw(st.sampled_from(CURRENCIES))
    return WStatement(
        bank=draw(DIGITS5),
        guichet=draw(DIGITS5),
        account=draw(ACCOUNTS),
        old_date=draw(DAYS),
        new_date=draw(DAYS),
        opening_units=draw(UNITS),
        movements=tuple(draw(st.lists(movements(), max_size=5))),
        currency=currency,
        decimals=decimals,
        blank_currency=blank,
    )


CURRENCIES = [("EUR", 2), ("USD", 2), ("JPY", 0), ("TND", 3)]


@settings(max_examples=150, deadline=None)
@given(
    statements=st.lists(statements(), min_size=1, max_size=5),
    ending=st.sampled_from(["\r\n", "\n", "\r", ""]),
    blank_lines=st.booleans(),
    short_05=st.booleans(),
)
def test_round_trip_through_the_writer(
    statements: list[WStatement], ending: str, blank_lines: bool, short_05: bool
) -> None:
    data, expected = render(statements, ending, blank_lines, short_05)  # type: ignore[arg-type]
    assert cfonb120.parse(data) == expected


@settings(max_examples=200, deadline=None)
@given(bank=DIGITS5, guichet=DIGITS5, account=ACCOUNTS, data=st.data())
def test_every_french_rib_gives_an_iban_schwifty_accepts(
    bank: str, guichet: str, account: str, data: st.DataObject
) -> None:
    iban = iban_from_rib(bank, guichet, account)
    assert str(IBAN(iban, validate_bban=True).compact) == iban

    bban = iban[4:]
    digit_positions = [i for i, ch in enumerate(bban) if ch.isdigit()]
    position = data.draw(st.sampled_from(digit_positions))
    other = data.draw(st.sampled_from([d for d in "0123456789" if d != bban[position]]))
    changed = iban[:4] + bban[:position] + other + bban[position + 1 :]
    with pytest.raises(SchwiftyException):
        IBAN(changed, validate_bban=True)
