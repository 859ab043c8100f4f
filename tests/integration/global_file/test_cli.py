"""``statement-router global-file download`` and ``trace``, run as the installed console
script against a SQLite file, like the rest of the CLI's contract tests."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from adapters.global_file import member_name
from routing.domain.identity import statement_key
from routing.store.global_file import SqlGlobalFileStore
from routing.store.ledger import SqlDeliveryLedger
from tests.integration.global_file.factories import cfonb_content, entry, iban, outcome

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "STATEMENT_ROUTER_TOKEN"}
    }
    env["DATA_DIR"] = str(tmp_path / "var")
    script = Path(sys.executable).with_name("statement-router")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(script), *args], env=env, capture_output=True, text=True, timeout=60,
            check=False,
        )

    return run


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


async def seed(url: str) -> None:
    files = SqlGlobalFileStore.from_url(url)
    ledger = SqlDeliveryLedger.from_url(url)
    try:
        await files.store(
            [
                entry("c1", content=cfonb_content("c1", sep=b"\n")),
                entry("x1", fmt="camt053", content=b"<Document/>", period=("2026-01-07",) * 2),
            ]
        )
        await ledger.record(
            [
                outcome("c1", "routed", 1, detail="global-file"),
                outcome("p1", "routed", 2, connector_id="acd", detail="partner:acd"),
                outcome("p1", "retrying", 3, connector_id="acd", attempt=1, detail="HTTP 503"),
            ]
        )
    finally:
        await files.close()
        await ledger.close()


def test_download_and_trace_through_the_cli(cli: Cli, tmp_path: Path) -> None:
    ok(cli("db", "upgrade"))
    ok(cli("cabinet", "create", "cab-a", "--name", "Cabinet A"))
    ok(cli("cabinet", "create", "cab-b", "--name", "Cabinet B"))
    token = ok(cli("user", "create", "--cabinet", "cab-a", "--profile", "collaborateur"))
    token = token.strip().splitlines()[-1]
    other = ok(cli("user", "create", "--cabinet", "cab-b", "--profile", "administrateur"))
    other = other.strip().splitlines()[-1]
    ok(cli("iban", "add", iban(1), "--cabinet", "cab-a"))
    db = tmp_path / "var" / "statement-router.db"
    asyncio.run(seed(f"sqlite+aiosqlite:///{db}"))

    one_day = tmp_path / "out.txt"
    period = ["--from", "2026-01-05", "--to", "2026-01-05"]
    printed = ok(cli("global-file", "download", "--cabinet", "cab-a", *period,
                     "--output", str(one_day), "--token", token))
    assert "wrote 1 statement(s)" in printed
    assert one_day.read_bytes() == cfonb_content("c1", sep=b"\r\n")

    out_dir = tmp_path / "downloads"
    out_dir.mkdir()
    ok(cli("global-file", "download", "--cabinet", "cab-a", "--from", "2026-01-01",
           "--to", "2026-01-31", "--output", str(out_dir), "--token", token))
    archive_path = out_dir / "releves-cab-a-2026-01-01-2026-01-31.zip"
    with zipfile.ZipFile(io.BytesIO(archive_path.read_bytes())) as archive:
        assert archive.namelist() == [
            "releves-cab-a-2026-01-01-2026-01-31.txt",
            member_name(entry("x1", fmt="camt053", content=b"<Document/>",
                              period=("2026-01-07",) * 2)),
        ]

    refused = cli("global-file", "download", "--cabinet", "cab-a", *period,
                  "--output", str(one_day), "--token", other)
    assert refused.returncode == 4 and "cab-a" in refused.stderr
    reversed_period = cli("global-file", "download", "--cabinet", "cab-a", "--from",
                          "2026-02-01", "--to", "2026-01-01", "--output", str(one_day),
                          "--token", token)
    assert reversed_period.returncode == 7 and "before it starts" in reversed_period.stderr

    traced = json.loads(ok(cli("trace", "p1", "--json", "--token", token)))
    assert traced["status"] == "retrying"
    assert [o["outcome"] for o in traced["outcomes"]] == ["routed", "retrying"]
    text = ok(cli("trace", "c1", "--token", token))
    assert "status: in_global_file" in text
    assert "checks: connector_on_cabinet=ok, iban_bound=NOK, mandate_approved=ok" in text
    unknown = cli("trace", "nope", "--token", token)
    assert unknown.returncode == 5 and "statement nope is not known" in unknown.stderr
    # Another cabinet's statement or IBAN is answered exactly as an unknown one.
    foreign = cli("trace", "p1", "--token", other)
    never = cli("trace", "p9", "--token", other)
    assert (foreign.returncode, foreign.stderr.replace("p1", "<id>")) == (
        never.returncode, never.stderr.replace("p9", "<id>"),
    )
    assert foreign.returncode == 5 and "statement p1 is not known" in foreign.stderr
    for verb in (("bind", "acd"), ("unbind",), ("show",)):
        foreign = cli("iban", verb[0], iban(1), *verb[1:], "--token", other)
        never = cli("iban", verb[0], iban(9), *verb[1:], "--token", other)
        assert foreign.returncode == never.returncode == 5, foreign.stderr
        assert foreign.stderr.replace(iban(1), "<id>") == never.stderr.replace(iban(9), "<id>")
        assert "cab-a" not in foreign.stderr


def test_download_output_is_checked_before_anything_is_written(cli: Cli, tmp_path: Path) -> None:
    ok(cli("cabinet", "create", "cab-a", "--name", "Cabinet A"))
    token = ok(cli("user", "create", "--cabinet", "cab-a", "--profile", "collaborateur"))
    token = token.strip().splitlines()[-1]
    ok(cli("iban", "add", iban(1), "--cabinet", "cab-a"))
    db = tmp_path / "var" / "statement-router.db"
    asyncio.run(seed(f"sqlite+aiosqlite:///{db}"))
    january = ["--cabinet", "cab-a", "--from", "2026-01-01", "--to", "2026-01-31",
               "--token", token]

    missing = cli("global-file", "download", *january, "--output",
                  str(tmp_path / "nowhere" / "out.zip"))
    assert missing.returncode == 7, missing.stderr
    assert missing.stderr.startswith("error: ") and "Traceback" not in missing.stderr
    assert f"the directory {tmp_path / 'nowhere'} does not exist" in missing.stderr
    assert not (tmp_path / "nowhere").exists()

    as_text = cli("global-file", "download", *january, "--output", str(tmp_path / "x.txt"))
    assert as_text.returncode == 7, as_text.stderr
    assert "is a ZIP archive (.zip)" in as_text.stderr and "*.zip" in as_text.stderr
    assert not (tmp_path / "x.txt").exists()

    printed = ok(cli("global-file", "download", *january, "--output", str(tmp_path / "x")))
    assert str(tmp_path / "x.zip") in printed
    assert zipfile.is_zipfile(tmp_path / "x.zip")
    ok(cli("global-file", "download", *january, "--output", str(tmp_path / "y.ZIP")))
    assert zipfile.is_zipfile(tmp_path / "y.ZIP")

    one_day = ["--cabinet", "cab-a", "--from", "2026-01-05", "--to", "2026-01-05",
               "--token", token]
    as_zip = cli("global-file", "download", *one_day, "--output", str(tmp_path / "c.zip"))
    assert as_zip.returncode == 7 and "CFONB 120 text file (.txt)" in as_zip.stderr


async def seed_shared_ids(url: str) -> None:
    """stmt-1 for an account of each cabinet; stmt-2 sent twice by A's feed, other content."""
    files = SqlGlobalFileStore.from_url(url)
    try:
        await files.store(
            [
                entry("stmt-1", content=b"A's statement"),
                entry("stmt-1", cabinet_id="cab-b", account=2, content=b"B's statement"),
                entry("stmt-2", content=b"first"),
                entry("stmt-2", content=b"corrected", offset=1),
            ]
        )
    finally:
        await files.close()


def test_trace_a_shared_or_reused_statement_id(cli: Cli, tmp_path: Path) -> None:
    """Issue 13 item 2 in the CLI: B's user traces B's stmt-1; a reused id lists the
    statements with their keys (exit 6, as the API's 409), and ``--key`` chooses one."""
    ok(cli("db", "upgrade"))
    ok(cli("cabinet", "create", "cab-a", "--name", "Cabinet A"))
    ok(cli("cabinet", "create", "cab-b", "--name", "Cabinet B"))
    token = ok(cli("user", "create", "--cabinet", "cab-a", "--profile", "collaborateur"))
    token = token.strip().splitlines()[-1]
    other = ok(cli("user", "create", "--cabinet", "cab-b", "--profile", "administrateur"))
    other = other.strip().splitlines()[-1]
    asyncio.run(seed_shared_ids(f"sqlite+aiosqlite:///{tmp_path / 'var' / 'statement-router.db'}"))

    theirs = json.loads(ok(cli("trace", "stmt-1", "--json", "--token", other)))
    assert (theirs["cabinet_id"], theirs["iban"]) == ("cab-b", iban(2))
    mine = json.loads(ok(cli("trace", "stmt-1", "--json", "--token", token)))
    assert (mine["cabinet_id"], mine["iban"]) == ("cab-a", iban(1))

    keys = [statement_key(iban(1), "stmt-2", entry("stmt-2", content=c).content_sha256)
            for c in (b"first", b"corrected")]
    ambiguous = cli("trace", "stmt-2", "--token", token)
    assert ambiguous.returncode == 6, ambiguous.stderr
    assert "names 2 statements" in ambiguous.stderr
    assert all(f"--key {k}" in ambiguous.stderr for k in keys)
    assert iban(1) not in ambiguous.stderr  # masked
    assert cli("trace", "stmt-2", "--token", other).returncode == 5  # none of B's
    for k in keys:
        chosen = json.loads(ok(cli("trace", "stmt-2", "--key", k, "--json", "--token", token)))
        assert chosen["key"] == k and len(chosen["other_contents"]) == 1
    text = ok(cli("trace", "stmt-2", "--key", keys[0], "--token", token))
    assert f"key={keys[0]}" in text and "1 other statement(s)" in text
    bad = cli("trace", "stmt-2", "--key", "nope", "--token", token)
    assert bad.returncode == 7 and "16 lower-case hex digits" in bad.stderr

    # The operator sees both cabinets' stmt-1, and chooses in the same way.
    operator = cli("trace", "stmt-1", "--operator")
    assert operator.returncode == 6 and "names 2 statements" in operator.stderr
    key_b = statement_key(iban(2), "stmt-1", theirs["content_sha256"])
    chosen = json.loads(ok(cli("trace", "stmt-1", "--operator", "--key", key_b, "--json")))
    assert chosen["cabinet_id"] == "cab-b"
