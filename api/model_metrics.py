"""Per-model Prometheus metrics (issue #22's routing), read at scrape time from the job
database: queue depth, live workers, model loads (as the live workers announce them) and
render seconds (claimed to finished, over the latest finished jobs)."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from sqlalchemy import select

from api.jobview import utc
from fractal.naming import display_name
from workers.db import Database, Job, JobStatus
from workers.db import presence as presence_store

__all__ = ["ModelCollector"]

logger = logging.getLogger(__name__)

RENDER_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, float("inf"))
RENDER_WINDOW = 1000  # succeeded jobs the render histogram looks at, newest first


class ModelCollector:
    def __init__(self, database: Database, presence_ttl: float) -> None:
        self.database, self.presence_ttl = database, presence_ttl

    def describe(self) -> list[Metric]:
        return []  # no query at registration

    def collect(self) -> Iterator[Metric]:
        try:
            with self.database.session() as session:
                queued = presence_store.queued_by_model(session)
                live = presence_store.live_workers(session, self.presence_ttl)
                spans = session.execute(
                    select(Job.model, Job.started_at, Job.finished_at)
                    .where(Job.status == JobStatus.SUCCEEDED, Job.started_at.is_not(None),
                           Job.finished_at.is_not(None))
                    .order_by(Job.finished_at.desc()).limit(RENDER_WINDOW)).all()
        except Exception as exc:  # JobCollector reports the database as down
            logger.warning("metrics: per-model figures unreadable: %s", exc)
            return
        depth = GaugeMetricFamily("spec2fractal_model_queue_depth",
                                  "Jobs waiting for a worker, per model.", labels=["model"])
        for model, count in sorted(queued.items()):
            depth.add_metric([display_name(model)], count)
        yield depth
        workers: dict[str, int] = defaultdict(int)
        loads: dict[str, int] = defaultdict(int)
        for worker in live:
            for model in worker.models:
                workers[model] += 1
            for model, count in worker.loads.items():
                loads[model] += int(count)
        serving = GaugeMetricFamily("spec2fractal_model_workers",
                                    "Live workers serving the model.", labels=["model"])
        for model, count in sorted(workers.items()):
            serving.add_metric([display_name(model)], count)
        yield serving
        loaded = GaugeMetricFamily("spec2fractal_model_loads",
                                   "Model loads by the live workers since each started "
                                   "(a mixed stream without routing makes many).",
                                   labels=["model"])
        for model, count in sorted(loads.items()):
            loaded.add_metric([display_name(model)], count)
        yield loaded
        yield from self._compiles(live)
        yield self._render_seconds(spans)

    @staticmethod
    def _compiles(live: list[presence_store.LiveWorker]) -> Iterator[Metric]:
        graphs: dict[str, int] = defaultdict(int)
        recompiled: dict[str, int] = defaultdict(int)
        for worker in live:
            for model, speed in worker.speed.items():
                graphs[model] += int(speed.get("compiled_graphs") or 0)
                recompiled[model] += int(speed.get("recompilations") or 0)
        compiled = GaugeMetricFamily(
            "spec2fractal_model_compiled_graphs",
            "Graphs torch.compile made for the model in the live workers that hold it "
            "(SPEC2FRACTAL_COMPILE), warm-up included.", labels=["model"])
        for model, count in sorted(graphs.items()):
            compiled.add_metric([display_name(model)], count)
        yield compiled
        again = GaugeMetricFamily(
            "spec2fractal_model_recompilations",
            "Graphs torch.compile made after the warm-up, in the live workers that hold the "
            "model: requests paid for these (a size not in SPEC2FRACTAL_WARMUP_SIZES, a new "
            "batch size). Should stay flat.", labels=["model"])
        for model, count in sorted(recompiled.items()):
            again.add_metric([display_name(model)], count)
        yield again

    @staticmethod
    def _render_seconds(spans: list) -> HistogramMetricFamily:  # type: ignore[type-arg]
        per_model: dict[str, list[float]] = defaultdict(list)
        for model, start, end in spans:
            per_model[display_name(model)].append(
                (utc(end) - utc(start)).total_seconds())  # type: ignore[operator]
        family = HistogramMetricFamily(
            "spec2fractal_model_render_seconds",
            f"Claimed to finished, per model, over the latest {RENDER_WINDOW} succeeded jobs.",
            labels=["model"])
        for model, seconds in sorted(per_model.items()):
            buckets = [(("+Inf" if bound == float("inf") else f"{bound:g}"),
                        sum(1 for value in seconds if value <= bound))
                       for bound in RENDER_BUCKETS]
            family.add_metric([model], buckets, sum(seconds))
        return family
