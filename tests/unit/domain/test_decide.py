"""decide() and diagnose(): the FAQ's routing rules and troubleshooting checklist."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime

import pytest
from hypothesis import given

from routing.domain.decide import CheckName, Destination, Verdict, decide, diagnose, run_checks
from routing.domain.model import IbanState, MandateStatus
from tests.unit.domain.strategies import iban_states

IBAN = "FR7630006000011234567890189"
CATALOGUE = frozenset({"acd", "quadra"})  # the strategies also draw "cegid": not configured


@dataclass(frozen=True)
class Stmt:
    iban: str


def state(**changes: object) -> IbanState:
    base = IbanState(
        iban=IBAN,
        cabinet_id="cab-a",
        client_ref="client-1",
        connector_id="acd",
        connector_on_cabinet=True,
        mandate_status=MandateStatus.APPROVED,
        version=3,
        updated_at=datetime(2026, 11, 27, tzinfo=UTC),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_bound_active_iban_goes_to_its_partner() -> None:
    decision = decide(Stmt(IBAN), state(), CATALOGUE)
    assert decision.destination is Destination.PARTNER
    assert decision.connector_id == "acd"
    assert decision.reason == "bound"
    assert decision.state_version == 3
    assert [c.ok for c in decision.checks] == [True, True, True, True]


def test_unbound_active_iban_goes_to_the_global_file() -> None:
    decision = decide(Stmt(IBAN), state(connector_id=None), CATALOGUE)
    assert decision.destination is Destination.GLOBAL_FILE
    assert decision.reason == "unbound"
    assert decision.connector_id is None


def test_unbound_iban_of_a_cabinet_without_connectors_goes_to_the_global_file() -> None:
    decision = decide(
        Stmt(IBAN), state(connector_id=None, connector_on_cabinet=False), CATALOGUE
    )
    assert decision.destination is Destination.GLOBAL_FILE


@pytest.mark.parametrize(
    "status", [MandateStatus.PENDING, MandateStatus.REJECTED, MandateStatus.REVOKED]
)
def test_inactive_iban_is_held(status: MandateStatus) -> None:
    for connector in ("acd", None):
        decision = decide(
            Stmt(IBAN), state(mandate_status=status, connector_id=connector), CATALOGUE
        )
        assert decision.destination is Destination.HELD
        assert decision.reason == f"mandate_{status.value}"


def test_unknown_iban_is_held() -> None:
    decision = decide(Stmt(IBAN), None, CATALOGUE)
    assert (decision.destination, decision.reason, decision.state_version) == (
        Destination.HELD,
        "unknown_iban",
        None,
    )


def test_bound_to_a_connector_the_cabinet_lost_is_held_not_sent_to_the_global_file() -> None:
    decision = decide(Stmt(IBAN), state(connector_on_cabinet=False), CATALOGUE)
    assert decision.destination is Destination.HELD
    assert decision.reason == "connector_not_on_cabinet"


def test_decide_refuses_the_state_of_another_iban() -> None:
    with pytest.raises(ValueError, match="another IBAN"):
        decide(Stmt("DE89370400440532013000"), state(), CATALOGUE)


def test_checks_follow_the_faq_order() -> None:
    names = [check.name for check in run_checks(state(), CATALOGUE)]
    assert names == [
        CheckName.CONNECTOR_ON_CABINET,
        CheckName.IBAN_BOUND,
        CheckName.MANDATE_APPROVED,
        CheckName.CONNECTOR_CONFIGURED,
    ]


@pytest.mark.parametrize(
    ("changes", "verdict"),
    [
        ({"connector_id": None, "connector_on_cabinet": False}, Verdict.ADD_CONNECTOR_TO_CABINET),
        ({"connector_id": None}, Verdict.BIND_IBAN),
        ({"mandate_status": MandateStatus.PENDING}, Verdict.APPROVE_MANDATE),
        ({"connector_id": "cegid"}, Verdict.CONNECTOR_NOT_CONFIGURED),
        ({}, Verdict.CONTACT_SUPPORT),
    ],
)
def test_diagnosis_names_the_first_failing_check(
    changes: dict[str, object], verdict: Verdict
) -> None:
    result = diagnose(state(**changes), CATALOGUE)
    assert result.verdict is verdict
    assert all(check.message_fr and check.message_en for check in result.checks)


def test_a_connector_missing_from_the_catalogue_holds_and_is_diagnosed_so() -> None:
    st = state(connector_id="cegid")
    decision = decide(Stmt(IBAN), st, CATALOGUE)
    assert decision.destination is Destination.HELD
    assert decision.reason == "connector_not_in_catalogue"
    result = diagnose(st, CATALOGUE)
    assert result.verdict is Verdict.CONNECTOR_NOT_CONFIGURED
    assert "not configured" in result.message_en
    assert [c.ok for c in result.checks] == [True, True, True, False]


def test_diagnosis_of_an_unknown_iban() -> None:
    assert diagnose(None, CATALOGUE).verdict is Verdict.UNKNOWN_IBAN


def test_messages_are_french_and_english() -> None:
    check = run_checks(state(mandate_status=MandateStatus.PENDING), CATALOGUE)[2]
    assert check.message_fr.startswith("Le mandat est en attente")
    assert check.message_en.startswith("The mandate is pending")


@given(iban_states)
def test_decide_and_diagnose_never_disagree(st: IbanState) -> None:
    decision = decide(Stmt(st.iban), st, CATALOGUE)
    verdict = diagnose(st, CATALOGUE).verdict
    # The statement reaches the production tool exactly when the checklist is all green.
    assert (decision.destination is Destination.PARTNER) == (verdict is Verdict.CONTACT_SUPPORT)
    # Both read the same checks.
    assert decision.checks == diagnose(st, CATALOGUE).checks
    if decision.destination is Destination.GLOBAL_FILE:
        assert not decision.checks[1].ok and decision.checks[2].ok
    if verdict is Verdict.APPROVE_MANDATE:
        assert decision.destination is Destination.HELD
    # A connector missing from the catalogue holds the statement, and the diagnosis says so.
    if decision.reason == "connector_not_in_catalogue":
        assert verdict is Verdict.CONNECTOR_NOT_CONFIGURED
    if verdict is Verdict.CONNECTOR_NOT_CONFIGURED:
        assert decision.destination is Destination.HELD
        assert st.connector_id is not None and st.connector_id not in CATALOGUE


@given(iban_states)
def test_a_bound_iban_is_never_routed_to_the_global_file(st: IbanState) -> None:
    if st.connector_id is not None:
        assert decide(Stmt(st.iban), st, CATALOGUE).destination is not Destination.GLOBAL_FILE


@given(iban_states)
def test_only_active_ibans_flow(st: IbanState) -> None:
    if st.mandate_status is not MandateStatus.APPROVED:
        assert decide(Stmt(st.iban), st, CATALOGUE).destination is Destination.HELD
