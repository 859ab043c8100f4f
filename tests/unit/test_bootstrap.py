"""The composition root resolves the Kafka address once, and says what is wrong with it
as a ``ConfigError`` before anything connects; the CLI gives that one line and exit 8."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import typer

from config.errors import ConfigError
from config.settings import Settings
from routing.entrypoints.bootstrap import broker_address, check_broker_settings
from routing.entrypoints.cli.common import EXIT_UNAVAILABLE, run
from routing.entrypoints.up import run_up


def test_the_configured_address_is_used_unless_the_command_knows_a_better_one() -> None:
    settings = Settings(kafka_bootstrap_servers="kafka-1:9092,kafka-2:9092")

    assert broker_address(settings) == "kafka-1:9092,kafka-2:9092"
    assert broker_address(settings, "127.0.0.1:40999") == "127.0.0.1:40999"


def test_embedded_mode_needs_the_embedded_brokers_address() -> None:
    settings = Settings(kafka_bootstrap_servers=None)

    with pytest.raises(ConfigError, match="KAFKA_BOOTSTRAP_SERVERS is not set") as refused:
        broker_address(settings)
    assert "pass the embedded broker" in refused.value.message
    assert broker_address(settings, "127.0.0.1:1") == "127.0.0.1:1"


def test_exactly_once_is_refused_for_the_embedded_broker() -> None:
    settings = Settings(kafka_bootstrap_servers=None, kafka_exactly_once=True)

    with pytest.raises(ConfigError, match="needs a real Kafka"):
        check_broker_settings(settings)
    with pytest.raises(ConfigError, match="needs a real Kafka"):
        broker_address(settings, "127.0.0.1:9092")
    check_broker_settings(Settings(kafka_bootstrap_servers="k:9092", kafka_exactly_once=True))


def test_the_cli_turns_a_config_error_into_one_line_and_exit_8(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def role() -> None:
        broker_address(Settings(kafka_bootstrap_servers=None, kafka_exactly_once=True))

    with pytest.raises(typer.Exit) as exited:
        run(role())

    assert exited.value.exit_code == EXIT_UNAVAILABLE
    err = capsys.readouterr().err
    assert err.startswith("error: kafka_exactly_once needs a real Kafka"), err
    assert err.count("\n") == 1


def test_up_refuses_a_broker_configuration_before_starting_anything(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, kafka_bootstrap_servers=None, kafka_exactly_once=True)
    lines: list[str] = []

    with pytest.raises(ConfigError, match="needs a real Kafka"):
        asyncio.run(
            run_up(settings, demo=False, stop=asyncio.Event(), print_line=lines.append)
        )

    # No broker was started (its directory is made first), no lock taken, nothing printed.
    assert not (tmp_path / "broker").exists()
    assert list(tmp_path.iterdir()) == []
    assert lines == []


async def test_the_adapters_role_gets_its_producer_from_the_root_or_a_clear_broker_error() -> None:
    """The adapters' shared producer is built and started here, not by the supervisor: a
    broker out of reach is a ``BrokerUnavailable`` naming that producer (the CLI's exit 8),
    and the role's runner is never called without a started producer."""
    from routing.broker.errors import BrokerUnavailable
    from routing.broker.process import free_port
    from routing.entrypoints.bootstrap import run_adapters_role

    address = f"127.0.0.1:{free_port('127.0.0.1')}"
    settings = Settings(kafka_bootstrap_servers=address)
    called: list[object] = []

    async def runner(producer: object) -> str:
        called.append(producer)
        return "ran"

    with pytest.raises(BrokerUnavailable, match=f"{address} while starting the adapters producer"):
        await run_adapters_role(settings, address, runner)
    assert called == []
