"""Building the routed events from a ``Decision``: exactly one per statement (DESIGN §5).

Each function returns the records to produce, as :class:`Out` values; the caller sends
them. Nothing here does I/O, so the same code serves the faust agent, the batch pump, the
release of held statements and the unit tests.

The optional ``delivery.outcome/v1`` record ("routed" or "held", keyed by statement id) is
built here too. It costs a second produce per statement; docs/performance.md gives the
measured price and the router's ``emit_outcomes`` switch turns it off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from events.topics import Topics
from routing import metrics
from routing.domain.decide import Decision, Destination
from routing.domain.model import IbanState
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


# (id(destination), reason, id(checks)) -> (checks, destination name, checks as JSON).
_DECISION_TEXT: dict[tuple[int, str, int], tuple[Any, str, list[dict[str, Any]]]] = {}


def decision_text(decision: Decision) -> tuple[str, list[dict[str, Any]]]:
    """The destination's name and the checks as JSON objects, built once per kind.

    Reading an enum member's ``.value`` goes through a Python descriptor, and a trace
    needs four of them; per statement that was a tenth of the routing time. ``decide()``
    shares its ``checks`` tuple between decisions of the same kind (the checks are built
    once per combination), so a few entries cover every statement; the cached tuple is
    kept alive by the entry and compared by identity, so an id is never mistaken. The
    returned list is shared: callers serialise it and never change it.
    """
    checks = decision.checks
    key = (id(decision.destination), decision.reason, id(checks))
    cached = _DECISION_TEXT.get(key)
    if cached is None or cached[0] is not checks:
        if len(_DECISION_TEXT) >= 4096:  # only if checks stopped being shared
            _DECISION_TEXT.clear()
        cached = (
            checks,
            decision.destination.value,
            [{"name": c.name.value, "ok": c.ok} for c in checks],
        )
        _DECISION_TEXT[key] = cached
    return cached[1], cached[2]


def routing_trace(decision: Decision, decided_at: str) -> dict[str, Any]:
    """The ``RoutingTrace`` of a decision: where, why, which checks, which state version."""
    destination, checks = decision_text(decision)
    return {
        "destination": destination,
        "reason": decision.reason,
        "checks": checks,
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
    # Counted here, the one place every routed event is built whatever the caller (agent,
    # batch pump, release of held statements).
    metrics.count_routed(trace["destination"], decision.reason, decision.connector_id)
    if not outcomes:
        return [out]
    text = where if detail is None else f"{where} ({detail})"
    outcome = _outcome(
        topics.outcomes, fields, kind, decided_at, state, decision.connector_id, text, trace
    )
    return [out, outcome]
