"""Messages about IBANs say what is wrong without showing the IBAN, nor hiding the mistake."""

from __future__ import annotations

import pytest

from routing.domain.errors import InvalidIban
from routing.domain.iban import key_difference, mask_iban, normalise_iban

IBAN = "FR7630006000011234567890189"


def test_a_key_that_is_the_iban_in_another_form_says_so() -> None:
    key = "fr76 3000 6000 0112 3456 7890 189"
    assert mask_iban(key.upper().replace(" ", "")) == mask_iban(IBAN)  # the masks alone agree
    assert key_difference(key, IBAN) == (
        "the key has spaces and the key has lower case: it is this IBAN, not normalised"
    )


def test_another_iban_of_the_same_length_names_the_positions_that_differ() -> None:
    other = "FR7630006000011234567890190"
    assert key_difference(other, IBAN) == "they differ at character 26, 27 of 27"


def test_a_key_of_another_length_says_so() -> None:
    assert key_difference("FR76", IBAN) == "the key has 4 characters, the IBAN 27"


@pytest.mark.parametrize(
    "raw", ["hello", "FR76 3000 6000 0112 3456 7890 18X", "fr7630006000011234567890188"]
)
def test_an_invalid_iban_is_never_echoed_in_clear(raw: str) -> None:
    with pytest.raises(InvalidIban) as refused:
        normalise_iban(raw)
    message = refused.value.message
    compact = "".join(raw.split())
    assert compact not in message and compact.upper() not in message and raw not in message
    assert message.startswith("IBAN ") and " is invalid: " in message
