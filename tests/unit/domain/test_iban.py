"""IBAN normalisation, validation (mod 97, RIB key) and masking."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routing.domain import iban as iban_module
from routing.domain.errors import InvalidIban
from routing.domain.iban import iban_from_rib, mask_iban, normalise_iban, rib_key
from tests.unit.domain.strategies import IBANS


def test_design_example_rib_gives_the_documented_iban() -> None:
    assert rib_key("30006", "00001", "12345678901") == "89"
    assert iban_from_rib("30006", "00001", "12345678901") == "FR7630006000011234567890189"


def test_normalisation_upper_cases_and_strips_spaces() -> None:
    assert normalise_iban(" fr76 3000 6000 0112 3456 7890 189 ") == "FR7630006000011234567890189"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("FR7630006000011234567890188", "Invalid checksum digits"),
        ("FR0630006000011234567890188", "Invalid national checksum"),  # mod 97 ok, RIB key wrong
        ("FR76300060000112345678901", "Invalid IBAN length"),
        ("", "IBAN is empty"),
        ("not an iban", "invalid"),
    ],
)
def test_invalid_ibans_are_refused_with_the_reason(raw: str, reason: str) -> None:
    with pytest.raises(InvalidIban, match=reason):
        normalise_iban(raw)


def test_foreign_ibans_are_checked_with_mod_97() -> None:
    assert normalise_iban("DE89 3704 0044 0532 0130 00") == "DE89370400440532013000"
    with pytest.raises(InvalidIban):
        normalise_iban("DE88370400440532013000")


def test_mask_keeps_country_check_digits_and_last_four() -> None:
    assert mask_iban("FR7630006000011234567890189") == "FR76 **** **** **** **** ***0 189"
    assert mask_iban("short") == "*****"


def test_invalid_iban_messages_never_show_the_whole_iban() -> None:
    with pytest.raises(InvalidIban) as refusal:
        normalise_iban("FR7630006000011234567890188")
    assert "30006000011234567890" not in refusal.value.message


def test_letters_in_the_account_number_map_to_digits() -> None:
    # A/J→1 … I/R→9, S→2 … Z→9: "0001234F501" reads as 00012346501.
    assert rib_key("10278", "06076", "0001234F501") == rib_key("10278", "06076", "00012346501")


ribs = st.tuples(
    st.text("0123456789", min_size=5, max_size=5),
    st.text("0123456789", min_size=5, max_size=5),
    st.text("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=11, max_size=11),
)


@given(ribs)
def test_any_french_rib_gives_a_valid_iban(rib: tuple[str, str, str]) -> None:
    iban = iban_from_rib(*rib)
    assert normalise_iban(iban) == iban
    assert iban.startswith("FR") and len(iban) == 27


@given(ribs, st.integers(min_value=4, max_value=26), st.integers(min_value=1, max_value=9))
def test_changing_one_digit_breaks_the_iban(
    rib: tuple[str, str, str], position: int, delta: int
) -> None:
    iban = iban_from_rib(*rib)
    char = iban[position]
    if not char.isdigit():
        return
    changed = iban[:position] + str((int(char) + delta) % 10) + iban[position + 1 :]
    with pytest.raises(InvalidIban):
        normalise_iban(changed)


def test_the_cache_keeps_valid_ibans_only_and_is_emptied_when_full(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(iban_module, "_NORMALISED", {})
    monkeypatch.setattr(iban_module, "_NORMALISED_LIMIT", 2)
    raw = " fr76 3000 6000 0112 3456 7890 189 "
    assert normalise_iban(raw) == normalise_iban(raw) == "FR7630006000011234567890189"
    assert {raw: "FR7630006000011234567890189"} == iban_module._NORMALISED
    for _ in range(2):  # a refusal is given again, not remembered
        with pytest.raises(InvalidIban):
            normalise_iban("FR7630006000011234567890188")
    assert "FR7630006000011234567890188" not in iban_module._NORMALISED
    for n in range(5):
        normalise_iban(iban_from_rib("30006", "00001", f"{n:011d}"))
        assert len(iban_module._NORMALISED) <= 2


def test_the_domain_strategies_sample_valid_ibans_only() -> None:
    """The generated states stand for real ones: an IBAN the router would refuse in them
    would make the tests built on them about a state that cannot exist."""
    assert [normalise_iban(iban) for iban in IBANS] == list(IBANS)
