"""`make run` is `statement-router up --demo`: the whole pipeline in one command."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(int(entry.name))
    return found


@pytest.mark.parametrize(
    "broker",
    [pytest.param("tansu", id="tansu"), pytest.param("kafka", id="kafka", marks=pytest.mark.kafka)],
)
def test_up_demo_routes_every_faq_case_and_stops_cleanly(tmp_path: Path, broker: str) -> None:
    """``up --demo`` on the embedded broker (``make run``), and ``up --broker kafka --demo``
    on a local Apache Kafka node that ``up`` starts and stops itself."""
    env = {
        k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS"}
    }
    env.update(DATA_DIR=str(tmp_path / "var"), API_PORT=str(free_port()))
    script = Path(sys.executable).with_name("statement-router")
    result = subprocess.run(
        [str(script), "up", "--demo", "--exit-after-demo", "--broker", broker],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, result.stderr[-3000:]

    def line_for(fragment: str) -> list[str]:
        return [line for line in out.splitlines() if fragment in line]

    # The FAQ cases, each with its reason.
    assert len(line_for("-> partner acd: bound")) == 3
    assert len(line_for("-> partner quadra: bound")) == 2
    assert len(line_for("-> global file: unbound (no connector bound: the normal path)")) == 3
    assert "failed: iban_bound" not in out
    assert len(line_for("-> held: mandate_pending (failed: mandate_approved)")) == 2
    assert len(line_for("-> held: unknown_iban")) == 1
    invalid = line_for("-> invalid:")
    assert any("value is not JSON" in line for line in invalid)
    assert any("unknown schema 'statement.received/v9'" in line for line in invalid)
    assert any("Invalid checksum digits" in line for line in invalid)
    # Approving the mandate releases the held statements to the partner.
    assert len(line_for("-> partner acd (released; state v")) == 2
    # The banner says where the web console is.
    assert len(line_for("/console  (operators: ")) == 1
    # The report is not interleaved with the roles' info lines (LOG_LEVEL unset: warnings).
    assert "[info" not in result.stderr
    assert "record_invalid" in result.stderr  # the demo's invalid records are warnings
    # IBANs are masked, even in the report.
    assert "FR7630006000011234567890189" not in out + result.stderr

    demo = tmp_path / "var" / "demo"
    assert "partner acd: 5/5 statements delivered" in out
    assert "partner quadra: 2/2 statements delivered" in out
    # acd is a webhook (signatures checked by the demo partner), quadra a directory drop.
    assert len(list((demo / "partners" / "acd").glob("*.json"))) == 5
    assert not (demo / "partners" / "acd-webhook").exists()  # acd's folder is partners/acd
    assert not (demo / "global-file").exists()  # the global files are in the state store
    assert len(list((demo / "partners" / "quadra").glob("*.txt"))) == 2
    assert "downloaded the global file of cab-demo" in out
    (archive,) = demo.glob("releves-cab-demo-*.zip")  # mixed formats come as a zip
    with zipfile.ZipFile(archive) as zipped:
        names = sorted(zipped.namelist())
    assert len(names) == 2  # the camt.053 statement, and the CFONB statements concatenated
    assert any(name.endswith(".txt") for name in names)

    port = re.search(r"broker\s+127\.0\.0\.1:(\d+) \((.+)\)", out)
    assert port is not None
    assert port.group(2).startswith("Apache Kafka" if broker == "kafka" else "embedded Tansu")
    # No broker left behind: Tansu's argv names its port, Kafka's names its config file.
    assert processes_mentioning(f"127.0.0.1:{port.group(1)}") == []
    assert processes_mentioning(str(tmp_path)) == []
