"""Settings: one frozen object, documented field by field."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from config.settings import Settings

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_every_setting_is_documented() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for name, field in Settings.model_fields.items():
        env = field.validation_alias if isinstance(field.validation_alias, str) else name
        assert f"`{env.upper()}`" in text, env


def test_defaults_are_the_embedded_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATA_DIR", "DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "API_HOST"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.embedded_broker
    assert settings.effective_database_url == "sqlite+aiosqlite:///var/statement-router.db"
    assert settings.api_host == "127.0.0.1"


def test_postgres_urls_get_the_async_driver() -> None:
    settings = Settings(database_url="postgresql://postgres@127.0.0.1/test")
    assert settings.effective_database_url == "postgresql+asyncpg://postgres@127.0.0.1/test"


def test_settings_are_frozen_and_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.api_port = 1  # type: ignore[misc]
    monkeypatch.setenv("TOPIC_PARTITIONS", "0")
    with pytest.raises(ValidationError, match="topic_partitions"):
        Settings()


def test_the_token_is_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATEMENT_ROUTER_TOKEN", "srt_secret_value")
    settings = Settings()
    assert settings.token is not None
    assert settings.token.get_secret_value() == "srt_secret_value"
    assert "srt_secret_value" not in repr(settings)
