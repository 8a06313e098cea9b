"""Prometheus metrics of URL extraction (opt-in: services call ``UrlKnowledge.instrument``).

======================================  =======  ==================================
metric                                  type     labels
======================================  =======  ==================================
``clickloop_urls_extracted_total``      counter  ``result``: matched, unmatched, invalid
``clickloop_urls_knowledge_info``       gauge    ``version`` (1 for the loaded version)
======================================  =======  ==================================

A rising share of ``unmatched`` means the site changed: time to `clickloop urls learn`.

>>> m = UrlMetrics()
>>> b"clickloop_urls_extracted_total" in m.render()
True
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest


class UrlMetrics:
    """URL extraction counters in one registry (one per service, or a shared one)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.extracted = Counter(
            "clickloop_urls_extracted",
            "URLs turned into fields, by outcome",
            ["result"],
            registry=self.registry,
        )
        self.info = Gauge(
            "clickloop_urls_knowledge_info",
            "The URL knowledge version in use",
            ["version"],
            registry=self.registry,
        )

    def count(self, matched: int, unmatched: int, invalid: int) -> None:
        if matched:
            self.extracted.labels("matched").inc(matched)
        if unmatched:
            self.extracted.labels("unmatched").inc(unmatched)
        if invalid:
            self.extracted.labels("invalid").inc(invalid)

    def render(self) -> bytes:
        return generate_latest(self.registry)
