"""``statement-router up`` follows its connectors file while it runs (issue 14 item 10).

One ``up`` (its own broker, a real child process, configured by the environment and the
file only), as an operator runs it. The file first declares ``acd`` (no endpoint: the
embedded drop) and ``quadra`` (a directory of the operator's). The operator then adds
``sage`` without an endpoint and moves ``quadra``'s directory, in one edit:

* ``sage`` gets its topics and a worker delivering to ``<data_dir>/partners/sage``, the
  drop ``up`` gives at start to a connector without an endpoint; the API's
  ``GET /connectors`` twin reports the adapter used (``directory``);
* ``quadra``'s worker alone is restarted, and ``acd``'s never is: its
  ``adapter_started`` line appears once in ``up``'s log, as in the ``adapters`` process
  test (``test_adapters_reload.py``);
* a bad edit is refused with its reason logged, and the running set keeps routing and
  delivering (a statement for ``sage`` and one for ``acd`` arrive while the bad file is
  in place);
* removing ``sage`` stops its worker.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pytest

from adapters.delivery.naming import is_temporary_name
from routing.demo.seed import BOUND_MT940, UNKNOWN
from tests.e2e.test_adapters_reload import named, write
from tests.e2e.up_process import UpProcess, cli, ok, up_environment
from tests.eventually import eventually

SAMPLES = Path(__file__).resolve().parents[2] / "examples" / "bank-files"
PENDING_CAMT = "FR7630003036200002041234504"  # camt053-multi.xml: 2 statements

pytestmark = pytest.mark.timeout(480)


def files(directory: Path) -> list[str]:
    if not directory.is_dir():
        return []
    return sorted(p.name for p in directory.iterdir() if not is_temporary_name(p.name))


def register(env: Mapping[str, str], iban: str, connector: str, token: str) -> None:
    ok(cli(env, "iban", "add", iban, "--cabinet", "cab-f"))
    ok(cli(env, "iban", "bind", iban, connector, "--token", token))
    ok(cli(env, "mandate", "set", iban, "approved"))


@pytest.mark.parametrize(
    "broker",
    [pytest.param("tansu", id="tansu"), pytest.param("kafka", id="kafka", marks=pytest.mark.kafka)],
)
async def test_up_applies_a_changed_connectors_file_without_restarting_the_others(
    tmp_path: Path, broker: str
) -> None:
    data_dir = tmp_path / "var"
    connectors = tmp_path / "connectors.toml"
    acd = '[connectors.acd]\nname = "ACD"\nadapter = "webhook"\n'

    def quadra(inbox: str) -> str:
        return (f'\n[connectors.quadra]\nname = "Quadra"\nadapter = "directory"\n'
                f'path = "{tmp_path / inbox}"\n')

    sage = '\n[connectors.sage]\nname = "Sage"\nadapter = "sftp"\n'
    write(connectors, acd + quadra("quadra-1"))
    env = up_environment(data_dir, CONNECTORS_FILE=str(connectors), LOG_FORMAT="json",
                         LOG_LEVEL="INFO")
    up = UpProcess(env, tmp_path / "logs", "up", "--broker", broker)
    log = up.err_path

    def alive() -> None:
        assert up.proc.poll() is None, up.report()

    async def printed(line: str) -> None:
        """``up`` prints its partner lines to stdout after it logs the reload (stderr): the
        two files are written apart, so the line is awaited, not read at once."""
        await eventually(lambda: line in up.out, f"up to print {line!r}", guard=alive,
                         within=30, explain=up.report)

    try:
        await up.ready(within=240)
        bootstrap = up.bootstrap
        ok(cli(env, "cabinet", "create", "cab-f", "--name", "Follow"))
        token = ok(cli(env, "user", "create", "--cabinet", "cab-f", "--profile",
                       "administrateur")).strip().splitlines()[-1]
        ok(cli(env, "cabinet", "connectors", "add", "cab-f", "acd", "--token", token))
        register(env, PENDING_CAMT, "acd", token)
        ok(cli(env, "ingest", str(SAMPLES / "camt053-multi.xml"), "--bootstrap", bootstrap,
               "--keep"))
        await eventually(lambda: files(data_dir / "partners" / "acd"), "acd's first drops",
                         done=lambda names: len(names) == 2, guard=alive, within=120)

        # One edit: sage added (no endpoint: the embedded drop), quadra's directory moved.
        write(connectors, acd + quadra("quadra-2") + sage)
        reloaded = await eventually(lambda: named(log, "connectors_reloaded"), "the reload",
                                    guard=alive, within=120)
        assert reloaded[0]["added"] == ["sage"], up.report()
        assert reloaded[0]["restarted"] == ["quadra"], up.report()
        assert reloaded[0]["unchanged"] == ["acd"], up.report()
        # The adapter each one really uses: the embedded drop stands in for acd and sage.
        assert reloaded[0]["adapters"] == {"acd": "directory", "quadra": "directory",
                                           "sage": "directory"}, up.report()
        await eventually(lambda: named(log, "adapter_started", connector_id="sage"),
                         "sage's worker", guard=alive, within=120)
        assert (data_dir / "partners" / "sage").is_dir()
        await printed(f"partner    sage       directory {data_dir / 'partners' / 'sage'}  "
                      "(embedded drop; added)")
        await printed(f"partner    quadra     directory {tmp_path / 'quadra-2'}  "
                      "(CONNECTORS_FILE; changed)")
        # The router routes to sage once it sees it (and its topic): wait for that, so
        # the statement below is not held as connector_not_in_catalogue meanwhile.
        await eventually(
            lambda: [e for e in named(log, "router_catalogue_changed")
                     if "sage" in e.get("added", [])],
            "the router to take sage", guard=alive, within=60)
        used = json.loads(ok(cli(env, "connectors", "--json")))
        assert {c["connector_id"]: c["adapter"] for c in used}["sage"] == "directory", used

        ok(cli(env, "cabinet", "connectors", "add", "cab-f", "sage", "--token", token))
        register(env, UNKNOWN, "sage", token)
        register(env, BOUND_MT940, "acd", token)

        # A bad edit: refused with its reason, the running set stays.
        write(connectors, acd + quadra("quadra-2") + sage.replace('"sftp"', '"ftp"'))
        refused = await eventually(
            lambda: [e for e in named(log, "connectors_file_refused") if "running" in e],
            "the refusal", guard=alive, within=60)
        assert "connector sage: adapter: Input should be 'webhook', 'sftp' or 'directory'" in (
            refused[0]["reason"]), refused
        assert refused[0]["running"] == ["acd", "quadra", "sage"], refused
        # The bad file is left out of ingest's environment: this checks `up`, not the CLI.
        ingest_env = {k: v for k, v in env.items() if k != "CONNECTORS_FILE"}
        ok(cli(ingest_env, "ingest", str(SAMPLES / "mt940-multi.sta"), "--bootstrap",
               bootstrap, "--keep"))
        await eventually(lambda: files(data_dir / "partners" / "sage"),
                         "sage's delivery under the bad file", done=lambda n: len(n) == 1,
                         guard=alive, within=120)
        await eventually(lambda: files(data_dir / "partners" / "acd"), "acd's third drop",
                         done=lambda names: len(names) == 3, guard=alive, within=120)

        # sage removed: its worker stops, the others stay.
        write(connectors, acd + quadra("quadra-2"))
        removed = await eventually(
            lambda: [e for e in named(log, "connectors_reloaded") if e["removed"]],
            "sage's removal", guard=alive, within=60)
        assert removed[0]["removed"] == ["sage"], removed
        assert sorted(removed[0]["unchanged"]) == ["acd", "quadra"], removed
        await printed("partner    sage       removed from CONNECTORS_FILE")
        await eventually(lambda: named(log, "adapter_stopped", connector_id="sage"),
                         "sage's worker to stop", guard=alive)
        assert await up.interrupt() == 0, up.report()
    finally:
        up.stop_if_running()

    # acd's worker ran from start to stop through three edits; quadra's was restarted once.
    assert len(named(log, "adapter_started", connector_id="acd")) == 1, up.report()
    assert len(named(log, "adapter_started", connector_id="quadra")) == 2, up.report()
    assert len(named(log, "adapter_started", connector_id="sage")) == 1, up.report()
    assert len(files(data_dir / "partners" / "acd")) == 3
