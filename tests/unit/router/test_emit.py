"""The routing trace: its checks are those of the decision it is built from, whichever
decisions came before (the checks' documents are cached by the checks tuple's identity)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from routing.domain.decide import Decision, decide
from routing.domain.model import IbanState, MandateStatus
from routing.router import emit
from routing.router.emit import routing_trace
from tests.unit.router.factories import IBAN_A


class _Ref:
    iban = IBAN_A


def state(**changes: object) -> IbanState:
    fields: dict = {
        "iban": IBAN_A,
        "cabinet_id": "cab-1",
        "client_ref": None,
        "connector_id": "acd",
        "connector_on_cabinet": True,
        "mandate_status": MandateStatus.APPROVED,
        "version": 1,
        "updated_at": datetime(2026, 12, 5, tzinfo=UTC),
    }
    return IbanState(**{**fields, **changes})


def with_new_checks_tuple(decision: Decision) -> Decision:
    """The same decision, its checks in a tuple made anew (equal, not the same object)."""
    return replace(decision, checks=tuple(list(decision.checks)))


def expected(decision: Decision) -> list[dict]:
    return [{"name": c.name, "ok": c.ok} for c in decision.checks]


def test_each_trace_has_its_own_decisions_checks() -> None:
    decisions = [
        decide(_Ref(), state(), {"acd"}),
        decide(_Ref(), state(connector_id=None), {"acd"}),
        decide(_Ref(), state(mandate_status=MandateStatus.PENDING), {"acd"}),
        decide(_Ref(), state(connector_on_cabinet=False), {"acd"}),
        decide(_Ref(), state(), set()),  # not in the catalogue
    ]
    assert len({id(d.checks) for d in decisions}) == len(decisions)
    for _ in range(3):  # built, then from the cache
        for decision in decisions:
            assert routing_trace(decision, "now")["checks"] == expected(decision)


def test_an_equal_tuple_of_checks_made_anew_gives_the_same_document() -> None:
    decision = decide(_Ref(), state(), {"acd"})
    copy = with_new_checks_tuple(decision)
    assert copy.checks is not decision.checks
    assert routing_trace(copy, "now")["checks"] == routing_trace(decision, "now")["checks"]


def test_the_cache_of_documents_stays_bounded() -> None:
    decision = decide(_Ref(), state(), {"acd"})
    for _ in range(5_000):
        fresh = with_new_checks_tuple(decision)
        assert routing_trace(fresh, "now")["checks"] == expected(decision)
    assert len(emit._CHECKS_DOCUMENTS) <= 4_096
