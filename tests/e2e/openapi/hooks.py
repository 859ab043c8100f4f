"""Schemathesis hooks for the conformance run (loaded through ``SCHEMATHESIS_HOOKS``).

Two facts of the schema that JSON Schema cannot carry, taught to the generator:

* ``format: iban``: the mod-97 check digits and the national check (the French RIB key).
  Positive IBANs are drawn from real ones: those of the seeded cabinet (so the routes
  answer 200), one of another cabinet and unknown ones (404). Negative ones still come
  from the pattern, which the server enforces as declared.
* the global file's ``from`` ≤ ``to`` (described on both parameters): two dates drawn in
  the wrong order are put in order, so a valid period is what a positive case sends.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import schemathesis
from hypothesis import strategies as st

from routing.domain.iban import iban_from_rib

#: The seeded cabinet's IBANs (the schema's example first), another cabinet's, unknown ones.
OWN_IBANS = ("FR7630006000011234567890189", iban_from_rib("30006", "00001", "00000000001"))
OTHER_CABINET_IBAN = iban_from_rib("30006", "00001", "00000000003")
UNKNOWN_IBANS = (
    iban_from_rib("30004", "00825", "00012345678"),
    "DE89370400440532013000",
    "GB82WEST12345698765432",
)

schemathesis.openapi.format(
    "iban", st.sampled_from([*OWN_IBANS, OTHER_CABINET_IBAN, *UNKNOWN_IBANS])
)


def _day(value: Any) -> date | None:
    try:
        return date.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


@schemathesis.hook
def map_query(context: Any, query: dict[str, Any] | None) -> dict[str, Any] | None:
    if not query or context.operation is None:
        return query
    if not context.operation.path.endswith("/global-file"):
        return query
    first, last = _day(query.get("from")), _day(query.get("to"))
    if first is not None and last is not None and first > last:
        return {**query, "from": query["to"], "to": query["from"]}
    return query
