"""Deterministic, safe and injective file names for the file-drop adapters."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.delivery.naming import (
    delivery_file_name,
    file_stem,
    files_for,
    is_temporary_name,
    sidecar_file_name,
    statement_file_name,
    temporary_name,
)
from routing.domain.identity import statement_key
from tests.unit.delivery.factories import IBAN, OTHER_IBAN, SAMPLE_CONTENT, make_delivery

# What StatementId accepts (events.schemas).
statement_ids = st.from_regex(r"[A-Za-z0-9._:\-]{1,200}", fullmatch=True)
PORTABLE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
KEY = "0123456789abcdef"


@pytest.mark.parametrize(
    ("fmt", "name"),
    [
        ("cfonb120", f"stmt-1.{KEY}.txt"),
        ("camt053", f"stmt-1.{KEY}.xml"),
        ("mt940", f"stmt-1.{KEY}.sta"),
    ],
)
def test_the_extension_follows_the_format(fmt: str, name: str) -> None:
    assert statement_file_name("stmt-1", KEY, fmt) == name  # type: ignore[arg-type]


def test_the_name_is_the_id_then_the_statement_key() -> None:
    delivery = make_delivery("stmt-1")
    key = statement_key(IBAN, "stmt-1", delivery.content_sha256)

    assert delivery_file_name(delivery) == f"stmt-1.{key}.txt"
    assert delivery_file_name(make_delivery("stmt-1")) == delivery_file_name(delivery)


def test_two_statements_sharing_an_id_get_two_names() -> None:
    """Two feeds both sending stmt-2 (two accounts), or one re-using it for other content,
    must never write one file over the other."""
    first = make_delivery("stmt-2")
    other_account = make_delivery("stmt-2", iban=OTHER_IBAN)
    other_content = make_delivery("stmt-2", content=b"another statement\r\n")

    names = {delivery_file_name(d) for d in (first, other_account, other_content)}
    assert len(names) == 3
    assert all(name.startswith("stmt-2.") and name.endswith(".txt") for name in names)


@pytest.mark.parametrize("statement_id", ["stmt-0001", "BNP.2026-01-02.42", "a_b", "X"])
def test_safe_ids_are_kept_as_they_are(statement_id: str) -> None:
    assert file_stem(statement_id) == statement_id


@pytest.mark.parametrize(
    "statement_id", ["bank:2026:42", ".hidden", "..", "-rf", "CON", "nul.2026", "a" * 150]
)
def test_unsafe_ids_are_cleaned_and_hashed(statement_id: str) -> None:
    stem = file_stem(statement_id)

    assert PORTABLE.fullmatch(stem)
    assert re.search(r"-[0-9a-f]{16}$", stem)
    assert file_stem(statement_id) == stem  # deterministic


def test_cleaning_never_makes_two_ids_share_a_name() -> None:
    assert file_stem("a:b") != file_stem("a_b")
    assert file_stem("a:b") != file_stem("a::b")


@given(statement_ids)
def test_every_valid_id_gives_a_portable_bounded_name(statement_id: str) -> None:
    name = statement_file_name(statement_id, KEY, "camt053")

    assert PORTABLE.fullmatch(name)
    assert len(temporary_name(sidecar_file_name(name)).encode()) <= 255
    assert name == statement_file_name(statement_id, KEY, "camt053")


@given(st.lists(statement_ids, min_size=2, max_size=20, unique=True))
def test_distinct_ids_give_distinct_names(ids: list[str]) -> None:
    assert len({file_stem(i) for i in ids}) == len(ids)


def test_temporary_names_are_hidden_unique_and_recognisable() -> None:
    first, second = temporary_name("stmt-1.txt"), temporary_name("stmt-1.txt")

    assert first != second
    assert first.startswith(".stmt-1.txt.") and first.endswith(".part")
    assert is_temporary_name(first)
    assert not is_temporary_name("stmt-1.txt")


def test_a_delivery_writes_the_raw_statement_file() -> None:
    delivery = make_delivery("s1", fmt="camt053")
    [file] = files_for(delivery, sidecar=False)

    key = statement_key(IBAN, "s1", delivery.content_sha256)
    assert (file.name, file.content) == (f"s1.{key}.xml", SAMPLE_CONTENT["camt053"])


def test_the_sidecar_comes_first_and_holds_no_content() -> None:
    delivery = make_delivery("s1")
    sidecar, statement = files_for(delivery, sidecar=True)

    name = f"s1.{statement_key(IBAN, 's1', delivery.content_sha256)}.txt"
    assert (sidecar.name, statement.name) == (f"{name}.json", name)
    metadata = json.loads(sidecar.content)
    assert "content_b64" not in metadata
    assert metadata["schema"] == "statement.partner-delivery/v1"
    assert metadata["file_name"] == name
    assert metadata["routing"]["reason"] == "bound"
