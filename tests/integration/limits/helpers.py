"""Records at, just over and far over the size rule, and the malformed ones of 0.9 MB."""

from __future__ import annotations

from events.limits import MAX_STATEMENT_BYTES
from routing.metrics import REGISTRY

AT_LIMIT = b"L" * MAX_STATEMENT_BYTES
ONE_OVER = b"O" * (MAX_STATEMENT_BYTES + 1)
TWENTY_MB = 20_000_000


def not_json(size: int = 900_000) -> bytes:
    """A 0.9 MB value that is not JSON at all."""
    return b"x" * size


def hostile_schema(size: int = 900_000) -> bytes:
    """A 0.9 MB JSON object whose ``schema`` is a string of backslashes.

    Quoted whole in the reason (``repr`` doubles each backslash, JSON doubles it again),
    its invalid record would have been 1.8 MB: more than aiokafka's default 1 MiB
    ``max_request_size``, which made the consumers retry that batch for ever.
    """
    head, tail = b'{"schema":"', b'"}'
    return head + b"\\\\" * ((size - len(head) - len(tail)) // 2) + tail


MALFORMED = {"not-json": not_json, "hostile-schema": hostile_schema}


def parked(component: str, how: str) -> float:
    """``statement_router_parked_total{component, how}`` in this process."""
    value = REGISTRY.get_sample_value(
        "statement_router_parked_total", {"component": component, "how": how}
    )
    return value or 0.0
