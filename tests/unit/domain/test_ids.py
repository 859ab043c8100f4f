"""The id rule for cabinet, connector and user ids (routing.domain.ids)."""

from __future__ import annotations

import pytest

from config.catalogue import ConnectorSpec
from routing.domain.errors import InvalidIdentifier
from routing.domain.ids import ID_RULE, ensure_valid_id, id_problem

ACCEPTED = ("cab-a", "cab_1", "acd", "0", "usr_" + "0" * 24, "a" * 64)
#: Traversal, separators, control characters, spaces, case, length, leading punctuation.
REFUSED = (
    "",
    ".",
    "..",
    "../x",
    "../../etc",
    "a/b",
    "/abs",
    "a\\b",
    "..\\x",
    "a..b",
    "a.b",
    "a\x00b",
    "a\nb",
    "a\rb",
    "tab\t",
    "a b",
    " cab",
    "Cab-A",
    "-x",
    "_x",
    "a" * 65,
    "cab%2f..",
    "é",
    "ｃａｂ",
)


@pytest.mark.parametrize("value", ACCEPTED)
def test_allowed_ids(value: str) -> None:
    assert ensure_valid_id("cabinet", value) == value
    assert id_problem("connector", value) is None


@pytest.mark.parametrize("value", REFUSED)
def test_refused_ids_say_why(value: str) -> None:
    with pytest.raises(InvalidIdentifier) as refused:
        ensure_valid_id("cabinet", value)
    assert refused.value.message == f"cabinet id {value!r} is not allowed: use {ID_RULE}"
    assert refused.value.code == "invalid_id"
    # The message never carries a raw control character (it quotes with repr).
    assert "\n" not in refused.value.message and "\x00" not in refused.value.message


@pytest.mark.parametrize("value", ["../x", "a/b", "ACD"])
def test_the_connector_catalogue_refuses_them(value: str) -> None:
    with pytest.raises(ValueError, match=r"connector id .* is not allowed"):
        ConnectorSpec(value, "X", "directory")
