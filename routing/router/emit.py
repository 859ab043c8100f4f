"""Building the routed events from a ``Decision``: exactly one per statement (DESIGN §5).

Each function returns the records to produce, as :class:`Out` values; the caller sends
them. Nothing here does I/O, so the same code serves the batch pump, the
release of held statements and the unit tests.

The router writes no ``delivery.outcome/v1`` of its own: the delivery ledger derives its
"routed" and "held" entries from these events (``routing.services.ledger``), which carry
everything it needs (the routing trace, the cabinet, the connector, whether a statement is
released from held). A second record per statement cost about a quarter of the router's
throughput (docs/performance.md).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from events.topics import Topics
from routing.domain.decide import Check, Decision, Destination
from routing.domain.model import IbanState
from routing.observability import metrics
from routing.router.codec import (
    GLOBAL_FILE_SCHEMA,
    HELD_SCHEMA,
    PARTNER_SCHEMA,
    dumps,
)


class Out(NamedTuple):
    """One record to produce.

    A named tuple, not a frozen dataclass: one or two are made per statement, and a frozen
    dataclass's ``__init__`` sets each field through ``object.__setattr__`` (about twice
    the cost).
    """

    topic: str
    key: bytes
    value: bytes | None
    partition: int | None = None  # None: the producer's partitioner (murmur2 of the key)


_CHECKS_DOCUMENTS: dict[int, tuple[tuple[Check, ...], list[dict[str, Any]]]] = {}


def _checks_document(checks: tuple[Check, ...]) -> list[dict[str, Any]]:
    """The trace's ``checks`` for a tuple of checks, built once per tuple.

    ``decide()`` builds each combination of checks once (``run_checks``), so a few tuples
    serve every statement. Keyed by identity, which is cheaper than hashing the checks; the
    tuple is kept in the entry, so its id cannot be reused while the entry exists. The
    list is only ever encoded, never changed.
    """
    entry = _CHECKS_DOCUMENTS.get(id(checks))
    if entry is not None and entry[0] is checks:
        return entry[1]
    document = [{"name": check.name, "ok": check.ok} for check in checks]
    if len(_CHECKS_DOCUMENTS) >= 4_096:
        _CHECKS_DOCUMENTS.clear()
    _CHECKS_DOCUMENTS[id(checks)] = (checks, document)
    return document


def routing_trace(decision: Decision, decided_at: str) -> dict[str, Any]:
    """The ``RoutingTrace`` of a decision: where, why, which checks, which state version.

    ``Destination`` and ``CheckName`` are ``StrEnum``s, i.e. strings already: they go into
    the document as they are (reading ``.value`` goes through a Python descriptor, which
    cost a tenth of the routing time).
    """
    return {
        "destination": decision.destination,
        "reason": decision.reason,
        "checks": _checks_document(decision.checks),
        "state_version": decision.state_version,
        "decided_at": decided_at,
    }


def build_routed(
    fields: dict[str, Any],
    decision: Decision,
    state: IbanState | None,
    topics: Topics,
    decided_at: str,
    *,
    released: bool = False,
) -> list[Out]:
    """The routed event for one statement (one record, as a list for the callers' loops).

    ``fields`` are the statement's contract fields (``codec.statement_fields``). A partner
    or global-file decision needs ``state`` (it carries the cabinet); decide() only returns
    those with a state, so a missing one is a programming error and raises. ``released``:
    the statement comes out of the held Table, which the event says
    (``released_from_held``) so that the ledger's trace can say it too.
    """
    trace = routing_trace(decision, decided_at)
    iban = fields["iban"]
    doc: dict[str, Any]
    if decision.destination is Destination.PARTNER:
        assert state is not None and decision.connector_id is not None
        doc = {
            "schema": PARTNER_SCHEMA,
            **fields,
            "routing": trace,
            "connector_id": decision.connector_id,
            "cabinet_id": state.cabinet_id,
            "client_ref": state.client_ref,
        }
        if released:
            doc["released_from_held"] = True
        out = Out(topics.partner(decision.connector_id), iban.encode(), dumps(doc))
    elif decision.destination is Destination.GLOBAL_FILE:
        assert state is not None
        doc = {
            "schema": GLOBAL_FILE_SCHEMA,
            **fields,
            "routing": trace,
            "cabinet_id": state.cabinet_id,
            "client_ref": state.client_ref,
        }
        if released:
            doc["released_from_held"] = True
        out = Out(topics.global_file, state.cabinet_id.encode(), dumps(doc))
    else:
        doc = {
            "schema": HELD_SCHEMA,
            **fields,
            "routing": trace,
            "cabinet_id": state.cabinet_id if state is not None else None,
        }
        if decision.connector_id is not None:
            doc["connector_id"] = decision.connector_id
        out = Out(topics.held, iban.encode(), dumps(doc))
    # Counted here, the one place every routed event is built whatever the caller (batch
    # pump, release of held statements).
    metrics.count_routed(decision.destination, decision.reason, decision.connector_id)
    return [out]
