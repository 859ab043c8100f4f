"""Reading the adapters' control topic (``<prefix>.adapters.control``): worker states.

The adapters write the topic (``adapters.control``, which says what it carries and why);
the monitor and the operator API only read who runs and who stopped. The reading lives
here, on the Kafka side, so that the monitor (``routing.observability``) needs nothing
from the adapters' package above it.
"""

from __future__ import annotations

import structlog

from events.schemas import AdapterControl
from events.topics import Topics
from events.wire import InvalidEvent, decode
from routing.broker.producer import read_topic

__all__ = ["read_control", "worker_states"]

log = structlog.get_logger("adapters.control")

_READ_TIMEOUT = 30.0


async def read_control(bootstrap_servers: str, topics: Topics) -> list[AdapterControl]:
    """Every readable record of the control topic, in order per partition."""
    found: list[AdapterControl] = []
    topic = topics.adapters_control
    for record in await read_topic(bootstrap_servers, topic, timeout=_READ_TIMEOUT):
        if record.value is None:
            continue
        try:
            found.append(decode(record.value, AdapterControl, where=topic))
        except InvalidEvent as exc:
            log.warning("unreadable_control_record", partition=record.partition,
                        offset=record.offset, error=exc.reason)
    return found


def worker_states(records: list[AdapterControl]) -> dict[str, AdapterControl]:
    """The newest ``worker_state`` per connector."""
    states: dict[str, AdapterControl] = {}
    for record in records:
        if record.kind != "worker_state":
            continue
        old = states.get(record.connector_id)
        if old is None or record.at >= old.at:
            states[record.connector_id] = record
    return states
