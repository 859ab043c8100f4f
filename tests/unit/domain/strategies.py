"""Hypothesis strategies for the domain."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import strategies as st

from routing.domain.model import IbanState, MandateStatus

IBANS = ("FR7630006000011234567890189", "DE89370400440532013000", "FR7630004008250001234567886")

iban_states = st.builds(
    IbanState,
    iban=st.sampled_from(IBANS),
    cabinet_id=st.sampled_from(["cab-a", "cab-b"]),
    client_ref=st.none() | st.text(min_size=1, max_size=8),
    connector_id=st.none() | st.sampled_from(["acd", "cegid", "quadra"]),
    connector_on_cabinet=st.booleans(),
    mandate_status=st.sampled_from(list(MandateStatus)),
    version=st.integers(min_value=0, max_value=10**9),
    updated_at=st.just(datetime(2026, 11, 27, tzinfo=UTC)),
)
