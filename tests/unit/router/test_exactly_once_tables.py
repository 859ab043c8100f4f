"""With exactly-once, local Table stores survive only a clean stop.

A RocksDB store may hold writes of a transaction that was aborted by a crash; the router
then rebuilds it from the committed changelog rather than trust it.
"""

from __future__ import annotations

from pathlib import Path

from routing.router.app import _forget_tables_after_crash, _mark_clean


def tables(tmp_path: Path) -> Path:
    tabledir = tmp_path / "router" / "v1" / "tables"
    (tabledir / "iban-state-0.db").mkdir(parents=True)
    (tabledir / "iban-state-0.db" / "CURRENT").write_text("x")
    return tabledir


def test_the_stores_of_a_crashed_router_are_wiped(tmp_path: Path) -> None:
    tabledir = tables(tmp_path)
    _forget_tables_after_crash(tabledir)
    assert not tabledir.exists()


def test_the_stores_of_a_clean_stop_are_kept_once(tmp_path: Path) -> None:
    tabledir = tables(tmp_path)
    _mark_clean(tabledir)
    _forget_tables_after_crash(tabledir)
    assert (tabledir / "iban-state-0.db" / "CURRENT").exists()
    # The mark is used up: a crash after this start wipes them.
    _forget_tables_after_crash(tabledir)
    assert not tabledir.exists()


def test_a_clean_mark_needs_no_existing_directory(tmp_path: Path) -> None:
    tabledir = tmp_path / "fresh" / "v1" / "tables"
    _mark_clean(tabledir)
    _forget_tables_after_crash(tabledir)
    assert not tabledir.exists()
