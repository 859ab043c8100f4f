"""The drop folder's file handling, without a broker: names, moves and the .error.json."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.ingest.dropfolder import (
    ERROR_SCHEMA,
    error_document,
    error_path,
    is_candidate,
    move_to_done,
    quarantine,
    settle,
)
from adapters.ingest.producer import IngestReport, PublishedStatement, Refusal

AT = datetime(2025, 3, 5, 6, 30, tzinfo=UTC)


def report(path: Path, refusal: Refusal | None = None) -> IngestReport:
    return IngestReport(
        path=path,
        topic="sobank.statements.received",
        source=f"file:{path.name}",
        size=path.stat().st_size,
        sha256="0" * 64,
        received_at=AT,
        format="cfonb120",
        statements=()
        if refusal
        else (
            PublishedStatement("cfonb120-x", "FR7630006000011234567890189", AT.date(), AT.date()),
        ),
        refusal=refusal,
    )


REFUSAL = Refusal("malformed_record", "truncated record", 4, "cfonb120", AT)


@pytest.mark.parametrize(
    ("name", "taken"),
    [
        ("releve.txt", True),
        ("RELEVE.STA", True),
        ("camt.053.xml", True),
        (".releve.txt", False),
        ("releve.txt.part", False),
        ("releve.TMP", False),
        ("upload.part", False),
    ],
)
def test_which_names_are_taken(name: str, taken: bool) -> None:
    assert is_candidate(name) is taken


def test_quarantine_writes_the_error_beside_the_file_and_never_overwrites(tmp_path: Path) -> None:
    folder = tmp_path / "quarantine"
    moved = []
    for content in (b"first", b"second"):
        path = tmp_path / "releve.txt"
        path.write_bytes(content)
        moved.append(quarantine(path, report(path, REFUSAL), folder))
        assert not path.exists()

    assert [p.name for p in moved] == ["releve.txt", "releve.1.txt"]
    assert [p.read_bytes() for p in moved] == [b"first", b"second"]
    second = json.loads(error_path(moved[1]).read_text())
    assert second == {
        "schema": ERROR_SCHEMA,
        "file": "releve.txt",
        "quarantined_as": "releve.1.txt",
        "format": "cfonb120",
        "code": "malformed_record",
        "line": 4,
        "reason": "truncated record",
        "message": "line 4: truncated record",
        "size": 6,
        "sha256": "0" * 64,
        "source": "file:releve.txt",
        "detected_at": "2025-03-05T06:30:00+00:00",
        "detected_by": "ingest",
    }
    assert sorted(p.name for p in folder.iterdir()) == [
        "releve.1.txt",
        "releve.1.txt.error.json",
        "releve.txt",
        "releve.txt.error.json",
    ]


def test_settle_moves_by_outcome_or_leaves_the_file(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.sta", tmp_path / "bad.sta"
    good.write_bytes(b"good")
    bad.write_bytes(b"bad")

    assert settle(good, report(good), done=None, quarantined=tmp_path / "q") is None
    assert settle(bad, report(bad, REFUSAL), done=tmp_path / "d", quarantined=None) is None
    assert good.exists() and bad.exists()

    assert settle(good, report(good), done=tmp_path / "d", quarantined=tmp_path / "q") == (
        tmp_path / "d" / "good.sta"
    )
    assert settle(bad, report(bad, REFUSAL), done=tmp_path / "d", quarantined=tmp_path / "q") == (
        tmp_path / "q" / "bad.sta"
    )
    assert move_to_done(tmp_path / "d" / "good.sta", tmp_path / "d2").name == "good.sta"


def test_a_published_file_has_no_error_document(tmp_path: Path) -> None:
    path = tmp_path / "good.sta"
    path.write_bytes(b"good")
    with pytest.raises(ValueError, match="was not refused"):
        error_document(report(path))
