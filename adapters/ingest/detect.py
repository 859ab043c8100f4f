"""Tell a bank file's format from its first bytes, and parse it with the right parser.

Detection reads the content only: the file name never decides, because a mislabelled file
(``releve.txt`` holding camt.053 XML, an MT940 saved as ``.dat``) is common and would then
be parsed with the wrong parser. The name only appears in the refusal message, so the
operator knows which file it was. Detection does not parse XML either: it looks for the
camt.053 namespace in the bytes, and the camt.053 parser does the safety checks.

Rules, after skipping a UTF-8 byte-order mark and leading blank space:

* starts with ``<`` and mentions the ``urn:iso:std:iso:20022:tech:xsd:camt.053.``
  namespace: ``camt053``;
* ``mt940`` when, after SOH bytes (``\x01``, SWIFT link framing), the first line starts
  with ``:20:`` (bare MT940), ``{1:`` (SWIFT envelope) or is ``:940:`` (Rabobank), or when
  the first lines are bank headers followed by one of those: ``0000 01INGBNL2AXXXX00001``
  and ``940 00`` (ING), a BIC line such as ``ABNANL2A`` and ``940`` (ABN AMRO). At most
  ``_MAX_HEADER_LINES`` header lines are looked at, so a text file is not read whole;
* the first line starts with ``01`` followed by a 5-digit bank code: ``cfonb120``. The
  record's length is left to the parser, so a truncated first record is refused with its
  line rather than as an unknown format.
"""

from __future__ import annotations

import re
from typing import Literal

from adapters.ingest import camt053, cfonb120, mt940
from adapters.ingest.errors import UnknownFormat
from adapters.ingest.model import BANK_FORMATS, BankFormat, ParsedStatement

_CFONB_START = re.compile(rb"01[0-9]{5}")
_MT940_START = (b":20:", b"{1:", b":940:")
_MT940_HEADER = re.compile(
    rb"(?:0000 +[0-9]{2}[A-Z0-9]{8,}|940(?: +[0-9]+)?|[A-Z]{6}[A-Z0-9]{2}(?:[A-Z0-9]{3})?)"
)
_MAX_HEADER_LINES = 6
_PARSERS = {"cfonb120": cfonb120.parse, "camt053": camt053.parse, "mt940": mt940.parse}


def detect_format(data: bytes, filename: str | None = None) -> BankFormat:
    """The format of ``data``, or ``UnknownFormat`` saying what the bytes looked like."""
    named = f"{filename!r}: " if filename else ""
    body = data.removeprefix(b"\xef\xbb\xbf").lstrip(b" \t\r\n")
    if not body:
        raise UnknownFormat(f"{named}the file is empty")
    if body.startswith(b"<"):
        if camt053.CAMT053_NAMESPACE_PREFIX.encode() in body:
            return "camt053"
        raise UnknownFormat(
            f"{named}XML without the camt.053 namespace "
            f"({camt053.CAMT053_NAMESPACE_PREFIX}*): only camt.053 is accepted as XML"
        )
    if _is_mt940(body):
        return "mt940"
    if _CFONB_START.match(body):
        return "cfonb120"
    raise UnknownFormat(
        f"{named}not CFONB 120 (a first record starting with 01 and a 5-digit bank code), "
        "camt.053 (XML in the camt.053 namespace) nor MT940 (a first line starting with :20:, "
        "{1: or :940:, possibly after bank header lines such as 0000 01<BIC> or a BIC then "
        "940)"
    )


def _is_mt940(body: bytes) -> bool:
    """MT940 bytes: a tag or envelope first, possibly after a few bank header lines."""
    lines = body.lstrip(b"\x01")[:4096].splitlines()[: _MAX_HEADER_LINES + 1]
    for line in (ln.strip(b" \t\x01") for ln in lines):
        if not line:
            continue
        if line.startswith(_MT940_START):
            return True
        if not _MT940_HEADER.fullmatch(line):
            return False
    return False


def parse_file(
    data: bytes,
    fmt: BankFormat | Literal["auto"] = "auto",
    filename: str | None = None,
) -> list[ParsedStatement]:
    """Parse a bank file into its statements, detecting the format unless ``fmt`` names one.

    Raises a ``BankFileError`` (``UnknownFormat`` for an unknown ``fmt`` or undetectable
    bytes); never returns an empty list.
    """
    if fmt == "auto":
        fmt = detect_format(data, filename)
    if fmt not in BANK_FORMATS:
        raise UnknownFormat(f"unknown format {fmt!r}: expected auto or one of {BANK_FORMATS}")
    return _PARSERS[fmt](data)
