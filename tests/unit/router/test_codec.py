"""The IBAN state as the router's Table keeps it: written and read back, the same snapshot."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from events.schemas import IbanStateEvent
from routing.domain.model import IbanState
from routing.router.codec import state_from_table, state_to_table
from tests.unit.domain.strategies import iban_states
from tests.unit.router.factories import IBAN_A, IBAN_B

valid_iban_states = st.builds(
    lambda state, iban: replace(state, iban=iban), iban_states, st.sampled_from([IBAN_A, IBAN_B])
)


@given(valid_iban_states)
def test_a_state_read_back_from_the_table_is_the_snapshot_written(state: IbanState) -> None:
    value = state_to_table(IbanStateEvent.from_domain(state))
    assert "iban" not in value  # the Table's key
    assert state_from_table(state.iban, value) == state
