"""Building the routed events from a ``Decision``: exactly one per statement (DESIGN §5).

Each function returns the records to produce, as :class:`Out` values; the caller sends
them. Nothing here does I/O, so the same code serves the batch pump, the
release of held statements and the unit tests.

The optional ``delivery.outcome/v1`` record ("routed" or "held", keyed by statement id) is
built here too. It costs a second produce per statement; docs/performance.md gives the
measured price and the router's ``emit_outcomes`` switch turns it off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from events.topics import Topics
from routing.domain.decide import Decision, Destination
from routing.domain.model import IbanState
from routing.observability import metrics
from routing.router.codec import (
    GLOBAL_FILE_SCHEMA,
    HELD_SCHEMA,
    OUTCOME_SCHEMA,
    PARTNER_SCHEMA,
    dumps,
)


@dataclass(frozen=True, slots=True)
class Out:
    """One record to produce."""

    topic: str
    key: bytes
    value: bytes | None
    partition: int | None = None  # None: the producer's partitioner (murmur2 of the key)
    # False for a key that is seen once (a statement id): its hash is not cached, so it
    # neither pays for the cache nor pushes out the IBANs and cabinets that do repeat.
    key_repeats: bool = True


def routing_trace(decision: Decision, decided_at: str) -> dict[str, Any]:
    """The ``RoutingTrace`` of a decision: where, why, which checks, which state version.

    ``Destination`` and ``CheckName`` are ``StrEnum``s, i.e. strings already: they go into
    the document as they are (reading ``.value`` goes through a Python descriptor, which
    cost a tenth of the routing time).
    """
    return {
        "destination": decision.destination,
        "reason": decision.reason,
        "checks": [{"name": c.name, "ok": c.ok} for c in decision.checks],
        "state_version": decision.state_version,
        "decided_at": decided_at,
    }


def _outcome(
    topic: str,
    fields: dict[str, Any],
    kind: str,
    at: str,
    state: IbanState | None,
    connector_id: str | None,
    detail: str,
    trace: dict[str, Any],
) -> Out:
    doc = {
        "schema": OUTCOME_SCHEMA,
        "statement_id": fields["statement_id"],
        "outcome": kind,
        "at": at,
        "iban": fields["iban"],
        "cabinet_id": state.cabinet_id if state is not None else None,
        "connector_id": connector_id,
        "attempt": None,
        "detail": detail,
        "routing": trace,
        "content_sha256": fields["content_sha256"],
    }
    return Out(topic, fields["statement_id"].encode(), dumps(doc), key_repeats=False)


def build_routed(
    fields: dict[str, Any],
    decision: Decision,
    state: IbanState | None,
    topics: Topics,
    decided_at: str,
    *,
    outcomes: bool,
    detail: str | None = None,
) -> list[Out]:
    """The routed event for one statement (plus its outcome record when ``outcomes``).

    ``fields`` are the statement's contract fields (``codec.statement_fields``). A partner
    or global-file decision needs ``state`` (it carries the cabinet); decide() only returns
    those with a state, so a missing one is a programming error and raises.
    """
    trace = routing_trace(decision, decided_at)
    iban = fields["iban"]
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
        out = Out(topics.partner(decision.connector_id), iban.encode(), dumps(doc))
        kind, where = "routed", f"partner:{decision.connector_id}"
    elif decision.destination is Destination.GLOBAL_FILE:
        assert state is not None
        doc = {
            "schema": GLOBAL_FILE_SCHEMA,
            **fields,
            "routing": trace,
            "cabinet_id": state.cabinet_id,
            "client_ref": state.client_ref,
        }
        out = Out(topics.global_file, state.cabinet_id.encode(), dumps(doc))
        kind, where = "routed", "global-file"
    else:
        doc = {
            "schema": HELD_SCHEMA,
            **fields,
            "routing": trace,
            "cabinet_id": state.cabinet_id if state is not None else None,
        }
        out = Out(topics.held, iban.encode(), dumps(doc))
        kind, where = "held", f"held:{decision.reason}"
    # Counted here, the one place every routed event is built whatever the caller (batch
    # pump, release of held statements).
    metrics.count_routed(decision.destination, decision.reason, decision.connector_id)
    if not outcomes:
        return [out]
    text = where if detail is None else f"{where} ({detail})"
    outcome = _outcome(
        topics.outcomes, fields, kind, decided_at, state, decision.connector_id, text, trace
    )
    return [out, outcome]
