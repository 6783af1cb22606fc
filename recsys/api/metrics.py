"""Prometheus metrics, one registry per app (so several apps in one process never collide).

Under several workers (``recsys serve --workers N``) every worker writes its counters to
files in one directory, named by ``PROMETHEUS_MULTIPROC_DIR``, and a scrape of any worker
adds up all of them (prometheus_client's multiprocess mode): one scrape sees the service.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from recsys.serving import ImpressionLog

METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _ModelInfo(Collector):
    """``recsys_model_info{version="..."} 1`` for the version serving now, read at scrape
    time so it can never disagree with what the recommender serves."""

    def __init__(self, version: Callable[[], str | None]) -> None:
        self._version = version

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "recsys_model_info",
            'The model version serving feeds (version="none" before the first is published).',
            labels=["version"],
        )
        try:
            version = self._version()
        except Exception:
            version = None
        family.add_metric([version or "none"], 1.0)
        yield family


class ApiMetrics:
    def __init__(self, model_version: Callable[[], str | None]) -> None:
        self.registry = CollectorRegistry()
        self.request_seconds = Histogram(
            "recsys_http_request_duration_seconds",
            "HTTP request latency by route template, method and status.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.feed_items = Counter(
            "recsys_feed_items",
            "Items served in feeds, by their strongest candidate source (the source mix).",
            ["source"],
            registry=self.registry,
        )
        self.feed_pages = Counter(
            "recsys_feed_pages",
            "Feed pages served; degraded=true means popularity only (vector index unavailable).",
            ["degraded"],
            registry=self.registry,
        )
        self.events = Counter(
            "recsys_events_ingested",
            "Events received through the API, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.model_swaps = Counter(
            "recsys_model_swaps",
            "Hot swaps to a newly published model version.",
            registry=self.registry,
        )
        self.impressions = Counter(
            "recsys_impressions",
            "Impressions (items shown) by outcome: written to the store, or dropped because "
            "the queue in front of the store was full or the store failed at shutdown.",
            ["outcome"],
            registry=self.registry,
        )
        self.model_info = _ModelInfo(model_version)
        self.registry.register(self.model_info)

    def exposition(self) -> bytes:
        """The Prometheus text of this process, or of every worker when they share a
        metrics directory (the model version is the answering worker's)."""
        if not os.environ.get(METRICS_DIR_ENV):
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        registry.register(self.model_info)
        return generate_latest(registry)

    def follow_impressions(self, log: ImpressionLog | None) -> None:
        """Count what the recommender's impression log writes and drops."""
        if log is None:
            return
        log.on_written = self.impressions.labels("written").inc
        log.on_dropped = self.impressions.labels("dropped").inc

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.request_seconds.labels(method, route, str(status)).observe(seconds)

    def observe_feed(self, primary_sources: Iterable[str], degraded: bool) -> None:
        self.feed_pages.labels("true" if degraded else "false").inc()
        for source in primary_sources:
            self.feed_items.labels(source).inc()
