"""The end-to-end benchmark's p99 per minute: the figure issue 18 reads to tell whether
latency grows over a run, so its buckets must be the run's minutes and no more."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def benchmark() -> ModuleType:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return importlib.import_module("end_to_end_latency")
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_a_statement_sent_on_the_last_boundary_counts_in_the_last_minute() -> None:
    start = 1_000.0
    samples = [(start + second, 0.010) for second in range(600)] + [(start + 600.0, 0.500)]

    minutes = benchmark().per_minute(samples, 600.0)

    assert [m["minute"] for m in minutes] == list(range(1, 11))
    assert [m["count"] for m in minutes] == [60] * 9 + [61]
    assert minutes[-1]["max_ms"] == 500.0


def test_a_short_run_has_its_partial_minute() -> None:
    samples = [(0.0, 0.001), (59.0, 0.001), (60.0, 0.002), (90.0, 0.003)]

    minutes = benchmark().per_minute(samples, 90.0)

    assert [(m["minute"], m["count"]) for m in minutes] == [(1, 2), (2, 2)]
