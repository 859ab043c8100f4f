"""What the registry can expose, for the catalogue tests: every series name and every
metric's label names (prometheus_client answers neither directly)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

from prometheus_client.metrics_core import Metric

from routing.observability.metrics import METRICS, REGISTRY, LoopCounter, faust_metrics


class Describable(Protocol):
    """A collector that declares its families without collecting (prometheus_client's
    optional ``describe()``)."""

    def describe(self) -> Iterable[Metric]: ...


def _sample_names(name: str, kind: str) -> Iterator[str]:
    """The series names a family exposes in the text format."""
    if kind == "counter":
        yield from (f"{name}_total", f"{name}_created")
    elif kind == "histogram":
        yield from (f"{name}_bucket", f"{name}_count", f"{name}_sum", f"{name}_created")
    elif kind == "summary":
        yield from (name, f"{name}_count", f"{name}_sum", f"{name}_created")
    elif kind == "info":
        yield f"{name}_info"
    else:
        yield name


def exposed_series_names(*extra: Describable) -> set[str]:
    """Every series name ``REGISTRY`` (plus the ``extra`` collectors, by their
    ``describe()``, which does no I/O) can expose, labelled metrics without children
    included: a dashboard may query a series that has not moved yet."""
    names: set[str] = set()
    families = [*REGISTRY.collect(), *(f for c in extra for f in c.describe())]
    for family in families:
        names.update(_sample_names(family.name, family.type))
        names.update(sample.name for sample in family.samples)
    return names


def label_names() -> dict[str, tuple[str, ...]]:
    """Each of our metrics (faust's included) with its label names.

    prometheus_client has no public accessor for a metric's label names, and a labelled
    metric without children collects no sample to read them from; hence the private
    attributes, stable across its releases.
    """
    found: dict[str, tuple[str, ...]] = {}
    for metric in (*METRICS, *faust_metrics()):
        if isinstance(metric, LoopCounter):
            found[metric.name] = metric.labelnames
        else:
            found[metric._name] = tuple(metric._labelnames)
    return found
