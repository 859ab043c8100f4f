"""No account number, IBAN or file content in any refusal of a bank file (issue 15, item 7).

Every refusal path of the three parsers and of detection is driven by a small file holding
an account number, an IBAN, a counterparty's IBAN and name, labels and references. For
each, the reason, the ``<name>.error.json`` document and every log line written through
the real ``configure_logging`` chain at DEBUG (our ``ingest.refused`` line and the mt-940
library's records routed through our logging) are scanned for: an unmasked IBAN, a run of
8 or more digits, and each account number, IBAN and name the file holds.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from adapters.ingest.dropfolder import error_document
from adapters.ingest.preview import preview_file
from adapters.ingest.producer import publish_file
from events.topics import Topics

from .conftest import Configure

BANK_FILES = Path(__file__).resolve().parents[3] / "examples" / "bank-files"
RULES = BANK_FILES / "rules"
IBAN = "FR7630006000011234567890189"
COUNTERPARTY = "DE89370400440532013000"
WORDS = ("DUPONT", "BOULANGERIE", "ALPHA", "TICKET", "VIGNES", "marechal", "KATWIJK", "DOE")

_IBAN_SHAPED = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}(?![A-Za-z0-9])")
_DIGIT_RUN = re.compile(r"[0-9]{8,}")


def _rule(name: str) -> bytes:
    return (RULES / name).read_bytes()


CF = _rule("cfonb120-04-05-other-branch.txt").decode("latin-1").split("\r\n")[:5]
MT = _rule("mt940-940-first-line.sta").decode()
CA = _rule("camt053-booking-23h-utc.xml").decode()


def _cf(records: list[str]) -> bytes:
    return "".join(r + "\r\n" for r in records).encode("latin-1")


def _set(record: str, first: int, value: str) -> str:
    return record[: first - 1] + value + record[first - 1 + len(value) :]


Mutation = Callable[[], bytes]

CASES: dict[str, Mutation] = {
    # CFONB 120
    "cfonb-long-line": lambda: _cf([CF[0], CF[1] + "XXXXX", *CF[2:]]),
    "cfonb-short-cut": lambda: _cf([CF[0], CF[1][:100], *CF[2:]]),
    "cfonb-bad-date": lambda: _cf([CF[0], _set(CF[1], 35, "319925"), *CF[2:]]),
    "cfonb-bad-value-date": lambda: _cf([CF[0], _set(CF[1], 43, "03 325"), *CF[2:]]),
    "cfonb-bad-amount": lambda: _cf([CF[0], _set(CF[1], 96, "Z"), *CF[2:]]),
    "cfonb-bad-rib": lambda: _cf([_set(CF[0], 22, "1234-678901"), *CF[1:]]),
    "cfonb-bad-bank-code": lambda: _cf([_set(CF[0], 3, "3O006"), *CF[1:]]),
    "cfonb-mixture": lambda: _cf([CF[0], _set(CF[1], 22, "98765432100"), *CF[2:]]),
    "cfonb-07-other-bank": lambda: _cf([*CF[:4], _set(CF[4], 3, "30004")]),
    "cfonb-currency-differs": lambda: _cf([CF[0], _set(CF[1], 17, "USD"), *CF[2:]]),
    "cfonb-currency-invalid": lambda: _cf([CF[0], _set(CF[1], 17, "E1R"), *CF[2:]]),
    "cfonb-decimals": lambda: _cf([CF[0], _set(CF[1], 20, "X"), *CF[2:]]),
    "cfonb-05-first": lambda: _cf([CF[0], CF[2], CF[1], *CF[3:]]),
    "cfonb-unknown-type": lambda: _cf([CF[0], "03" + CF[1][2:], *CF[2:]]),
    "cfonb-outside": lambda: _cf(CF[1:]),
    "cfonb-new-01": lambda: _cf([CF[0], CF[0], *CF[1:]]),
    "cfonb-no-07": lambda: _cf(CF[:4]),
    "cfonb-no-statement": lambda: b"\r\n\r\n",
    "cfonb-balance-mismatch": lambda: _cf([*CF[:4], _set(CF[4], 104, "A")]),
    "cfonb-sample-bad-rib": lambda: (BANK_FILES / "cfonb120-bad-rib.txt").read_bytes(),
    "cfonb-sample-mismatch": lambda: (BANK_FILES / "cfonb120-balance-mismatch.txt").read_bytes(),
    "cfonb-sample-truncated": lambda: (BANK_FILES / "cfonb120-truncated.txt").read_bytes(),
    # MT940
    "mt940-tag-outside": lambda: (f":25:{IBAN}\n" + MT).encode(),
    "mt940-lone-dash": lambda: _rule("mt940-lone-dash-continuation.sta"),
    "mt940-two-line-counterparty": lambda: _rule("mt940-61-counterparty-two-lines.sta"),
    "mt940-61-unreadable": lambda: MT.replace("D25,50", "X25,50").encode(),
    "mt940-no-opening": lambda: MT.replace(":60F:C250228EUR1000,00\n", "").encode(),
    "mt940-closing-currency": lambda: MT.replace(":62F:C250303EUR", ":62F:C250303USD").encode(),
    "mt940-25-account-ccy": lambda: _rule("mt940-25-bic-account-ccy.sta"),
    "mt940-25-bad-checksum": lambda: MT.replace(IBAN, IBAN[:-1] + "8").encode(),
    "mt940-25-two-ibans": lambda: MT.replace(f":25:{IBAN}", f":25:{IBAN}/{COUNTERPARTY}").encode(),
    "mt940-25-missing": lambda: MT.replace(f":25:{IBAN}\n", "").encode(),
    "mt940-balance-mismatch": lambda: MT.replace("EUR1094,50", "EUR1094,51").encode(),
    "mt940-no-statement": lambda: b":940:\n",
    "mt940-real-rabobank": lambda: (BANK_FILES / "real" / "rabobank-iban.sta").read_bytes(),
    "mt940-real-abnamro": lambda: (BANK_FILES / "real" / "abnamro.sta").read_bytes(),
    "mt940-real-sns": lambda: (BANK_FILES / "real" / "sns.sta").read_bytes(),
    "mt940-real-rabobank-bad-61": lambda: (
        (BANK_FILES / "real" / "rabobank-iban.sta")
        .read_bytes()
        .replace(b"NL71RABO0123456789", b"NL91ABNA0417164300")
        .replace(b"D000000000025,00N102", b"X000000000025,00N102")
    ),
    # camt.053
    "camt-othr-id": lambda: _rule("camt053-othr-id-only.xml"),
    "camt-outside-period": lambda: _rule("camt053-entry-outside-period.xml"),
    "camt-bad-iban": lambda: CA.replace(IBAN, IBAN[:-1] + "8").encode(),
    "camt-bad-balance": lambda: CA.replace(">1000.00<", ">1O00.00<").encode(),
    "camt-balance-mismatch": lambda: CA.replace(">1120.00<", ">1120.01<").encode(),
    "camt-no-indicator": lambda: CA.replace("<CdtDbtInd>CRDT</CdtDbtInd><Sts>", "<Sts>").encode(),
    "camt-bad-date": lambda: CA.replace("2025-03-03T23:00:00Z", "2025-13-03T23:00:00Z").encode(),
    "camt-no-closing": lambda: CA.replace("<Cd>CLBD</Cd>", "<Cd>XXXX</Cd>").encode(),
    "camt-not-well-formed": lambda: CA.replace("</AddtlNtryInf>", "").encode(),
    "camt-doctype": lambda: (BANK_FILES / "camt053-doctype.xml").read_bytes(),
    "camt-other-currency": lambda: CA.replace(
        '<Amt Ccy="EUR">120.00', '<Amt Ccy="USD">120.00'
    ).encode(),
    # detection
    "unknown-format": lambda: f"IBAN;{IBAN};12345678901;DUPONT JEAN\n".encode(),
    "unknown-xml": lambda: f'<?xml version="1.0"?><Doc><IBAN>{IBAN}</IBAN></Doc>'.encode(),
}


class _NeverSends:
    """A refused file sends nothing: any send fails the test."""

    async def send(self, topic: str, value: bytes, key: bytes) -> Any:
        raise AssertionError(f"a refused file sent a record to {topic}")


def _secrets(data: bytes) -> set[str]:
    text = data.decode("latin-1")
    found = set(_IBAN_SHAPED.findall(text)) | set(_DIGIT_RUN.findall(text))
    found |= {IBAN, COUNTERPARTY, "12345678901", "98765432100", "1234-678901", "11773016"}
    return found | {word for word in WORDS if word in text}


def _leaks(text: str, secrets: set[str]) -> list[str]:
    problems = [f"unmasked IBAN {m}" for m in _IBAN_SHAPED.findall(text)]
    problems += [f"digit run {m}" for m in _DIGIT_RUN.findall(text)]
    problems += [f"content {s!r}" for s in secrets if s in text]
    return problems


@pytest.mark.parametrize("case", sorted(CASES))
async def test_refusal_reason_error_json_and_log_lines_hold_no_account_or_content(
    case: str,
    tmp_path: Path,
    configured: Configure,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = CASES[case]()
    path = tmp_path / f"{case}.txt"
    path.write_bytes(data)
    configured("json")

    report = await publish_file(_NeverSends(), Topics(), path)
    preview = preview_file(data, filename=path.name)

    assert report.refusal is not None, f"{case} was not refused"
    assert preview.refusal is not None and preview.refusal.reason == report.refusal.reason
    document = error_document(report, tmp_path / "quarantine" / path.name)
    document.pop("sha256")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    assert any(line["event"] == "ingest.refused" for line in lines)
    for line in lines:
        line.pop("timestamp", None)
    secrets = _secrets(data)
    for where, text in (
        ("reason", report.refusal.reason),
        (".error.json", json.dumps(document, ensure_ascii=False)),
        ("log lines", json.dumps(lines, ensure_ascii=False)),
        ("dry run", json.dumps(preview.as_json(), ensure_ascii=False)),
    ):
        assert _leaks(text, secrets) == [], f"{case}: {where} leaks: {text}"


def test_the_cases_cover_every_refusal_code() -> None:
    """Every parser-side refusal code is reached by at least one case above."""
    codes = {preview_file(make(), filename=name).refusal for name, make in CASES.items()}
    assert None not in codes
    assert {c.code for c in codes if c is not None} == {
        "malformed_record",
        "invalid_account",
        "balance_mismatch",
        "unsafe_xml",
        "unknown_format",
    }


def test_mt940_library_records_reach_our_log_at_debug_without_their_values(
    configured: Configure, capsys: pytest.CaptureFixture[str]
) -> None:
    configured("json")
    preview_file(CASES["mt940-61-unreadable"](), filename="x.sta")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    library = [line for line in lines if line["event"] == "mt940.library"]
    assert library, "mt-940's records must come through our logging"
    assert {line["level"] for line in library} == {"debug"}
    assert {line["library_level"] for line in library} >= {"ERROR"}
    assert all(line.get("logger", "").startswith("mt940") is False for line in lines)
