"""Prometheus metrics: job figures read from the database at scrape time (so every API
replica reports the same truth), plus HTTP counters kept by a middleware."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from sqlalchemy import func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.jobview import utc
from workers.db import Database, Job, JobStatus

__all__ = ["HttpMetrics", "JobCollector", "build_registry"]

logger = logging.getLogger(__name__)

DURATION_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, float("inf"))
DURATION_WINDOW = 1000  # finished jobs the duration histogram looks at, newest first
FINAL = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class JobCollector:
    def __init__(self, database: Database) -> None:
        self.database = database

    def describe(self) -> list[Metric]:
        # Without this the registry calls collect() at registration: a query at import time.
        return []

    def collect(self) -> Iterator[Metric]:
        try:
            with self.database.session() as session:
                counts = dict(session.execute(
                    select(Job.status, func.count()).group_by(Job.status)).all())
                images = session.scalar(
                    select(func.coalesce(func.sum(func.json_array_length(Job.outputs)), 0))
                    .where(Job.status == JobStatus.SUCCEEDED)) or 0
                spans = session.execute(
                    select(Job.created_at, Job.finished_at)
                    .where(Job.status.in_(FINAL), Job.finished_at.is_not(None))
                    .order_by(Job.finished_at.desc()).limit(DURATION_WINDOW)).all()
        except Exception as exc:  # a scrape must not fail because the database is down
            logger.warning("metrics: database unreadable: %s", exc)
            yield GaugeMetricFamily("spec2fractal_database_up", "Job database readable.", 0)
            return
        yield GaugeMetricFamily("spec2fractal_database_up", "Job database readable.", 1)
        yield GaugeMetricFamily("spec2fractal_queue_depth", "Jobs waiting for a worker.",
                                counts.get(JobStatus.QUEUED, 0))
        yield GaugeMetricFamily("spec2fractal_jobs_running", "Jobs being rendered.",
                                counts.get(JobStatus.RUNNING, 0))
        finished = CounterMetricFamily("spec2fractal_jobs_finished",
                                       "Jobs by final status.", labels=["status"])
        for status in FINAL:
            finished.add_metric([status.value], counts.get(status, 0))
        yield finished
        yield CounterMetricFamily("spec2fractal_job_failures", "Jobs that failed.",
                                  counts.get(JobStatus.FAILED, 0))
        yield CounterMetricFamily("spec2fractal_images_rendered",
                                  "Images in succeeded jobs.", int(images))
        yield self._durations(spans)

    @staticmethod
    def _durations(spans: list) -> HistogramMetricFamily:  # type: ignore[type-arg]
        seconds = [(utc(end) - utc(start)).total_seconds()  # type: ignore[operator]
                   for start, end in spans]
        buckets = [(("+Inf" if bound == float("inf") else f"{bound:g}"),
                    sum(1 for value in seconds if value <= bound)) for bound in DURATION_BUCKETS]
        return HistogramMetricFamily(
            "spec2fractal_job_duration_seconds",
            f"Created to finished, over the latest {DURATION_WINDOW} finished jobs.",
            buckets=buckets, sum_value=sum(seconds))


def build_registry(database: Database, presence_ttl: float = 30.0
                   ) -> tuple[CollectorRegistry, Counter, Histogram]:
    """A registry per app, so several apps in one process (tests) do not collide."""
    from api.model_metrics import ModelCollector

    registry = CollectorRegistry(auto_describe=True)
    registry.register(JobCollector(database))
    registry.register(ModelCollector(database, presence_ttl))
    requests = Counter("spec2fractal_http_requests", "HTTP requests.",
                       ["method", "route", "status"], registry=registry)
    latency = Histogram("spec2fractal_http_request_duration_seconds",
                        "HTTP request latency (streams: until they end).",
                        ["method", "route"], registry=registry)
    return registry, requests, latency


class HttpMetrics:
    """Pure ASGI (not BaseHTTPMiddleware) so event streams pass through untouched."""

    def __init__(self, app: ASGIApp, requests: Counter, latency: Histogram) -> None:
        self.app = app
        self.requests = requests
        self.latency = latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            # The route template, not the path: one series per endpoint, not per job id.
            route = getattr(scope.get("route"), "path", "unmatched")
            self.requests.labels(scope["method"], route, str(status)).inc()
            self.latency.labels(scope["method"], route).observe(time.perf_counter() - started)
