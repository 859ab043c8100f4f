"""Records at, just over and far over the size rule, and the malformed ones of 0.9 MB."""

from __future__ import annotations

from events.limits import MAX_STATEMENT_BYTES
from routing.observability.metrics import REGISTRY

AT_LIMIT = b"L" * MAX_STATEMENT_BYTES
ONE_OVER = b"O" * (MAX_STATEMENT_BYTES + 1)
TWENTY_MB = 20_000_000


def not_json(size: int = 900_000) -> bytes:
    """A 0.9 MB value that is not JSON at all."""
    return b"x" * size


def hostile_schema(size: int = 900_000) -> bytes:
    """A 0.9 MB JSON object whose ``schema`` is a string of backslashes.

    Quoted whole in the reason (``repr`` doubles each backslash, JSON doubles it again),
    its invalid record would have been 1.8 MB: more than aiokafka's default 1 MiB
    ``max_request_size``, which made the consumers retry that batch for ever.
    """
    head, tail = b'{"schema":"', b'"}'
    return head + b"\\\\" * ((size - len(head) - len(tail)) // 2) + tail


MALFORMED = {"not-json": not_json, "hostile-schema": hostile_schema}


def parked(component: str, how: str) -> float:
    """``statement_router_parked_total{component, how}`` in this process."""
    value = REGISTRY.get_sample_value(
        "statement_router_parked_total", {"component": component, "how": how}
    )
    return value or 0.0


_CAMT_HEAD = b"""<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02">
  <BkToCstmrStmt>
    <GrpHdr><MsgId>LIMITS</MsgId><CreDtTm>2025-03-04T20:00:00+01:00</CreDtTm></GrpHdr>
    <Stmt>
      <Id>STMT-LIMITS</Id>
      <CreDtTm>2025-03-03T20:00:00+01:00</CreDtTm>
      <Acct><Id><IBAN>%s</IBAN></Id><Ccy>EUR</Ccy></Acct>
      <Bal><Tp><CdOrPrtry><Cd>OPBD</Cd></CdOrPrtry></Tp><Amt Ccy="EUR">100.00</Amt>
        <CdtDbtInd>CRDT</CdtDbtInd><Dt><Dt>2025-03-03</Dt></Dt></Bal>
      <Bal><Tp><CdOrPrtry><Cd>CLBD</Cd></CdOrPrtry></Tp><Amt Ccy="EUR">110.00</Amt>
        <CdtDbtInd>CRDT</CdtDbtInd><Dt><Dt>2025-03-03</Dt></Dt></Bal>
      <Ntry>
        <Amt Ccy="EUR">10.00</Amt><CdtDbtInd>CRDT</CdtDbtInd><Sts>BOOK</Sts>
        <BookgDt><Dt>2025-03-03</Dt></BookgDt><ValDt><Dt>2025-03-03</Dt></ValDt>
        <AddtlNtryInf>"""
_CAMT_TAIL = b"""</AddtlNtryInf>
      </Ntry>
    </Stmt>
  </BkToCstmrStmt>
</Document>
"""


def camt053_of_size(size: int, iban: str = "FR7630003036200002041234504") -> bytes:
    """A camt.053 file of exactly ``size`` bytes holding one statement, which is therefore
    ``size`` bytes itself (a one-``Stmt`` document is its own ``raw``): its one entry's
    label is padded."""
    head = _CAMT_HEAD % iban.encode()
    return head + b"P" * (size - len(head) - len(_CAMT_TAIL)) + _CAMT_TAIL
