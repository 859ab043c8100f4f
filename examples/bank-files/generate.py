"""Generate the sample bank files of this folder, deterministically, from our own data.

Run ``.venv/bin/python examples/bank-files/generate.py`` (optionally with an output folder)
to rewrite them; the tests regenerate them into a temporary folder and compare the bytes
with the checked-in files, so a change here without regenerating fails the build.

Every account, amount and label below is invented. The accounts' IBANs are derived from
their RIBs with ``routing.domain.iban.iban_from_rib``, and the accounts of the good files
are the ones the demo state knows. The good files:

* ``cfonb120-multi.txt``: CFONB 120, CRLF, 3 accounts (one with a letter in its account
  number) x 2 days = 6 statements, with latin-1 accents, ``05`` complements (one of them a
  short line), a zero amount, a negative opening balance, blank currency and decimals on
  one account's ``01``/``07`` records and a blank line between the two days;
* ``cfonb120-multi-nobreaks.txt``: the same records without line breaks (the short
  ``05`` padded to 120 characters, the blank line dropped);
* ``camt053-multi.xml``: camt.053.001.02, 3 statements for 2 accounts, with a batch entry
  of two transactions, a debit (negative) opening balance and a pending entry;
* ``mt940-multi.sta``: MT940 in SWIFT envelopes, 2 statements for 2 accounts.

The broken files, each refused with the line at fault:

* ``cfonb120-bad-rib.txt``: a CFONB record carries no RIB key, so a "bad RIB" is an account
  number that cannot form a RIB at all: ``12345-78901`` has a dash (line 1);
* ``cfonb120-balance-mismatch.txt``: the second statement's new balance is one cent off
  (its ``07`` record is line 6);
* ``cfonb120-truncated.txt``: a ``04`` record cut to 87 characters (line 4);
* ``camt053-doctype.xml``: a camt.053 with a DOCTYPE declaring an external entity
  (``file:///etc/passwd``) used in a label (line 2).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path

from routing.domain.iban import iban_from_rib

HERE = Path(__file__).resolve().parent

# --- CFONB 120 -------------------------------------------------------------------------


@dataclass(frozen=True)
class Rib:
    bank: str
    guichet: str
    account: str

    @property
    def iban(self) -> str:
        return iban_from_rib(self.bank, self.guichet, self.account)


@dataclass(frozen=True)
class Line:
    """One movement: a 04 record and its 05 complements (qualifier, text)."""

    booked: date
    amount: str
    label: str
    reference: str = ""
    value: date | None = None
    complements: tuple[tuple[str, str], ...] = ()
    short_complement: bool = False


@dataclass(frozen=True)
class Day:
    rib: Rib
    old_date: date
    new_date: date
    opening: str
    lines: tuple[Line, ...] = ()
    blank_currency: bool = False
    closing_error: str = "0"

    @property
    def closing(self) -> Decimal:
        total = sum((Decimal(m.amount) for m in self.lines), Decimal(0))
        return Decimal(self.opening) + total + Decimal(self.closing_error)


_POSITIVE = "{ABCDEFGHI"
_NEGATIVE = "}JKLMNOPQR"


def cfonb_amount(amount: Decimal, decimals: int = 2) -> str:
    units = int(amount.scaleb(decimals))
    digits = f"{abs(units):014d}"
    signs = _NEGATIVE if units < 0 else _POSITIVE
    return digits[:13] + signs[int(digits[13])]


def ddmmyy(day: date | None) -> str:
    return day.strftime("%d%m%y") if day else "      "


def header(kind: str, rib: Rib, currency: str, code: str = "    ", interbank: str = "  ") -> str:
    return f"{kind}{rib.bank}{code}{rib.guichet}{currency} {rib.account}{interbank}"


def balance_record(kind: str, day: Day, when: date, amount: Decimal) -> str:
    currency = "    " if day.blank_currency else "EUR2"
    text = header(kind, day.rib, currency) + ddmmyy(when) + " " * 50 + cfonb_amount(amount)
    return text.ljust(120)


def movement_records(day: Day, line: Line) -> list[str]:
    records = [
        header("04", day.rib, "EUR2", "0510", "05")
        + ddmmyy(line.booked)
        + "  "
        + ddmmyy(line.value)
        + line.label.ljust(31)
        + " " * 11
        + cfonb_amount(Decimal(line.amount))
        + line.reference.ljust(16)
    ]
    for qualifier, text in line.complements:
        record = (
            header("05", day.rib, "EUR2", "0510", "05")
            + ddmmyy(line.booked)
            + " " * 5
            + qualifier
            + text.ljust(70)
            + "  "
        )
        records.append(record.rstrip() if line.short_complement else record)
    return records


def cfonb_block(day: Day) -> list[str]:
    records = [balance_record("01", day, day.old_date, Decimal(day.opening))]
    for line in day.lines:
        records.extend(movement_records(day, line))
    records.append(balance_record("07", day, day.new_date, day.closing))
    for record in records:
        assert len(record) == 120 or record.startswith("05"), record
    return records


def cfonb_file(days: list[Day], blank_line_after: int | None = None) -> bytes:
    lines: list[str] = []
    for index, day in enumerate(days):
        lines.extend(cfonb_block(day))
        if index == blank_line_after:
            lines.append("")
    return "".join(f"{line}\r\n" for line in lines).encode("latin-1")


A = Rib("30006", "00001", "12345678901")
B = Rib("30004", "00825", "00012345678")
C = Rib("10278", "06076", "0001234F501")
FRI, MON, TUE = date(2025, 2, 28), date(2025, 3, 3), date(2025, 3, 4)

CFONB_DAYS = [
    Day(
        A,
        FRI,
        MON,
        "15234.56",
        (
            Line(
                MON,
                "2500.00",
                "VIR SEPA RECU /DE ACME SARL",
                "VIR0000000001",
                MON,
                (("LIB", "FACTURE F-2025-0042 MARS"),),
            ),
            Line(
                MON,
                "-187.43",
                "PRLV SEPA EDF",
                "PRLV000000002",
                MON,
                (("NPY", "EDF COMMERCE"),),
                short_complement=True,
            ),
            Line(MON, "0.00", "COMMISSION OFFERTE", value=MON),
            Line(MON, "-12.80", "CB CAFÉ DE LA GARE 01/03", "CB0000000003", date(2025, 3, 1)),
        ),
    ),
    Day(
        B,
        FRI,
        MON,
        "-1250.00",
        (Line(MON, "3000.00", "REMISE CHEQUES N°4711", "RCH0000004711", date(2025, 3, 4)),),
        blank_currency=True,
    ),
    Day(
        C,
        FRI,
        MON,
        "4321.09",
        (Line(MON, "-950.00", "VIR SEPA EMIS /A SCI DES LILAS", "VIR0000000005", MON),),
    ),
    Day(
        A,
        MON,
        TUE,
        "17534.33",
        (
            Line(TUE, "-64.21", "CB CARBURANT STATION 03/03", "CB0000000006", MON),
            Line(
                TUE,
                "1000.00",
                "VIR SEPA RECU /DE M. DUPONT",
                "VIR0000000007",
                TUE,
                (("LIB", "ACOMPTE DEVIS 2025-17"), ("RCN", "DUPONT-2025-17")),
            ),
        ),
    ),
    Day(B, MON, TUE, "1750.00"),
    Day(
        C,
        MON,
        TUE,
        "3371.09",
        (
            Line(TUE, "-1234.56", "PRLV SEPA URSSAF", "PRLV000000008", TUE),
            Line(TUE, "0.01", "INTERETS CREDITEURS", value=TUE),
        ),
    ),
]


def cfonb_nobreaks(days: list[Day]) -> bytes:
    return "".join(r.ljust(120) for day in days for r in cfonb_block(day)).encode("latin-1")


# --- camt.053 --------------------------------------------------------------------------

D = Rib("30003", "03620", "00020412345")
E = Rib("20041", "01005", "0500013M026")
CAMT_NS = "urn:iso:std:iso:20022:tech:xsd:camt.053.001.02"


@dataclass(frozen=True)
class Entry:
    amount: str
    booked: date
    label: str
    reference: str
    status: str = "BOOK"
    details: tuple[tuple[str, str, str], ...] = ()
    """(end-to-end id, amount, remittance text) per transaction of a batch entry."""


@dataclass(frozen=True)
class CamtStatement:
    ident: str
    rib: Rib
    day: date
    opening: str
    entries: tuple[Entry, ...] = field(default_factory=tuple)

    @property
    def closing(self) -> Decimal:
        booked = (Decimal(e.amount) for e in self.entries if e.status == "BOOK")
        return Decimal(self.opening) + sum(booked, Decimal(0))


def camt_amount(tag: str, amount: Decimal, indent: str) -> str:
    sign = "DBIT" if amount < 0 else "CRDT"
    return (
        f'{indent}<{tag} Ccy="EUR">{abs(amount):.2f}</{tag}>\n'
        f"{indent}<CdtDbtInd>{sign}</CdtDbtInd>\n"
    )


def camt_balance(code: str, amount: Decimal, day: date) -> str:
    return (
        "      <Bal>\n"
        f"        <Tp><CdOrPrtry><Cd>{code}</Cd></CdOrPrtry></Tp>\n"
        + camt_amount("Amt", amount, "        ")
        + f"        <Dt><Dt>{day.isoformat()}</Dt></Dt>\n"
        "      </Bal>\n"
    )


def camt_entry(entry: Entry) -> str:
    amount = Decimal(entry.amount)
    text = (
        "      <Ntry>\n"
        + camt_amount("Amt", amount, "        ")
        + f"        <Sts>{entry.status}</Sts>\n"
        f"        <BookgDt><Dt>{entry.booked.isoformat()}</Dt></BookgDt>\n"
        f"        <ValDt><Dt>{entry.booked.isoformat()}</Dt></ValDt>\n"
        f"        <AcctSvcrRef>{entry.reference}</AcctSvcrRef>\n"
        "        <BkTxCd><Domn><Cd>PMNT</Cd><Fmly><Cd>RCDT</Cd><SubFmlyCd>ESCT</SubFmlyCd>"
        "</Fmly></Domn></BkTxCd>\n"
    )
    if entry.details:
        text += "        <NtryDtls>\n"
        for end_to_end, detail_amount, remittance in entry.details:
            text += (
                "          <TxDtls>\n"
                f"            <Refs><EndToEndId>{end_to_end}</EndToEndId></Refs>\n"
                "            <AmtDtls><TxAmt>"
                f'<Amt Ccy="EUR">{Decimal(detail_amount):.2f}</Amt></TxAmt></AmtDtls>\n'
                f"            <RmtInf><Ustrd>{remittance}</Ustrd></RmtInf>\n"
                "          </TxDtls>\n"
            )
        text += "        </NtryDtls>\n"
    if entry.label:
        text += f"        <AddtlNtryInf>{entry.label}</AddtlNtryInf>\n"
    return text + "      </Ntry>\n"


def camt_statement(stmt: CamtStatement) -> str:
    return (
        "    <Stmt>\n"
        f"      <Id>{stmt.ident}</Id>\n"
        f"      <CreDtTm>{stmt.day.isoformat()}T20:00:00+01:00</CreDtTm>\n"
        "      <FrToDt>\n"
        f"        <FrDtTm>{stmt.day.isoformat()}T00:00:00+01:00</FrDtTm>\n"
        f"        <ToDtTm>{stmt.day.isoformat()}T23:59:59+01:00</ToDtTm>\n"
        "      </FrToDt>\n"
        "      <Acct>\n"
        f"        <Id><IBAN>{stmt.rib.iban}</IBAN></Id>\n"
        "        <Ccy>EUR</Ccy>\n"
        "      </Acct>\n"
        + camt_balance("OPBD", Decimal(stmt.opening), stmt.day)
        + camt_balance("CLBD", stmt.closing, stmt.day)
        + "".join(camt_entry(e) for e in stmt.entries)
        + "    </Stmt>\n"
    )


CAMT_STATEMENTS = [
    CamtStatement(
        "STMT-20250303-D",
        D,
        MON,
        "8000.00",
        (
            Entry(
                "1250.50",
                MON,
                "REMISE VIREMENTS SEPA",
                "BQ0303000001",
                details=(
                    ("E2E-CLIENT-0001", "1000.00", "FACTURE 2025-101"),
                    ("E2E-CLIENT-0002", "250.50", "FACTURE 2025-102"),
                ),
            ),
            Entry("-89.90", MON, "PRLV SEPA ORANGE", "BQ0303000002"),
        ),
    ),
    CamtStatement(
        "STMT-20250304-D",
        D,
        TUE,
        "9160.60",
        (Entry("-2000.00", TUE, "VIR SEPA EMIS /A FOURNISSEUR ÉLEC", "BQ0304000003"),),
    ),
    CamtStatement(
        "STMT-20250303-E",
        E,
        MON,
        "-420.75",
        (
            Entry("600.00", MON, "VIR SEPA RECU /DE SAS BÉTA", "BQ0303000004"),
            Entry("-35.00", MON, "CB EN ATTENTE", "BQ0303000005", status="PDNG"),
        ),
    ),
]


def camt_document(statements: list[CamtStatement], doctype: str = "") -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        + doctype
        + f'<Document xmlns="{CAMT_NS}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n'
        "  <BkToCstmrStmt>\n"
        "    <GrpHdr>\n"
        "      <MsgId>SOBANK-DEMO-20250304</MsgId>\n"
        "      <CreDtTm>2025-03-04T20:00:00+01:00</CreDtTm>\n"
        "    </GrpHdr>\n" + "".join(camt_statement(s) for s in statements) + "  </BkToCstmrStmt>\n"
        "</Document>\n"
    ).encode()


def camt_doctype() -> bytes:
    """The first statement with an XXE: a DOCTYPE whose external entity reads a local file."""
    doctype = '<!DOCTYPE Document [\n  <!ENTITY xxe SYSTEM "file:///etc/passwd">\n]>\n'
    poisoned = CamtStatement(
        "STMT-20250303-X",
        D,
        MON,
        "8000.00",
        (Entry("-89.90", MON, "PRLV SEPA &xxe;", "BQ0303000002"),),
    )
    return camt_document([poisoned], doctype)


# --- MT940 -----------------------------------------------------------------------------

F = Rib("30002", "00550", "0000157841Z")
G = Rib("11315", "00001", "08001234567")


def mt940_amount(amount: Decimal) -> str:
    return f"{abs(amount):.2f}".replace(".", ",")


def mt940_balance(tag: str, amount: Decimal, day: date) -> str:
    mark = "D" if amount < 0 else "C"
    return f":{tag}:{mark}{day.strftime('%y%m%d')}EUR{mt940_amount(amount)}"


def mt940_message(
    reference: str,
    rib: Rib,
    number: str,
    opening: Decimal,
    day: date,
    lines: list[tuple[str, Decimal, str, list[str]]],
) -> list[str]:
    """One SWIFT MT940 message; lines are (mark, signed amount, :61: tail, :86: lines)."""
    text = [
        "{1:F01SOBKFRPPAXXX0000000000}{2:O9402000250303SOBKFRPPAXXX00000000002503032000N}{4:",
        f":20:{reference}",
        f":25:{rib.iban}",
        f":28C:{number}",
        mt940_balance("60F", opening, day),
    ]
    closing = opening
    for mark, amount, tail, details in lines:
        closing += amount
        text.append(f":61:{day.strftime('%y%m%d%m%d')}{mark}{mt940_amount(amount)}{tail}")
        text.append(f":86:{details[0]}")
        text.extend(details[1:])
    text += [mt940_balance("62F", closing, day), mt940_balance("64", closing, day), "-}"]
    return text


def mt940_file() -> bytes:
    lines = mt940_message(
        "SOB20250303F",
        F,
        "00062/001",
        Decimal("2750.00"),
        MON,
        [
            ("C", Decimal("480.00"), "NTRFNONREF//BQ0303F00001", ["VIR SEPA RECU /DE GAMMA SA"]),
            (
                "D",
                Decimal("-1320.45"),
                "NDDTPRLV2025030301//BQ0303F00002",
                ["PRLV SEPA DGFIP TVA FEVRIER", "REF. MANDAT FR12ZZZ000000-2025"],
            ),
            ("RC", Decimal("-480.00"), "NTRFNONREF//BQ0303F00003", ["ANNULATION VIR GAMMA SA"]),
        ],
    ) + mt940_message(
        "SOB20250303G",
        G,
        "00017/001",
        Decimal("-75.30"),
        MON,
        [("C", Decimal("75.30"), "NTRFFACT2025-03//BQ0303G00001", ["VIR SEPA RECU /DE DELTA"])],
    )
    return "".join(f"{line}\r\n" for line in lines).encode()


# --- broken CFONB files --------------------------------------------------------------


def cfonb_bad_rib() -> bytes:
    return cfonb_file([Day(Rib("30006", "00001", "12345-78901"), FRI, MON, "100.00")])


def cfonb_balance_mismatch() -> bytes:
    wrong = Day(C, FRI, MON, "4321.09", CFONB_DAYS[2].lines, closing_error="0.01")
    return cfonb_file([CFONB_DAYS[1], wrong])


def cfonb_truncated() -> bytes:
    lines = cfonb_file([CFONB_DAYS[0]]).decode("latin-1").split("\r\n")
    lines[3] = lines[3][:87]
    return "\r\n".join(lines).encode("latin-1")


# --- all of them -----------------------------------------------------------------------


def files() -> dict[str, bytes]:
    """Every sample file, by name."""
    return {
        "cfonb120-multi.txt": cfonb_file(CFONB_DAYS, blank_line_after=2),
        "cfonb120-multi-nobreaks.txt": cfonb_nobreaks(CFONB_DAYS),
        "camt053-multi.xml": camt_document(CAMT_STATEMENTS),
        "mt940-multi.sta": mt940_file(),
        "cfonb120-bad-rib.txt": cfonb_bad_rib(),
        "cfonb120-balance-mismatch.txt": cfonb_balance_mismatch(),
        "cfonb120-truncated.txt": cfonb_truncated(),
        "camt053-doctype.xml": camt_doctype(),
    }


def write_all(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in files().items():
        path = folder / name
        path.write_bytes(data)
        written.append(path)
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE
    for path in write_all(target):
        print(path)
