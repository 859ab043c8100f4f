"""MT940: the sample read exactly, raw as the exact :20: block, refusals naming the line."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from adapters.ingest import mt940
from adapters.ingest.errors import BalanceMismatch, InvalidAccount, MalformedRecord
from adapters.ingest.model import Movement

from .samples import sample

IBAN_F = "FR3330002005500000157841Z25"
IBAN_G = "FR7611315000010800123456714"
MON = date(2025, 3, 3)


def test_sample_gives_one_statement_per_block_read_exactly() -> None:
    statements = mt940.parse(sample("mt940-multi.sta"))

    assert [(s.iban, s.period_start, s.period_end, s.first_line) for s in statements] == [
        (IBAN_F, MON, MON, 2),
        (IBAN_G, MON, MON, 17),
    ]
    assert [(s.opening_balance, s.closing_balance) for s in statements] == [
        (Decimal("2750.00"), Decimal("1429.55")),
        (Decimal("-75.30"), Decimal("0.00")),
    ]
    assert {(s.format, s.currency) for s in statements} == {("mt940", "EUR")}
    assert statements[0].movements == (
        Movement(MON, MON, Decimal("480.00"), "VIR SEPA RECU /DE GAMMA SA", "BQ0303F00001"),
        Movement(
            MON,
            MON,
            Decimal("-1320.45"),
            "PRLV SEPA DGFIP TVA FEVRIER REF. MANDAT FR12ZZZ000000-2025",
            "BQ0303F00002",
        ),
        # RC, the reversal of a credit, takes money out.
        Movement(MON, MON, Decimal("-480.00"), "ANNULATION VIR GAMMA SA", "BQ0303F00003"),
    )
    assert statements[1].movements == (
        Movement(MON, MON, Decimal("75.30"), "VIR SEPA RECU /DE DELTA", "BQ0303G00001"),
    )


def test_raw_is_the_exact_block_from_20_to_its_last_tag_line() -> None:
    data = sample("mt940-multi.sta")
    lines = data.splitlines(keepends=True)
    statements = mt940.parse(data)

    assert statements[0].raw == b"".join(lines[1:14])
    assert statements[1].raw == b"".join(lines[16:24])
    assert statements[0].raw.startswith(b":20:SOB20250303F\r\n")
    assert statements[0].raw.endswith(b":64:C250303EUR1429,55\r\n")
    assert b"{1:" not in statements[1].raw and b"-}" not in statements[1].raw


BARE = (
    b":20:REF1\n:25:BNPAFRPP/FR7630006000011234567890189\n:28C:1/1\n"
    b":60F:C250303EUR100,00\n"
    b":61:2503040304D0,50NMSCNONREF\n:86:FRAIS \xc9TUDE\n"
    b":61:250304C10,NTRFCLIENTREF\n"
    b":62F:C250304EUR109,50\n-\n\n"
    b":20:REF2\n:25:FR7630006000011234567890189\n:28C:2/1\n"
    b":60M:C250304EUR109,50\n:62M:C250305EUR109,50\n"
)


def test_bare_blocks_with_dash_separators_latin1_and_bic_prefix() -> None:
    first, second = mt940.parse(BARE)

    assert first.iban == second.iban == "FR7630006000011234567890189"
    assert first.movements == (
        Movement(date(2025, 3, 4), date(2025, 3, 4), Decimal("-0.50"), "FRAIS ÉTUDE", None),
        Movement(date(2025, 3, 4), date(2025, 3, 4), Decimal("10"), "", "CLIENTREF"),
    )
    assert first.raw == BARE[: BARE.index(b"-\n")]
    assert second.raw == BARE[BARE.index(b":20:REF2") :]
    assert (second.first_line, second.period_start, second.period_end) == (
        11,
        date(2025, 3, 5),
        date(2025, 3, 5),
    )


def test_a_utf8_bom_is_no_statement_byte() -> None:
    first, _ = mt940.parse(b"\xef\xbb\xbf" + BARE)
    assert first.raw == BARE[: BARE.index(b"-\n")]


def test_a_bad_iban_is_refused_on_the_25_line() -> None:
    data = BARE.replace(b"1234567890189", b"1234567890188")
    with pytest.raises(InvalidAccount) as caught:
        mt940.parse(data)
    assert caught.value.line == 2
    assert str(caught.value).startswith(
        "line 2: :25: holds no valid IBAN (its form is BIC/IBAN with an invalid checksum"
    )


def test_a_balance_mismatch_names_the_62F_line() -> None:
    data = BARE.replace(b":62F:C250304EUR109,50", b":62F:C250304EUR109,51")
    with pytest.raises(BalanceMismatch) as caught:
        mt940.parse(data)
    assert caught.value.line == 8
    assert "misses the closing balance by 0.01" in caught.value.reason


@pytest.mark.parametrize(
    ("data", "line", "message"),
    [
        (
            BARE.replace(b"D0,50NMSC", b"X0,50NMSC"),
            5,
            ":61: does not match the MT940 layout of statement",
        ),
        (BARE.replace(b":60F:C250303EUR100,00\n", b""), 1, "no opening balance"),
        (b":25:FR7630006000011234567890189\n" + BARE, 1, "outside a statement"),
        (b"hello\n", None, "no MT940 statement"),
        (BARE.replace(b"C250304EUR109,50\n-", b"C250304USD109,50\n-"), 8, "in EUR, the closing"),
        (BARE.replace(b":25:BNPAFRPP/FR7630006000011234567890189\n", b""), 1, "no :25:"),
    ],
)
def test_refusals_name_the_line(data: bytes, line: int | None, message: str) -> None:
    with pytest.raises(MalformedRecord) as caught:
        mt940.parse(data)
    assert caught.value.line == line
    assert message in caught.value.reason
