"""Deterministic, safe and injective file names for the file-drop adapters."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.delivery.naming import (
    file_stem,
    files_for,
    is_temporary_name,
    sidecar_file_name,
    statement_file_name,
    temporary_name,
)
from tests.unit.delivery.factories import SAMPLE_CONTENT, make_delivery

# What StatementId accepts (events.schemas).
statement_ids = st.from_regex(r"[A-Za-z0-9._:\-]{1,200}", fullmatch=True)
PORTABLE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@pytest.mark.parametrize(
    ("fmt", "name"),
    [("cfonb120", "stmt-1.txt"), ("camt053", "stmt-1.xml"), ("mt940", "stmt-1.sta")],
)
def test_the_extension_follows_the_format(fmt: str, name: str) -> None:
    assert statement_file_name("stmt-1", fmt) == name  # type: ignore[arg-type]


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
    name = statement_file_name(statement_id, "camt053")

    assert PORTABLE.fullmatch(name)
    assert len(temporary_name(sidecar_file_name(name)).encode()) <= 255
    assert name == statement_file_name(statement_id, "camt053")


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
    [file] = files_for(make_delivery("s1", fmt="camt053"), sidecar=False)

    assert (file.name, file.content) == ("s1.xml", SAMPLE_CONTENT["camt053"])


def test_the_sidecar_comes_first_and_holds_no_content() -> None:
    sidecar, statement = files_for(make_delivery("s1"), sidecar=True)

    assert (sidecar.name, statement.name) == ("s1.txt.json", "s1.txt")
    metadata = json.loads(sidecar.content)
    assert "content_b64" not in metadata
    assert metadata["schema"] == "statement.partner-delivery/v1"
    assert metadata["file_name"] == "s1.txt"
    assert metadata["routing"]["reason"] == "bound"
