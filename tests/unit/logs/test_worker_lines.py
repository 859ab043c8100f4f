"""A real delivery's log lines: one JSON object per line, with the statement's fields.

The adapter worker runs against the session's embedded broker and delivers to a real
webhook receiver (aiohttp, signatures verified) with the real ``configure_logging("json")``
writing to the captured stderr. A deliverer wrapper logs a line of its own without any
field, which must still carry the statement's fields: that is the contextvars binding the
worker does per statement, which the deliverers (webhook, SFTP) rely on.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import structlog

from adapters.delivery import Deliverer, DeliveryResult, PartnerEndpoint
from adapters.worker import ConnectorStats, default_deliverer, run_adapters
from config.settings import Settings
from events.schemas import StatementPartnerDelivery
from events.topics import Topics
from routing.broker import EmbeddedBroker
from routing.entrypoints.bootstrap import run_adapters_role
from tests.eventually import eventually
from tests.integration.worker.conftest import SHORT, produce, webhook
from tests.integration.worker.receiver import Reply, WebhookReceiver
from tests.unit.delivery.factories import make_delivery

from .conftest import Configure
from .helpers import clear_ibans, json_lines

MASKED = "FR76 **** **** **** **** ***0 189"
partner_log = structlog.get_logger("tests.partner")


class _Narrating:
    """The real webhook deliverer, plus one field-less log line per attempt."""

    def __init__(self, inner: Deliverer) -> None:
        self._inner = inner

    async def deliver(self, delivery: StatementPartnerDelivery) -> DeliveryResult:
        partner_log.info("partner_call")
        return await self._inner.deliver(delivery)

    async def close(self) -> None:
        await self._inner.close()


def _narrating(connector_id: str, endpoint: PartnerEndpoint) -> Deliverer:
    return _Narrating(default_deliverer(connector_id, endpoint))


async def test_delivery_lines_are_json_with_statement_connector_and_cabinet(
    kafka_broker: EmbeddedBroker,
    topics: Topics,
    receiver: WebhookReceiver,
    configured: Configure,
    capsys: pytest.CaptureFixture[str],
) -> None:
    configured("json")
    acd = receiver.partner("acd")
    acd.script(Reply(503))  # one retry first: its line must carry the fields too
    deliveries = [make_delivery("st-log-1", cabinet_id="cab-7"),
                  make_delivery("st-log-2", cabinet_id="cab-8")]
    await produce(kafka_broker.bootstrap_servers, topics, "acd", deliveries)

    stop = asyncio.Event()
    started = asyncio.Event()
    stats: dict[str, ConnectorStats] = {}
    settings, bootstrap = Settings(), kafka_broker.bootstrap_servers
    task = asyncio.create_task(run_adapters_role(settings, bootstrap, lambda producer: run_adapters(
        settings, topics, {"acd": webhook(acd)}, stop, producer=producer,
        bootstrap_servers=bootstrap, schedule=SHORT, stats=stats, started=started,
        deliverer_factory=_narrating, session_timeout_ms=2_000)))
    try:
        await eventually(lambda: len(receiver.delivered("acd")) == 2 or task.done(),
                         what="both deliveries")
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
    assert stats["acd"].delivered == 2

    out = capsys.readouterr()
    lines = json_lines(out.err)  # every line is one JSON object, or this fails
    events: dict[tuple[str, Any], dict[str, Any]] = {
        (line["event"], line.get("statement_id")): line for line in lines
    }
    for sid, cabinet in (("st-log-1", "cab-7"), ("st-log-2", "cab-8")):
        delivered = events[("statement_delivered", sid)]
        assert (delivered["connector_id"], delivered["cabinet_id"]) == ("acd", cabinet)
        assert delivered["iban"] == MASKED and delivered["level"] == "info"
        narrated = events[("partner_call", sid)]
        assert (narrated["connector_id"], narrated["cabinet_id"]) == ("acd", cabinet)
    retrying = events[("delivery_retrying", "st-log-1")]
    assert (retrying["connector_id"], retrying["cabinet_id"], retrying["attempt"]) == (
        "acd", "cab-7", 1)
    # Lines about the worker, not a statement, carry no stale statement fields.
    stopped = [line for line in lines if line["event"] == "adapter_stopped"]
    assert stopped and all("statement_id" not in line for line in stopped)
    # Neither the IBAN in clear nor the statement's content anywhere in the output.
    assert clear_ibans(out.err + out.out) == []
    for delivery in deliveries:
        assert delivery.content_b64 not in out.err
