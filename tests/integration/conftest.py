"""Fixtures shared by the integration suites.

* ``ops`` (function): the operator API (``tests/integration/ops_api.py``) on the session
  broker and this test's topics.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from events.topics import Topics
from routing.broker import EmbeddedBroker
from tests.integration.ops_api import Ops, operator_api


@pytest.fixture
async def ops(kafka_broker: EmbeddedBroker, topics: Topics, sqlite_url: str) -> AsyncIterator[Ops]:
    async with operator_api(kafka_broker.bootstrap_servers, topics, sqlite_url) as value:
        yield value
