"""The process settings, read once from the environment.

Every knob of the system is a field here, documented in docs/configuration.md. Nothing
else in the code base reads ``os.environ``: pass a ``Settings`` (or the values it holds)
down from the composition root instead.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from config.problems import SettingsError, describe, unknown_prefixed
from events.limits import MAX_STATEMENT_BYTES

__all__ = ["Settings", "SettingsError", "get_settings", "load_settings", "settings_warnings"]


class Settings(BaseSettings):
    """Frozen runtime configuration.

    Field names map to upper-case environment variables without a prefix
    (``database_url`` <- ``DATABASE_URL``), because those names are what container
    platforms and the docker-compose file already speak.
    """

    model_config = SettingsConfigDict(frozen=True, extra="ignore", case_sensitive=False)

    data_dir: Path = Field(
        default=Path("var"),
        description="Where the embedded mode keeps its SQLite file, drops and global files.",
    )
    database_url: str = Field(
        default="",
        description=(
            "SQLAlchemy URL of the state store. Empty means the embedded SQLite file "
            "<data_dir>/statement-router.db. postgresql:// URLs use the asyncpg driver."
        ),
    )
    kafka_bootstrap_servers: str | None = Field(
        default=None,
        description="Kafka bootstrap servers. Unset means `up` starts the embedded Tansu broker.",
    )
    topic_prefix: str = Field(
        default="sobank",
        pattern=r"^[A-Za-z0-9._-]+$",
        description="Prefix of every topic name, e.g. sobank.statements.received.",
    )
    topic_partitions: int = Field(
        default=6,
        ge=1,
        le=1024,
        description=(
            "Partition count of the IBAN-keyed topics. statements.received and iban.state "
            "must share it (co-partitioning), so change it only on an empty cluster."
        ),
    )
    topic_replication_factor: int = Field(default=1, ge=1, le=7)
    kafka_exactly_once: bool = Field(
        default=False,
        description=(
            "Use Kafka transactions (faust processing_guarantee=exactly_once). Only for a "
            "real Kafka: the embedded Tansu broker has no transactional producer."
        ),
    )
    kafka_fetch_max_wait_ms: int = Field(
        default=20,
        ge=1,
        le=10_000,
        description=(
            "Longest time a consumer's fetch waits on the broker for data (aiokafka "
            "fetch_max_wait_ms). Tansu answers an empty fetch only when this runs out, not "
            "when data arrives, so every consumer hop adds up to this much latency."
        ),
    )
    kafka_linger_ms: int = Field(
        default=5,
        ge=0,
        le=1_000,
        description=(
            "How long a producer waits for more records before sending a batch (aiokafka "
            "linger_ms), for every producer of the pipeline but ingest. Each hop can add up "
            "to this much latency when traffic is light. On the embedded Tansu broker, "
            "larger batches keep it fast under sustained load: its cost grows with the "
            "number of record batches it holds (docs/performance.md, broker_latency)."
        ),
    )
    max_statement_bytes: int = Field(
        default=MAX_STATEMENT_BYTES,
        ge=1,
        le=MAX_STATEMENT_BYTES,
        description=(
            "The largest statement accepted, in bytes of content (decoded, before base64): "
            "ingest refuses a larger one (exit 7, statement_too_large) and the router sends "
            "one produced by others to statements.invalid with its size. It may lower the "
            "size rule's limit (1 MiB, docs/operations.md#limits), not raise it: the topics "
            "and producers are sized for that limit."
        ),
    )
    table_store: str = Field(
        default="memory://",
        description="faust Table storage: memory:// (embedded) or rocksdb:// (production).",
    )
    api_host: str = Field(default="127.0.0.1", description="Bind address of the HTTP API.")
    api_port: int = Field(default=8080, ge=0, le=65535)
    metrics_host: str = Field(
        default="127.0.0.1",
        description="Bind address of the /metrics server of the roles without an HTTP API.",
    )
    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description=(
            "Port of the /metrics server of relay, router, adapters, global-file build and "
            "ledger. Unset: none. The api (and up) serve /metrics on the API port instead."
        ),
    )
    log_format: Literal["console", "json"] = Field(
        default="console", description="console for people, json for log shippers."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    token: SecretStr | None = Field(
        default=None,
        validation_alias="STATEMENT_ROUTER_TOKEN",
        description="Bearer token the CLI uses for the user-level (FAQ) operations.",
    )

    delivery_retry_base_seconds: float = Field(
        default=1.0,
        gt=0,
        le=3600,
        description=(
            "Adapter workers: the first redelivery waits up to this long; each further attempt "
            "doubles the ceiling (exponential backoff with full jitter)."
        ),
    )
    delivery_retry_max_seconds: float = Field(
        default=300.0,
        gt=0,
        le=86_400,
        description=(
            "Adapter workers: the longest wait between two attempts, Retry-After included."
        ),
    )
    delivery_max_attempts: int = Field(
        default=12,
        ge=1,
        le=1000,
        description=(
            "Adapter workers: attempts per statement (the first included) before it is "
            "dead-lettered."
        ),
    )
    adapter_max_crashes: int = Field(
        default=3,
        ge=1,
        le=100,
        description=(
            "Adapter workers: after this many crashes on the same record (a fatal error, or "
            "the process killed while handling it), the next start parks the record instead."
        ),
    )
    adapter_in_flight_per_partition: int = Field(
        default=4,
        ge=1,
        le=64,
        description=(
            "Adapter workers: deliveries in flight at once per partition of a partner "
            "topic, each for a different IBAN (the order owed is per IBAN); 1 delivers a "
            "partition's statements strictly one after another."
        ),
    )
    connectors_file: Path | None = Field(
        default=None,
        description=(
            "TOML file with each connector's partner endpoint (webhook URL and secret "
            "references, SFTP host/user/key/known_hosts/dir, drop directory), read by "
            "`statement-router adapters`. See docs/delivery.md."
        ),
    )
    operator_token_sha256: str | None = Field(
        default=None,
        description=(
            "Lower-case hex SHA-256 of the operator token that the /ops API accepts "
            "(`statement-router operator token` makes one). Unset: the /ops API refuses "
            "everyone."
        ),
    )

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _any_case(cls, value: object, info: ValidationInfo) -> object:
        """``debug`` means DEBUG: the case of a level or format name carries nothing."""
        if not isinstance(value, str):
            return value
        value = value.strip()
        return value.upper() if info.field_name == "log_level" else value.lower()

    @field_validator("operator_token_sha256", mode="before")
    @classmethod
    def _a_hash_not_a_token(cls, value: object) -> object:
        """Only the token's hash is configured; the token itself pasted here is refused
        with a message saying so (and the value is never repeated)."""
        if not isinstance(value, str):
            return value
        value = value.strip().lower()
        if not value:
            return None
        if re.fullmatch(r"[0-9a-f]{64}", value) is None:
            raise ValueError(
                "the hex SHA-256 of the operator token (64 hex characters), not the token "
                "itself: `statement-router operator token` prints both"
            )
        return value

    @field_validator("connectors_file", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """``CONNECTORS_FILE=`` means no file (the shipped catalogue), not the directory
        ``.``: every command reads the catalogue from it."""
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("database_url")
    @classmethod
    def _use_async_drivers(cls, value: str) -> str:
        for plain, driver in (
            ("postgresql://", "postgresql+asyncpg://"),
            ("postgres://", "postgresql+asyncpg://"),
            ("sqlite://", "sqlite+aiosqlite://"),
        ):
            if value.startswith(plain):
                return driver + value[len(plain) :]
        return value

    @property
    def effective_database_url(self) -> str:
        """The URL to connect to, defaulting to the embedded SQLite file."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'statement-router.db').as_posix()}"

    @property
    def embedded_broker(self) -> bool:
        return not self.kafka_bootstrap_servers


def load_settings() -> Settings:
    """The settings from the environment; ``SettingsError`` (one line, naming each bad
    variable and the form it expects, never its value) instead of pydantic's report."""
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError(describe(exc, Settings.model_fields)) from None


def settings_warnings(environ: Mapping[str, str] | None = None) -> list[str]:
    """Variables that look like settings but are none (``STATEMENT_ROUTER_LOG_LEVEL``)."""
    return unknown_prefixed(os.environ if environ is None else environ, Settings.model_fields)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return load_settings()
