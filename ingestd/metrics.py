"""Prometheus metrics: API traffic measured where requests leave, job counts read from the queue when scraped."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import httpx
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from . import queue as q
from .client import POOL_SIZE, StreamClient
from .config import ApiConfig

if TYPE_CHECKING:
    from .notify import Outcome, Target
    from .service import Service

# Parts are up to 200 MB: seconds to many minutes.
PART_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
REQUEST_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

_MEDIA_ID = re.compile(r"/media/[^/]+")
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/\d+")


def endpoint_of(method: str, path: str) -> str:
    """``POST /media/{id}/part`` rather than one label per media id."""
    path = path.split("?", 1)[0]
    path = path[path.find("/media"):] if "/media" in path else path
    if path not in ("/media", "/media/create", "/media/cost"):
        path = _MEDIA_ID.sub("/media/{id}", path)
    return f"{method} {path}"


def error_class(status: int | None) -> str | None:
    """How an answer failed, in the terms the retry logic uses; None for success."""
    if status is None:
        return "connection"
    if status < 400:
        return None
    if status in (401, 403):
        return "auth"
    if status == 429:
        return "rate_limited"
    return "server" if status >= 500 else "rejected"


class Metrics:
    """Everything ``/metrics`` shows for one daemon, in its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.api_seconds = Histogram("ingestd_api_request_seconds", "Time to the API's answer, per endpoint",
                                     ["endpoint"], buckets=REQUEST_BUCKETS, registry=self.registry)
        self.api_errors = Counter("ingestd_api_errors", "API requests that failed, per endpoint and class "
                                  "(connection, auth, rate_limited, rejected, server)",
                                  ["endpoint", "error_class"], registry=self.registry)
        self.part_seconds = Histogram("ingestd_part_upload_seconds", "Time to send one part and have it acknowledged",
                                      buckets=PART_BUCKETS, registry=self.registry)
        self.bytes_uploaded = Counter("ingestd_uploaded_bytes", "File bytes in parts the API acknowledged",
                                      registry=self.registry)
        self.notifications_sent = Counter("ingestd_notifications_sent", "Notifications a target accepted, per target",
                                          ["target"], registry=self.registry)
        self.notifications_failed = Counter("ingestd_notifications_failed", "Tries to notify a target that did not get "
                                            "through (each is retried until it is undeliverable)", ["target"],
                                            registry=self.registry)

    def watch(self, service: Service) -> None:
        """Add the gauges read from the service (queue, breaker, uploads in flight) at scrape time."""
        self.registry.register(_ServiceCollector(service))

    def observe(self, method: str, path: str, status: int | None, seconds: float, headers: httpx.Headers) -> None:
        endpoint = endpoint_of(method, path)
        self.api_seconds.labels(endpoint).observe(seconds)
        failure = error_class(status)
        if failure is not None:
            self.api_errors.labels(endpoint, failure).inc()
        elif endpoint == "POST /media/{id}/part":
            self.part_seconds.observe(seconds)
            match = _CONTENT_RANGE.fullmatch(headers.get("Content-Range", ""))
            if match:
                self.bytes_uploaded.inc(int(match[2]) - int(match[1]) + 1)

    def notification(self, target: Target, outcome: Outcome) -> None:
        (self.notifications_sent if outcome.accepted else self.notifications_failed).labels(target.label).inc()

    def client(self, api: ApiConfig) -> StreamClient:
        """A client like ``StreamClient.from_config`` whose every request is measured."""
        transport = _MeasuredTransport(self, verify=api.verify_tls,
                                       limits=httpx.Limits(max_connections=POOL_SIZE, max_keepalive_connections=POOL_SIZE))
        return StreamClient.from_config(api, transport=transport)


class _MeasuredTransport(httpx.HTTPTransport):
    def __init__(self, metrics: Metrics, **kwargs) -> None:
        super().__init__(**kwargs)
        self._metrics = metrics

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        started = time.monotonic()
        try:
            response = super().handle_request(request)
        except httpx.TransportError:
            self._metrics.observe(request.method, request.url.path, None, time.monotonic() - started, request.headers)
            raise
        self._metrics.observe(request.method, request.url.path, response.status_code, time.monotonic() - started,
                              request.headers)
        return response


class _ServiceCollector(Collector):
    def __init__(self, service: Service):
        self.service = service

    def collect(self) -> Iterator[Metric]:
        service = self.service
        queue = service.queue
        info = GaugeMetricFamily("ingestd_node_info", "Always 1: this daemon's node_name and its queue's kind",
                                 labels=["node", "queue"])
        info.add_metric([service.config.node_name, queue.store.kind], 1)
        yield info
        jobs = GaugeMetricFamily("ingestd_jobs", "Jobs per state", labels=["state"])
        for state, n in queue.counts().items():
            jobs.add_metric([state], n)
        yield jobs
        oldest = queue.oldest_queued_at()
        yield GaugeMetricFamily("ingestd_oldest_queued_age_seconds", "Age of the oldest queued job (0: none queued)",
                                value=max(0.0, queue.now() - oldest) if oldest else 0.0)
        last = queue.last_success_at()
        yield GaugeMetricFamily("ingestd_last_success_timestamp_seconds", "When a job last finished done (0: never)",
                                value=last or 0.0)
        yield CounterMetricFamily("ingestd_retries", "Job attempts put off after a transient API error",
                                  value=queue.retry_count())
        running = GaugeMetricFamily("ingestd_jobs_running_by_node", "Jobs being worked on, per node holding them",
                                    labels=["node"])
        for node, n in sorted(queue.running_by_node().items()):
            running.add_metric([node], n)
        yield running
        yield GaugeMetricFamily("ingestd_uploads_in_progress", "Jobs sending parts right now",
                                value=len(service.progress.snapshot()))
        yield GaugeMetricFamily("ingestd_api_paused", "1 while the API is unreachable and uploads wait",
                                value=1.0 if service.breaker.is_open else 0.0)
        yield GaugeMetricFamily("ingestd_main_loop_last_tick_age_seconds", "Seconds since the main loop last ran",
                                value=service.seconds_since_tick())
        pending = GaugeMetricFamily("ingestd_notifications_pending", "Notifications waiting to be sent, per target",
                                    labels=["target"])
        undeliverable = GaugeMetricFamily("ingestd_notifications_undeliverable", "Notifications given up on after a "
                                          "day of tries, per target (`ingestd notify retry`)", labels=["target"])
        for label, counts in queue.notification_counts().items():
            pending.add_metric([label], counts[q.PENDING])
            undeliverable.add_metric([label], counts[q.UNDELIVERABLE])
        yield pending
        yield undeliverable

