"""Configuration that cannot run what was asked of it.

A value each setting accepts on its own can still leave a role nothing to run on: no
Kafka address, or exactly-once asked of the embedded broker that has no transactions.
Those are found once, in the composition root (``routing.entrypoints.bootstrap``), before anything
connects, and raised as ``ConfigError``: neither a refusal of the domain nor an outage of
the broker. The CLI maps it to an exit code in its one place for that
(``routing.entrypoints.cli.common.run``).
"""

from __future__ import annotations


class ConfigError(Exception):
    """The configuration cannot run this role; ``message`` says what to change, in one line."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
