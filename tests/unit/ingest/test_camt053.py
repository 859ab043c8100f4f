"""camt.053: the sample read exactly, one standalone raw document per Stmt, unsafe XML
refused before any parser sees it."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from adapters.ingest import camt053
from adapters.ingest.errors import BalanceMismatch, InvalidAccount, MalformedRecord, UnsafeXml
from adapters.ingest.model import Movement

from .samples import sample

IBAN_D = "FR7630003036200002041234504"
IBAN_E = "FR1420041010050500013M02606"
MON, TUE = date(2025, 3, 3), date(2025, 3, 4)
NS = "urn:iso:std:iso:20022:tech:xsd:camt.053.001.02"


def test_sample_gives_one_statement_per_stmt_read_exactly() -> None:
    statements = camt053.parse(sample("camt053-multi.xml"))

    assert [(s.iban, s.period_start, s.period_end, s.first_line) for s in statements] == [
        (IBAN_D, MON, MON, 8),
        (IBAN_D, TUE, TUE, 64),
        (IBAN_E, MON, MON, 98),
    ]
    assert [(s.opening_balance, s.closing_balance) for s in statements] == [
        (Decimal("8000.00"), Decimal("9160.60")),
        (Decimal("9160.60"), Decimal("7160.60")),
        (Decimal("-420.75"), Decimal("179.25")),
    ]
    assert {(s.format, s.currency) for s in statements} == {("camt053", "EUR")}
    # The batch entry gives one movement per transaction detail.
    assert statements[0].movements == (
        Movement(
            MON, MON, Decimal("1000.00"), "REMISE VIREMENTS SEPA FACTURE 2025-101", "BQ0303000001"
        ),
        Movement(
            MON, MON, Decimal("250.50"), "REMISE VIREMENTS SEPA FACTURE 2025-102", "BQ0303000001"
        ),
        Movement(MON, MON, Decimal("-89.90"), "PRLV SEPA ORANGE", "BQ0303000002"),
    )
    assert statements[1].movements == (
        Movement(
            TUE, TUE, Decimal("-2000.00"), "VIR SEPA EMIS /A FOURNISSEUR ÉLEC", "BQ0304000003"
        ),
    )
    # The pending entry is not booked, so it is not a movement (nor in the closing balance).
    assert statements[2].movements == (
        Movement(MON, MON, Decimal("600.00"), "VIR SEPA RECU /DE SAS BÉTA", "BQ0303000004"),
    )


def test_raw_is_prefix_plus_the_stmt_bytes_plus_suffix() -> None:
    data = sample("camt053-multi.xml")
    lines = data.splitlines(keepends=True)
    # Up to "<Stmt" (its indentation included); from just after "</Stmt>" to the end.
    prefix, suffix = b"".join(lines[:7]) + b"    ", b"\n  </BkToCstmrStmt>\n</Document>\n"
    statements = camt053.parse(data)

    def stmt(first: int, last: int) -> bytes:
        return b"".join(lines[first - 1 : last]).strip()

    assert [s.raw for s in statements] == [
        prefix + stmt(8, 63) + suffix,
        prefix + stmt(64, 97) + suffix,
        prefix + stmt(98, 141) + suffix,
    ]
    assert data.endswith(suffix)
    # Each raw is a camt.053 of its own that reads back to the same statement.
    for statement in statements:
        (again,) = camt053.parse(statement.raw)
        assert again.raw == statement.raw
        assert again.movements == statement.movements
        assert again.closing_balance == statement.closing_balance


def test_a_single_statement_document_is_its_own_raw() -> None:
    data = _document(ACCT + _balance("OPBD", "1.00") + _balance("CLBD", "1.00"))
    assert camt053.parse(data)[0].raw == data


def test_a_prefixed_camt_namespace_is_refused_clearly() -> None:
    data = _document(ACCT).replace(b"<Document xmlns=", b"<c:Document xmlns:c=")
    data = data.replace(b"</Document>", b"</c:Document>")
    with pytest.raises(MalformedRecord, match=r"namespace prefix \(c:Document\)"):
        camt053.parse(data)


def test_doctype_sample_is_refused_before_parsing() -> None:
    with pytest.raises(UnsafeXml) as caught:
        camt053.parse(sample("camt053-doctype.xml"))
    assert caught.value.line == 2
    assert str(caught.value).startswith("line 2: XML declares a DOCTYPE")


def _document(stmt_body: str, doctype: str = "", root_ns: str = NS) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"{doctype}"
        f'<Document xmlns="{root_ns}">\n'
        "<BkToCstmrStmt>\n"
        "<GrpHdr><MsgId>M1</MsgId><CreDtTm>2025-03-03T20:00:00</CreDtTm></GrpHdr>\n"
        f"<Stmt>\n{stmt_body}</Stmt>\n"
        "</BkToCstmrStmt>\n"
        "</Document>\n"
    ).encode()


def _balance(code: str, amount: str, sign: str = "CRDT", day: str = "2025-03-03") -> str:
    return (
        f"<Bal><Tp><CdOrPrtry><Cd>{code}</Cd></CdOrPrtry></Tp>"
        f'<Amt Ccy="EUR">{amount}</Amt><CdtDbtInd>{sign}</CdtDbtInd>'
        f"<Dt><Dt>{day}</Dt></Dt></Bal>\n"
    )


ACCT = f"<Acct><Id><IBAN>{IBAN_D}</IBAN></Id><Ccy>EUR</Ccy></Acct>\n"
ENTRY = (
    '<Ntry><Amt Ccy="EUR">12345678901234.56</Amt><CdtDbtInd>DBIT</CdtDbtInd><Sts>BOOK</Sts>'
    "<BookgDt><DtTm>2025-03-02T10:00:00+01:00</DtTm></BookgDt>"
    "<AddtlNtryInf>  CB   ENORME  </AddtlNtryInf></Ntry>\n"
)


def test_balances_are_exact_and_the_period_falls_back_to_the_booking_dates() -> None:
    body = (
        ACCT
        + _balance("PRCD", "12345678901234.56", day="2025-03-02")
        + _balance("CLBD", "0.00", day="2025-03-03")
        + ENTRY
    )
    (statement,) = camt053.parse(_document(body))
    assert statement.opening_balance == Decimal("12345678901234.56")
    assert statement.closing_balance == Decimal("0.00")
    assert statement.movements == (
        Movement(date(2025, 3, 2), None, Decimal("-12345678901234.56"), "CB ENORME", None),
    )
    assert (statement.period_start, statement.period_end) == (date(2025, 3, 2), MON)


def test_debit_balances_stay_exact_beyond_float_precision() -> None:
    body = (
        ACCT
        + _balance("OPBD", "98765432109876.54", "DBIT")
        + _balance("CLBD", "98765432109876.54", "DBIT")
    )
    (statement,) = camt053.parse(_document(body))
    assert statement.opening_balance == Decimal("-98765432109876.54")
    assert statement.movements == ()
    assert (statement.period_start, statement.period_end) == (MON, MON)


def test_balance_mismatch_names_the_closing_balance_line() -> None:
    body = ACCT + _balance("OPBD", "100.00") + _balance("CLBD", "100.01")
    with pytest.raises(BalanceMismatch) as caught:
        camt053.parse(_document(body))
    assert caught.value.line == 8
    assert "misses the closing balance by 0.01" in caught.value.reason
    assert "FR76 **** **** **** **** ***4 504" in caught.value.reason


def test_an_invalid_iban_is_refused_on_the_account_line() -> None:
    body = ACCT.replace(IBAN_D, IBAN_D[:-1] + "5") + _balance("OPBD", "1") + _balance("CLBD", "1")
    with pytest.raises(InvalidAccount) as caught:
        camt053.parse(_document(body))
    assert caught.value.line == 6


@pytest.mark.parametrize(
    ("body", "doctype", "ns", "error", "line", "message"),
    [
        (ACCT, "", NS, MalformedRecord, 5, "no OPBD or PRCD balance"),
        ("", "", NS, MalformedRecord, 5, "no IBAN"),
        (ACCT, "", "urn:example", MalformedRecord, 2, "not a camt.053 document"),
        (ACCT + "<Bal>", "", NS, MalformedRecord, 7, "not well-formed XML"),
        (ACCT, "<!doctype Document>\n", NS, UnsafeXml, 2, "DOCTYPE"),
        (ACCT, '<!DOCTYPE Document SYSTEM "http://example.org/x.dtd">\n', NS, UnsafeXml, 2, ""),
        (
            ACCT,
            '<!DOCTYPE lol [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]>\n',
            NS,
            UnsafeXml,
            2,
            "",
        ),
    ],
)
def test_refusals_name_the_line(
    body: str, doctype: str, ns: str, error: type[Exception], line: int, message: str
) -> None:
    with pytest.raises(error) as caught:
        camt053.parse(_document(body, doctype, ns))
    assert getattr(caught.value, "line", None) == line
    assert message in str(caught.value)


def test_the_expat_pass_refuses_a_doctype_the_byte_scan_did_not_see() -> None:
    data = _document(ACCT, "<!DOCTYPE Document>\n")
    with pytest.raises(UnsafeXml) as caught:
        camt053._scan(data)  # the second line of defence, on its own
    assert caught.value.line == 2


def test_non_ascii_compatible_encodings_are_refused() -> None:
    data = _document(ACCT).decode().replace("UTF-8", "UTF-16").encode("utf-16")
    with pytest.raises(MalformedRecord, match="ASCII-compatible"):
        camt053.parse(data)


def test_a_document_without_stmt_is_refused() -> None:
    data = _document(ACCT).replace(b"<Stmt>\n" + ACCT.encode() + b"</Stmt>\n", b"")
    with pytest.raises(MalformedRecord, match="holds no Stmt"):
        camt053.parse(data)
