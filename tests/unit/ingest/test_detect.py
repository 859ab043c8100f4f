"""Format detection, parse_file, and the checked-in samples matching their generator."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from adapters.ingest import (
    BalanceMismatch,
    BankFileError,
    InvalidAccount,
    MalformedRecord,
    UnknownFormat,
    UnsafeXml,
    detect_format,
    parse_file,
)

from .samples import SAMPLES, sample

GOOD = {
    "cfonb120-multi.txt": ("cfonb120", 6),
    "cfonb120-multi-nobreaks.txt": ("cfonb120", 6),
    "camt053-multi.xml": ("camt053", 3),
    "mt940-multi.sta": ("mt940", 2),
}
BROKEN: dict[str, tuple[str, type[BankFileError], int]] = {
    "cfonb120-bad-rib.txt": ("cfonb120", InvalidAccount, 1),
    "cfonb120-balance-mismatch.txt": ("cfonb120", BalanceMismatch, 6),
    "cfonb120-truncated.txt": ("cfonb120", MalformedRecord, 4),
    "camt053-doctype.xml": ("camt053", UnsafeXml, 2),
}


def test_the_checked_in_samples_are_what_the_generator_writes(tmp_path: Path) -> None:
    generator = runpy.run_path(str(SAMPLES / "generate.py"))
    written = generator["write_all"](tmp_path)
    assert sorted(p.name for p in written) == sorted([*GOOD, *BROKEN])
    for path in written:
        assert path.read_bytes() == sample(path.name), f"regenerate {path.name}"


@pytest.mark.parametrize(("name", "expected"), list(GOOD.items()))
def test_good_samples_are_detected_and_parsed(name: str, expected: tuple[str, int]) -> None:
    fmt, count = expected
    data = sample(name)
    assert detect_format(data, name) == fmt
    statements = parse_file(data, filename=name)
    assert len(statements) == count
    assert {s.format for s in statements} == {fmt}
    assert parse_file(data, fmt) == statements


@pytest.mark.parametrize(("name", "expected"), list(BROKEN.items()))
def test_broken_samples_are_detected_then_refused_on_their_line(
    name: str, expected: tuple[str, type[BankFileError], int]
) -> None:
    fmt, error, line = expected
    data = sample(name)
    assert detect_format(data) == fmt
    with pytest.raises(error) as caught:
        parse_file(data)
    assert caught.value.line == line
    assert str(caught.value).startswith(f"line {line}: ")


@pytest.mark.parametrize(
    ("data", "fmt"),
    [
        (b"\xef\xbb\xbf\r\n  " + sample("camt053-multi.xml"), "camt053"),
        (b"\n\n:20:REF\n:25:X\n", "mt940"),
        (b"{1:F01BANKFRPPAXXX0000000000}{2:O940}{4:\r\n:20:X", "mt940"),
        (b"\r\n0130006" + b" " * 113, "cfonb120"),
        (b"0130006 short", "cfonb120"),
    ],
)
def test_detection_skips_bom_and_blank_space(data: bytes, fmt: str) -> None:
    assert detect_format(data) == fmt


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "'x.dat': the file is empty"),
        (b" \r\n\t", "'x.dat': the file is empty"),
        (b'<?xml version="1.0"?><Document xmlns="urn:other"/>', "XML without the camt.053"),
        (b"date;amount\n01/03/2025;12.50\n", "nor MT940 (a first line starting with :20:"),
        (b"01ABCDE", "not CFONB 120 (a first record starting with 01 and a 5-digit bank"),
    ],
)
def test_unknown_bytes_are_refused_with_a_reason(data: bytes, message: str) -> None:
    with pytest.raises(UnknownFormat) as caught:
        detect_format(data, "x.dat")
    assert message in str(caught.value)
    assert caught.value.line is None


def test_the_file_name_never_overrides_the_content() -> None:
    assert detect_format(sample("mt940-multi.sta"), "statement.xml") == "mt940"


def test_an_explicit_format_is_used_as_given() -> None:
    with pytest.raises(BankFileError):
        parse_file(sample("mt940-multi.sta"), "cfonb120")
    with pytest.raises(UnknownFormat, match="unknown format 'ofx'"):
        parse_file(sample("mt940-multi.sta"), "ofx")  # type: ignore[arg-type]
