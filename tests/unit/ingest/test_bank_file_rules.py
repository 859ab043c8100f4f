"""Issue 15's rules, one accepted and one refused file each (examples/bank-files/rules/).

Each rule has a small file written by ``rules/write_rules.py``: the accepted files must
give the statement below to the cent, the refused ones the line and the reason below. The
real files of ``examples/bank-files/real/`` (public parsers' test data, see its README)
are read here too, with what our rules make of them.
"""

from __future__ import annotations

import runpy
from datetime import date
from decimal import Decimal

import pytest

from adapters.ingest import detect_format, mt940, parse_file
from adapters.ingest.errors import BankFileError, InvalidAccount, MalformedRecord, UnknownFormat
from adapters.ingest.model import BankFormat

from .samples import SAMPLES

RULES = SAMPLES / "rules"
REAL = SAMPLES / "real"
IBAN = "FR7630006000011234567890189"
MON, TUE = date(2025, 3, 3), date(2025, 3, 4)

# file -> (format, period, opening, closing, movement amounts)
ACCEPTED: dict[str, tuple[BankFormat, tuple[date, date], str, str, tuple[str, ...]]] = {
    # 1: short records padded (01/07/04 at 104, a 04 at 109, a short 05), with breaks...
    "cfonb120-short-records.txt": (
        "cfonb120",
        (MON, MON),
        "1000.00",
        "1094.50",
        ("-25.50", "120.00"),
    ),
    # ... and without, the last 07 record trimmed to 104.
    "cfonb120-short-records-nobreaks.txt": (
        "cfonb120",
        (MON, MON),
        "1000.00",
        "1094.50",
        ("-25.50", "120.00"),
    ),
    # 2: 04 and 05 with another bank and guichet, the 01's account number.
    "cfonb120-04-05-other-branch.txt": (
        "cfonb120",
        (MON, MON),
        "1000.00",
        "1094.50",
        ("-25.50", "120.00"),
    ),
    # 3: detection variants; 4: :25: forms; 5: counterparty on the line after :61:.
    "mt940-940-first-line.sta": ("mt940", (MON, MON), "1000.00", "1094.50", ("-25.50", "120.00")),
    "mt940-soh-etx.sta": ("mt940", (MON, MON), "1000.00", "1094.50", ("-25.50", "120.00")),
    "mt940-ing-header-iban-space-ccy.sta": (
        "mt940",
        (MON, MON),
        "1000.00",
        "1094.50",
        ("-25.50", "120.00"),
    ),
    "mt940-abn-header-iban-glued-ccy.sta": (
        "mt940",
        (MON, MON),
        "1000.00",
        "1094.50",
        ("-25.50", "120.00"),
    ),
    "mt940-25-bic-iban.sta": ("mt940", (MON, MON), "1000.00", "1094.50", ("-25.50", "120.00")),
    # 6: an entry booked at 23:00Z on the 3rd is booked on the 4th in Paris.
    "camt053-booking-23h-utc.xml": ("camt053", (TUE, TUE), "1000.00", "1120.00", ("120.00",)),
}

# file -> (error class, line, words of the reason)
REFUSED: dict[str, tuple[type[BankFileError], int | None, str]] = {
    "cfonb120-short-amount-cut.txt": (
        MalformedRecord,
        2,
        "record '04' is 100 characters long, expected 120: truncated record, its amount "
        "(positions 91-104) is cut",
    ),
    "cfonb120-short-nobreaks-balance-cut.txt": (
        MalformedRecord,
        4,
        "record '07' is 95 characters long, expected 120: truncated record, its balance "
        "(positions 91-104) is cut",
    ),
    "cfonb120-account-mixture.txt": (
        MalformedRecord,
        2,
        "record 04 is for another account than the statement of account "
        "FR76 **** **** **** **** ***0 189 opened on line 1: its account number "
        "(positions 22-32) do not match",
    ),
    "cfonb120-07-other-branch.txt": (
        MalformedRecord,
        4,
        "record 07 is for another account than the statement of account "
        "FR76 **** **** **** **** ***0 189 opened on line 1: its guichet (positions 12-16)",
    ),
    "mt940-header-without-tags.txt": (UnknownFormat, None, "nor MT940"),
    "mt940-25-bic-account-ccy.sta": (
        InvalidAccount,
        2,
        ":25: holds no valid IBAN (its form is BIC/account number/currency): the router keys "
        "statements on IBAN",
    ),
    "mt940-61-counterparty-two-lines.sta": (
        MalformedRecord,
        7,
        "the :61: statement line on line 5 is followed by more than one line before the next "
        "tag: the layout with the counterparty over several lines after :61: is not supported",
    ),
    # 9: the lone "-" is the line at fault, not the :61: after it.
    "mt940-lone-dash-continuation.sta": (
        MalformedRecord,
        7,
        "a line holding only '-' ends the statement here (SWIFT's end of a message), but "
        "line 8 goes on with a :61: tag",
    ),
    "camt053-entry-outside-period.xml": (
        MalformedRecord,
        25,
        "an entry of account FR76 **** **** **** **** ***0 189 is booked on 2025-03-06, "
        "outside the statement's period 2025-03-04..2025-03-04 (FrToDt)",
    ),
    "camt053-othr-id-only.xml": (
        InvalidAccount,
        9,
        "the statement's account is identified only by Acct/Id/Othr/Id, not by an IBAN "
        "(Acct/Id/IBAN): the router keys statements on IBAN",
    ),
}


def test_the_rule_files_are_what_write_rules_writes() -> None:
    writer = runpy.run_path(str(RULES / "write_rules.py"))
    written: dict[str, bytes] = writer["files"]()
    assert set(written) == set(ACCEPTED) | set(REFUSED)
    for name, data in written.items():
        assert (RULES / name).read_bytes() == data, f"regenerate {name} with write_rules.py"


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_accepted_rule_file_reads_to_the_cent(name: str) -> None:
    fmt, period, opening, closing, amounts = ACCEPTED[name]
    data = (RULES / name).read_bytes()

    assert detect_format(data) == fmt
    (statement,) = parse_file(data)
    assert (statement.iban, statement.currency) == (IBAN, "EUR")
    assert (statement.period_start, statement.period_end) == period
    assert (statement.opening_balance, statement.closing_balance) == (
        Decimal(opening),
        Decimal(closing),
    )
    assert tuple(m.amount for m in statement.movements) == tuple(Decimal(a) for a in amounts)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_rule_file_names_its_line_and_reason(name: str) -> None:
    kind, line, words = REFUSED[name]
    with pytest.raises(kind) as refused:
        parse_file((RULES / name).read_bytes(), filename=name)
    assert refused.value.line == line
    assert words in refused.value.reason


def test_short_records_keep_every_field_of_the_full_records() -> None:
    full = RULES / "cfonb120-04-05-other-branch.txt"
    (short,) = parse_file((RULES / "cfonb120-short-records.txt").read_bytes())
    (whole,) = parse_file(full.read_bytes())
    assert short.movements == whole.movements
    assert short.movements[0].label == "CB BOULANGERIE TICKET 0042"
    assert short.movements[1].reference == "REF12"


def test_a_23h_utc_booking_is_the_next_day_in_paris() -> None:
    (statement,) = parse_file((RULES / "camt053-booking-23h-utc.xml").read_bytes())
    (movement,) = statement.movements
    assert movement.booking_date == TUE


def test_the_counterparty_line_after_61_is_read_as_the_movement_details() -> None:
    (statement,) = parse_file((RULES / "mt940-940-first-line.sta").read_bytes())
    assert statement.movements[0].label == "CB BOULANGERIE TICKET 0042"
    assert statement.raw.startswith(b":20:STMT250303\n")


def test_soh_etx_framing_belongs_to_no_statement() -> None:
    data = (RULES / "mt940-soh-etx.sta").read_bytes()
    (statement,) = parse_file(data)
    assert statement.raw.startswith(b":20:") and statement.raw.endswith(
        b":62F:C250303EUR1094,50\r\n"
    )
    assert b"\x01" not in statement.raw and b"\x03" not in statement.raw


@pytest.mark.parametrize(
    "head",
    [
        b":940:\n",
        b"\x01",
        b"0000 01INGBNL2AXXXX00001\n0000 01INGBNL2AXXXX00001\n940 00\n",
        b"ABNANL2A\n940\nABNANL2A\n",
        b"{1:F01SOBKFRPPAXXX0000000000}{2:O940}{4:\n",
    ],
)
def test_mt940_detection_variants(head: bytes) -> None:
    assert detect_format(head + b":20:X\n:25:" + IBAN.encode() + b"\n") == "mt940"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (IBAN, IBAN),
        (f"{IBAN} EUR", IBAN),
        (f"{IBAN}EUR", IBAN),
        (f"BNPAFRPP/{IBAN}", IBAN),
        (f"BNPAFRPPXXX/{IBAN}/EUR", IBAN),
        ("FR76 3000 6000 0112 3456 7890 189", IBAN),
    ],
)
def test_25_forms_that_carry_an_iban(value: str, expected: str) -> None:
    assert mt940._iban(value, 2) == expected


@pytest.mark.parametrize(
    ("value", "shape"),
    [
        ("OTPVHUHB/11773016-11111018/HUF", "BIC/account number/currency"),
        ("517852257", "account number"),
        ("NL71RABO0123456789", "IBAN with an invalid checksum or length"),
    ],
)
def test_25_forms_without_an_iban_never_take_the_currency(value: str, shape: str) -> None:
    with pytest.raises(InvalidAccount) as refused:
        mt940._iban(value, 2)
    assert f"(its form is {shape})" in refused.value.reason
    assert "HUF" not in refused.value.reason and "11773016" not in refused.value.reason


# --- real files from public parsers' test data ----------------------------------------


def test_real_cfonb120_sample_with_a_filled_reserved_zone_is_read() -> None:
    (statement,) = parse_file((REAL / "silarhi-cfonb120-simple.txt").read_bytes())
    assert statement.iban == "FR7610278022040001234560307"
    assert (statement.opening_balance, statement.closing_balance) == (
        Decimal("16695.65"),
        Decimal("16695.65"),
    )
    assert (statement.period_start, statement.period_end) == (date(2020, 4, 6), date(2020, 4, 6))


@pytest.mark.parametrize(
    ("name", "line", "shape"),
    [
        # :940: first line; its :25: is test data with a wrong checksum.
        ("rabobank-iban.sta", 3, "IBAN with an invalid checksum or length"),
        # ABNANL2A / 940 / ABNANL2A headers; a Dutch account number, not an IBAN.
        ("abnamro.sta", 5, "account number"),
        # The counterparty on the line after :61: (SNS layout); an account number in :25:.
        ("sns.sta", 2, "account number"),
    ],
)
def test_real_mt940_samples_are_detected_and_refused_for_their_account(
    name: str, line: int, shape: str
) -> None:
    data = (REAL / name).read_bytes()
    assert detect_format(data) == "mt940"
    with pytest.raises(InvalidAccount) as refused:
        parse_file(data)
    assert refused.value.line == line
    assert f"(its form is {shape}): the router keys statements on IBAN" in refused.value.reason


def test_real_rabobank_sample_reads_once_its_iban_is_valid() -> None:
    """The file's only problem is its invented IBAN: with a valid one, both statements read."""
    data = (REAL / "rabobank-iban.sta").read_bytes().replace(b"NL71RABO", b"NL91ABNA")
    data = data.replace(b"0123456789\n", b"0417164300\n")
    first, second = parse_file(data)
    assert first.iban == second.iban == "NL91ABNA0417164300"
    assert [m.amount for m in first.movements] == [Decimal("-25.00"), Decimal("-10.00")]
    assert (first.closing_balance, second.closing_balance) == (Decimal("965.00"), Decimal("930.00"))
    assert first.movements[0].label.startswith("/EREF/01-01-2013")


def test_trimming_every_record_of_the_sample_loses_nothing() -> None:
    """The multi-account sample, every record's trailing blanks trimmed, reads the same."""
    data = (SAMPLES / "cfonb120-multi.txt").read_bytes()
    trimmed = b"\r\n".join(line.rstrip(b" ") for line in data.split(b"\r\n"))
    whole, short = parse_file(data), parse_file(trimmed)
    assert [s.movements for s in short] == [s.movements for s in whole]
    assert [(s.iban, s.opening_balance, s.closing_balance) for s in short] == [
        (s.iban, s.opening_balance, s.closing_balance) for s in whole
    ]
    assert len(trimmed) < len(data)
