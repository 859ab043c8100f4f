"""Scraping a real ``/metrics`` over HTTP and reading it back, as Prometheus would."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

SeriesKey = tuple[str, frozenset[tuple[str, str]]]


@dataclass(frozen=True)
class Scrape:
    """One scrape: every sample by (series name, labels), and the raw text."""

    samples: Mapping[SeriesKey, float]
    text: str

    def value(self, name: str, **labels: str) -> float:
        """The sample's value; 0 for a series not exposed (yet), as Prometheus' rate sees it."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def label_names(self) -> set[str]:
        return {label for _, labels in self.samples for label, _ in labels}


def parse(text: str) -> Scrape:
    samples: dict[SeriesKey, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return Scrape(samples, text)


async def scrape(url: str) -> Scrape:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def moved(before: Scrape, after: Scrape, name: str, **labels: str) -> float:
    """How much a series moved between two scrapes."""
    return after.value(name, **labels) - before.value(name, **labels)
