"""Restarting ``statement-router up`` (embedded broker) loses nothing, or says what it lost."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Mapping
from pathlib import Path

import pytest

from routing.broker import read_topic
from routing.demo.seed import BOUND_MT940, UNKNOWN
from routing.domain.iban import mask_iban
from tests.e2e.up_process import UpProcess, cli, ok, up_environment
from tests.eventually import eventually

SAMPLES = Path(__file__).resolve().parents[2] / "examples" / "bank-files"
PENDING_CAMT = "FR7630003036200002041234504"  # camt053-multi.xml: 2 statements
HELD = "sobank.statements.held"
TO_ACD = "sobank.statements.partner.acd"

pytestmark = pytest.mark.timeout(420)


def register(env: Mapping[str, str], iban: str, token: str) -> None:
    ok(cli(env, "iban", "add", iban, "--cabinet", "cab-r"))
    ok(cli(env, "iban", "bind", iban, "acd", "--token", token))
    ok(cli(env, "mandate", "set", iban, "approved"))


def seed(env: Mapping[str, str]) -> str:
    """A cabinet with acd, and BOUND_MT940 registered, bound to acd and approved."""
    ok(cli(env, "cabinet", "create", "cab-r", "--name", "Restart"))
    token = ok(cli(env, "user", "create", "--cabinet", "cab-r", "--profile", "administrateur"))
    token = token.strip().splitlines()[-1]
    ok(cli(env, "cabinet", "connectors", "add", "cab-r", "acd", "--token", token))
    register(env, BOUND_MT940, token)
    return token


def ingest(env: Mapping[str, str], bootstrap: str, name: str) -> None:
    ok(cli(env, "ingest", str(SAMPLES / name), "--bootstrap", bootstrap, "--keep"))


async def records(bootstrap: str, topic: str) -> list[dict[str, object]]:
    return [json.loads(r.value or b"{}") for r in await read_topic(bootstrap, topic)]


def drops(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "partners" / "acd").glob("*"))


async def test_a_clean_restart_keeps_held_statements_and_releases_them(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    env = up_environment(data_dir)
    token = seed(env)
    first = UpProcess(env, tmp_path / "logs", "first")
    try:
        await first.ready()
        ingest(env, first.bootstrap, "mt940-multi.sta")  # BOUND_MT940 + UNKNOWN
        ingest(env, first.bootstrap, "camt053-multi.xml")  # 3 statements, none registered
        await eventually(
            lambda: records(first.bootstrap, HELD),
            "4 statements held as unknown",
            done=lambda r: len(r) == 4,
        )
        await eventually(
            lambda: _async(drops(data_dir)),
            "BOUND_MT940's statement dropped for acd",
            done=lambda d: len(d) == 1,
        )
        assert await first.interrupt() == 0, first.report()
        assert "saved" in first.out, first.report()
    finally:
        first.stop_if_running()

    second = UpProcess(env, tmp_path / "logs", "second")
    try:
        await second.ready()
        assert "restored" in second.out, second.report()
        assert "WARNING" not in second.out, second.report()
        held = await records(second.bootstrap, HELD)
        assert len(held) == 4
        # The held statements come back to life: registering UNKNOWN releases its one.
        register(env, UNKNOWN, token)
        await eventually(
            lambda: _async(drops(data_dir)),
            "UNKNOWN's held statement released to acd",
            done=lambda d: len(d) == 2,
        )
        # So do the camt.053 ones.
        register(env, PENDING_CAMT, token)
        await eventually(
            lambda: _async(drops(data_dir)),
            "PENDING_CAMT's two held statements released to acd",
            done=lambda d: len(d) == 4,
        )
        diagnosis = json.loads(ok(cli(env, "diagnose", UNKNOWN, "--json", "--token", token)))
        assert all(check["ok"] for check in diagnosis["checks"]), diagnosis
        assert await second.interrupt() == 0, second.report()
    finally:
        second.stop_if_running()


async def test_a_killed_run_is_reported_and_states_are_republished(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    env = up_environment(data_dir)
    token = seed(env)
    first = UpProcess(env, tmp_path / "logs", "first")
    try:
        await first.ready()
        ingest(env, first.bootstrap, "mt940-multi.sta")  # BOUND_MT940 + UNKNOWN
        await eventually(
            lambda: _async(drops(data_dir)),
            "BOUND_MT940's statement dropped for acd",
            done=lambda d: len(d) == 1,
        )

        held = await eventually(
            lambda: records(first.bootstrap, HELD),
            "UNKNOWN's statement held",
            done=lambda r: len(r) == 1,
        )
        held_id = str(held[0]["statement_id"])
        await eventually(
            lambda: _async(ledger_outcomes(data_dir, held_id)),
            "the ledger to record the hold",
            done=lambda seen: "held" in seen,
        )
    finally:
        await first.kill()

    second = UpProcess(env, tmp_path / "logs", "second")
    try:
        out = await second.ready()
        assert "ended without saving the embedded broker's records" in out, second.report()
        assert "republished 1 IBAN states" in out, second.report()
        # The statement held for UNKNOWN was only in the broker: named, not silently gone.
        await eventually(
            lambda: _async(second.out),
            "the lost held statement named",
            done=lambda o: held_id in o,
        )
        # BOUND_MT940's state is back: a new statement of it goes to acd, not held.
        ingest(env, second.bootstrap, "mt940-multi.sta")
        routed = await eventually(
            lambda: records(second.bootstrap, TO_ACD),
            "BOUND_MT940 routed to acd",
            done=lambda r: len(r) == 1,
        )
        assert routed[0]["iban"] == BOUND_MT940
        held_now = await records(second.bootstrap, HELD)
        assert [h.get("iban") for h in held_now] == [UNKNOWN], held_now
        diagnosis = json.loads(ok(cli(env, "diagnose", BOUND_MT940, "--json", "--token", token)))
        assert all(check["ok"] for check in diagnosis["checks"]), diagnosis
        assert BOUND_MT940 not in out and mask_iban(UNKNOWN) not in out
        assert await second.interrupt() == 0, second.report()
    finally:
        second.stop_if_running()


def ledger_outcomes(data_dir: Path, statement_id: str) -> list[str]:
    with contextlib.closing(sqlite3.connect(data_dir / "statement-router.db")) as db:
        rows = db.execute(
            "SELECT outcome FROM delivery_ledger WHERE statement_id = ?", (statement_id,)
        ).fetchall()
    return [row[0] for row in rows]


async def _async(value: object) -> object:
    return value
