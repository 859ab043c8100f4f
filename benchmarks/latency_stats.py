"""Latency percentiles as every latency benchmark reports them (nearest rank, in ms)."""

from __future__ import annotations

import math


def percentiles(seconds: list[float]) -> dict[str, float | int | None]:
    """Nearest-rank p50/p95/p99 and max of latencies in seconds, in milliseconds."""
    if not seconds:
        return {"count": 0, "p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(seconds)

    def rank(q: float) -> float:
        return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1000, 1)

    return {"count": len(ordered), "p50_ms": rank(0.50), "p95_ms": rank(0.95),
            "p99_ms": rank(0.99), "max_ms": round(ordered[-1] * 1000, 1)}
