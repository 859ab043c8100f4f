"""Write the small files of this folder: one accepted and one refused file per ingest rule.

Run ``.venv/bin/python examples/bank-files/rules/write_rules.py`` after changing it;
``tests/unit/ingest/test_real_world_rules.py`` reads the files and fails while they differ
from what this script writes. Every account, name and amount is invented (the
counterparty's IBAN is the well-known ``DE89 3704 0044 0532 0130 00`` example). README.md
beside it says which rule each file exercises and what the parser must answer.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

BANK, GUICHET, ACCOUNT = "30006", "00001", "12345678901"  # FR76 3000 6000 0112 3456 7890 189
IBAN = "FR7630006000011234567890189"
COUNTERPARTY_IBAN = "DE89370400440532013000"


def _amount(units: int) -> str:
    digits = f"{abs(units):014d}"
    signs = "}JKLMNOPQR" if units < 0 else "{ABCDEFGHI"
    return digits[:13] + signs[int(digits[13])]


def _header(kind: str, day: str, bank: str = BANK, guichet: str = GUICHET) -> str:
    code = "0001" if kind in ("04", "05") else "    "
    return f"{kind}{bank}{code}{guichet}EUR2 {ACCOUNT}  {day}"


def balance(kind: str, day: str, units: int, guichet: str = GUICHET) -> str:
    return (_header(kind, day, guichet=guichet).ljust(90) + _amount(units)).ljust(120)


def movement(
    day: str, units: int, label: str, reference: str = "", bank: str = BANK, guichet: str = GUICHET
) -> str:
    head = _header("04", day, bank, guichet) + "  " + day + label.ljust(31)[:31]
    return (head.ljust(90) + _amount(units) + reference.ljust(16)[:16]).ljust(120)


def complement(day: str, text: str, bank: str = BANK, guichet: str = GUICHET) -> str:
    return (_header("05", day, bank, guichet) + "     LIB" + text.ljust(70)[:70]).ljust(120)


def _crlf(records: list[str]) -> bytes:
    return "".join(r + "\r\n" for r in records).encode("latin-1")


def cfonb_files() -> dict[str, bytes]:
    opening = balance("01", "280225", 100_000)
    moves = [
        movement("030325", -2_550, "CB BOULANGERIE"),
        movement("030325", 12_000, "VIR SEPA RECU DE ALPHA", "REF12"),
    ]
    closing = balance("07", "030325", 100_000 - 2_550 + 12_000)
    # Trailing blanks trimmed: 01 and 07 to 104, a 04 without reference to 104, a 04
    # whose reference is 5 characters to 109, a 05 to its text.
    trimmed = [
        opening.rstrip(),
        moves[0].rstrip(),
        complement("030325", "TICKET 0042").rstrip(),
        moves[1].rstrip(),
        closing.rstrip(),
    ]
    assert [len(r) for r in trimmed] == [104, 104, 59, 109, 104]
    other_branch = [
        opening,
        movement("030325", -2_550, "CB BOULANGERIE", bank="30004", guichet="00825"),
        complement("030325", "TICKET 0042", bank="30004", guichet="00825"),
        moves[1],
        closing,
    ]
    mixture = [*other_branch]
    mixture[1] = mixture[1][:21] + "98765432100" + mixture[1][32:]
    return {
        "cfonb120-short-records.txt": _crlf(trimmed),
        "cfonb120-short-records-nobreaks.txt": "".join(
            [opening, moves[0], moves[1], closing.rstrip()]
        ).encode("latin-1"),
        "cfonb120-short-amount-cut.txt": _crlf([opening, moves[0][:100], moves[1], closing]),
        "cfonb120-short-nobreaks-balance-cut.txt": "".join([opening, *moves, closing[:95]]).encode(
            "latin-1"
        ),
        "cfonb120-04-05-other-branch.txt": _crlf(other_branch),
        "cfonb120-account-mixture.txt": _crlf(mixture),
        "cfonb120-07-other-branch.txt": _crlf(
            [opening, *moves, balance("07", "030325", 109_450, guichet="00002")]
        ),
    }


def _mt940_body(account: str, extra_line: str = "") -> str:
    return (
        ":20:STMT250303\n"
        f":25:{account}\n"
        ":28C:62/1\n"
        ":60F:C250228EUR1000,00\n"
        ":61:2503030303D25,50NTRFNONREF\n"
        f"{COUNTERPARTY_IBAN} DUPONT JEAN\n"
        f"{extra_line}"
        ":86:CB BOULANGERIE TICKET 0042\n"
        ":61:2503030303C120,00NTRFREF12//BQ0303000001\n"
        ":86:VIR SEPA RECU DE ALPHA\n"
        ":62F:C250303EUR1094,50\n"
    )


def mt940_files() -> dict[str, bytes]:
    swift = (
        "\x01{1:F01SOBKFRPPAXXX0000000000}{2:O9402000250303SOBKFRPPAXXX00000000002503032000N}"
        "{4:\r\n" + _mt940_body(IBAN).replace("\n", "\r\n") + "-}\x03"
    )
    lone_dash = (
        ":20:STMT250303\n"
        f":25:{IBAN}\n"
        ":28C:62/1\n"
        ":60F:C250228EUR1000,00\n"
        ":61:2503030303D25,50NTRFNONREF\n"
        ":86:CB BOULANGERIE\n"
        "-\n"
        ":61:2503030303C120,00NTRFREF12//BQ0303000001\n"
        ":86:VIR SEPA RECU DE ALPHA\n"
        ":62F:C250303EUR1094,50\n"
        "-\n"
    )
    return {
        "mt940-940-first-line.sta": (":940:\n" + _mt940_body(IBAN)).encode(),
        "mt940-soh-etx.sta": swift.encode(),
        "mt940-ing-header-iban-space-ccy.sta": (
            "0000 01INGBNL2AXXXX00001\n0000 01INGBNL2AXXXX00001\n940 00\n"
            + _mt940_body(f"{IBAN} EUR")
            + "-XXX\n"
        ).encode(),
        "mt940-abn-header-iban-glued-ccy.sta": (
            "ABNANL2A\n940\nABNANL2A\n" + _mt940_body(f"{IBAN}EUR") + "-\n"
        ).encode(),
        "mt940-25-bic-iban.sta": _mt940_body(f"BNPAFRPP/{IBAN}").encode(),
        "mt940-25-bic-account-ccy.sta": _mt940_body("OTPVHUHB/11773016-11111018/HUF").encode(),
        "mt940-61-counterparty-two-lines.sta": _mt940_body(
            IBAN, extra_line="CHEMIN DES VIGNES 12\n"
        ).encode(),
        "mt940-lone-dash-continuation.sta": lone_dash.encode(),
        "mt940-header-without-tags.txt": b"ABNANL2A\n940\nBonjour, voici le releve.\n",
    }


NS = "urn:iso:std:iso:20022:tech:xsd:camt.053.001.02"


def _camt(account: str, period: tuple[str, str], entries: str, closing: str) -> bytes:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="{NS}">
  <BkToCstmrStmt>
    <GrpHdr><MsgId>RULES-1</MsgId><CreDtTm>2025-03-05T06:00:00+01:00</CreDtTm></GrpHdr>
    <Stmt>
      <Id>STMT-1</Id>
      <CreDtTm>2025-03-05T06:00:00+01:00</CreDtTm>
      <FrToDt><FrDtTm>{period[0]}</FrDtTm><ToDtTm>{period[1]}</ToDtTm></FrToDt>
      <Acct>
        <Id>{account}</Id>
        <Ccy>EUR</Ccy>
      </Acct>
      <Bal>
        <Tp><CdOrPrtry><Cd>OPBD</Cd></CdOrPrtry></Tp>
        <Amt Ccy="EUR">1000.00</Amt><CdtDbtInd>CRDT</CdtDbtInd>
        <Dt><Dt>2025-03-03</Dt></Dt>
      </Bal>
      <Bal>
        <Tp><CdOrPrtry><Cd>CLBD</Cd></CdOrPrtry></Tp>
        <Amt Ccy="EUR">{closing}</Amt><CdtDbtInd>CRDT</CdtDbtInd>
        <Dt><Dt>2025-03-04</Dt></Dt>
      </Bal>
{entries}    </Stmt>
  </BkToCstmrStmt>
</Document>
""".encode()


def _entry(booked: str, amount: str, label: str) -> str:
    return f"""      <Ntry>
        <Amt Ccy="EUR">{amount}</Amt><CdtDbtInd>CRDT</CdtDbtInd><Sts>BOOK</Sts>
        <BookgDt>{booked}</BookgDt>
        <ValDt><Dt>2025-03-04</Dt></ValDt>
        <AcctSvcrRef>BQ0304000001</AcctSvcrRef>
        <AddtlNtryInf>{label}</AddtlNtryInf>
      </Ntry>
"""


def camt_files() -> dict[str, bytes]:
    iban = f"<IBAN>{IBAN}</IBAN>"
    late = _entry("<DtTm>2025-03-03T23:00:00Z</DtTm>", "120.00", "VIR SEPA RECU DE ALPHA")
    outside = _entry("<Dt>2025-03-06</Dt>", "120.00", "VIR SEPA RECU DE ALPHA")
    march_4 = ("2025-03-04T00:00:00+01:00", "2025-03-04T23:59:59+01:00")
    return {
        "camt053-booking-23h-utc.xml": _camt(iban, march_4, late, "1120.00"),
        "camt053-entry-outside-period.xml": _camt(iban, march_4, outside, "1120.00"),
        "camt053-othr-id-only.xml": _camt(
            "<Othr><Id>98765432100</Id></Othr>", march_4, late, "1120.00"
        ),
    }


def files() -> dict[str, bytes]:
    return {**cfonb_files(), **mt940_files(), **camt_files()}


def main(folder: Path) -> None:
    for name, data in files().items():
        (folder / name).write_bytes(data)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
