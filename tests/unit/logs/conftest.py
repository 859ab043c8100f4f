"""Fixtures of the logging tests: the real ``configure_logging``, undone after each test.

``configure_logging`` replaces structlog's configuration and adds a root handler; a test
that left them behind would change how every later test logs (``capture_logs`` in other
suites mutates the *configured* processor list in place, so a logger cached on our chain
would escape it). The fixture therefore snapshots structlog's configuration and the root
logger, turns off logger caching for the test (caching is a speed-up only: the processors,
renderer and handler are exactly the production ones), and restores everything after.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pytest
import structlog

from routing.observability.logs import configure_logging

Configure = Callable[[str], None]

_CHATTY = ("alembic", "faust", "mode", "aiokafka", "uvicorn.error")


@pytest.fixture
def configured(capsys: pytest.CaptureFixture[str]) -> Iterator[Configure]:
    """``configured("json")`` runs the real ``configure_logging`` writing to the captured
    stderr (its handler and logger factory take ``sys.stderr`` when called)."""
    del capsys  # requested so that sys.stderr is the capture when configure_logging runs
    saved = structlog.get_config()
    root = logging.getLogger()
    saved_handlers = list(root.handlers)
    saved_level = root.level
    saved_chatty = {name: logging.getLogger(name).level for name in _CHATTY}

    def configure(fmt: str) -> None:
        configure_logging(fmt, "DEBUG")
        structlog.configure(cache_logger_on_first_use=False)

    try:
        yield configure
    finally:
        structlog.contextvars.clear_contextvars()
        structlog.configure(**saved)
        for handler in [h for h in root.handlers if h not in saved_handlers]:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(saved_level)
        for name, level in saved_chatty.items():
            logging.getLogger(name).setLevel(level)
