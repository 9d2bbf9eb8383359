"""A whole render stack for fault tests and the reliability bench: Redis, SeaweedFS, a job
database (PostgreSQL in the fault tests, as in production) and Celery workers (from
:mod:`tests.services`), plus an audit of what became of the jobs in the job table, the bucket
and the worker logs."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.services import (
    CeleryWorker,
    RedisServer,
    SeaweedS3,
    ServiceError,
    start_celery_worker,
    wait_for,
)

__all__ = ["FAULT_SETTINGS", "Audit", "RenderStack"]

# Worker settings for fault runs: short leases so lost jobs come back within seconds, and a
# hard time limit long enough that Redis's own re-delivery (2 × 60 s) never does it first.
FAULT_SETTINGS: dict[str, str] = {
    "task_time_limit": "60", "task_soft_time_limit": "50", "job_lease": "2",
    "queued_lease": "3", "reconcile_interval": "0.5", "max_attempts": "3",
    "storage_retries": "5",
}


@dataclass
class Audit:
    """What became of a set of jobs, from the job table, the bucket and the worker logs."""

    sent: int
    succeeded: list[str]
    failed: list[str]
    lost: list[str]  # still queued or running, or gone from the table
    duplicated: list[str]  # logged as succeeded more than once, or more objects than outputs
    missing_objects: list[str]  # succeeded, but an output is not in the bucket
    orphans: list[str]  # objects of jobs that did not succeed, or of no job at all
    attempts: dict[str, int]

    @property
    def clean(self) -> bool:
        return not (self.lost or self.duplicated or self.missing_objects or self.orphans)

    def summary(self) -> str:
        return (f"{self.sent} sent, {len(self.succeeded)} succeeded, {len(self.failed)} "
                f"failed, {len(self.lost)} lost, {len(self.duplicated)} duplicated, "
                f"{len(self.missing_objects)} without objects, {len(self.orphans)} orphan "
                f"objects, attempts ≤ {max(self.attempts.values(), default=0)}")


class RenderStack:
    """The distributed shape on one machine: a job table, Redis, a private bucket in
    SeaweedFS and Celery workers, driven the way the API drives it (create the row, then send
    the id). For the fault tests and ``bench/reliability.py``.

    ``database_url``: the job table's database, migrated here; None: SQLite in ``folder``.
    """

    def __init__(self, redis: RedisServer, s3: SeaweedS3, folder: Path, *, bucket: str,
                 settings: Mapping[str, str] | None = None,
                 database_url: str | None = None) -> None:
        from celery import Celery

        from workers.celery_app import celery_config
        from workers.db import get_database
        from workers.settings import Settings

        self.redis, self.s3, self.folder, self.bucket = redis, s3, folder, bucket
        self.settings = {**FAULT_SETTINGS, **(settings or {})}
        folder.mkdir(parents=True, exist_ok=True)
        self.database = get_database(database_url or f"sqlite:///{folder / 'jobs.db'}")
        self.database.migrate()
        self.producer = Celery("spec2fractal-test-producer", set_as_current=False)
        self.producer.config_from_object(celery_config(Settings(
            broker_url=redis.url(), task_time_limit=int(self.settings["task_time_limit"]))))
        self.workers: list[CeleryWorker] = []
        self.on_worker: Callable[[CeleryWorker], None] = lambda worker: None

    def env(self, **overrides: str) -> dict[str, str]:
        settings = {**self.settings, **overrides}
        return {
            "SPEC2FRACTAL_BROKER_URL": self.redis.url(),
            "SPEC2FRACTAL_DATABASE_URL": self.database.url,
            "SPEC2FRACTAL_STORAGE_URL": f"s3://{self.bucket}",
            "SPEC2FRACTAL_S3_ENDPOINT_URL": self.s3.endpoint_url,
            "SPEC2FRACTAL_DATA_DIR": str(self.folder / "data"),
            **{f"SPEC2FRACTAL_{name.upper()}": value for name, value in settings.items()},
            **self.s3.aws_env,
        }

    def start_worker(self, name: str = "worker", *, include: Sequence[str] = (),
                     **overrides: str) -> CeleryWorker:
        worker = start_celery_worker(self.env(**overrides), self.folder / "logs",
                                     name=f"{name}{len(self.workers)}", include=include)
        self.workers.append(worker)
        self.on_worker(worker)
        return worker

    def put_input(self, data: bytes) -> str:
        """A new job's id, its input image stored under it: what POST /generate does first
        for an image job (pass the id to :meth:`submit` as ``stored_input``)."""
        from botocore.exceptions import ClientError

        from workers.db import jobs as job_store
        from workers.runner import input_key

        job_id = job_store.new_job_id()
        client = self.s3.client()
        with contextlib.suppress(ClientError):  # the workers made it already
            client.create_bucket(Bucket=self.bucket)
        client.put_object(Bucket=self.bucket, Key=input_key(job_id), Body=data,
                          ContentType="image/png")
        return job_id

    def submit(self, request: Mapping[str, Any], *, model: str = "fractal",
               stored_input: str | None = None) -> str:
        """A job as POST /generate makes one: its row (for ``stored_input``, the id that
        :meth:`put_input` gave, after its input), then its id to the broker."""
        from workers.db import jobs as job_store
        from workers.runner import input_key

        job_id = stored_input or job_store.new_job_id()
        with self.database.session() as session:
            job_store.create_job(session, job_id=job_id, model=model, request=dict(request),
                                 input_key=input_key(job_id) if stored_input else None)
        self.send(job_id)
        return job_id

    def send(self, job_id: str, queue: str = "renders") -> None:
        from workers.task_queue import RENDER_TASK

        self.producer.send_task(RENDER_TASK, args=[job_id], queue=queue)

    def jobs(self, job_ids: Sequence[str]) -> list[Any]:
        from workers.db import Job

        with self.database.session() as session:
            found = {job.id: job for job in session.query(Job).filter(Job.id.in_(job_ids))}
        return [found.get(job_id) for job_id in job_ids]

    def job(self, job_id: str) -> Any:
        return self.jobs([job_id])[0]

    def wait(self, job_ids: Sequence[str], *, timeout: float,
             statuses: Sequence[str] = ("succeeded", "failed", "cancelled")) -> list[Any]:
        """The jobs, once every one is in ``statuses``; ServiceError after ``timeout``."""
        wanted = set(statuses)

        def done() -> list[Any] | None:
            jobs = self.jobs(job_ids)
            return jobs if all(job is not None and job.status in wanted for job in jobs) \
                else None

        try:
            return wait_for(done, timeout=timeout, interval=0.1,
                            what=f"{len(job_ids)} jobs to be {'/'.join(sorted(wanted))}")
        except ServiceError as exc:
            states = [f"{job.id[:8]}:{job.status}/{job.attempts}" if job else "missing"
                      for job in self.jobs(job_ids)]
            raise ServiceError(f"{exc}\njobs: {' '.join(states)}") from None

    def wait_for_progress(self, job_ids: Sequence[str], low: int, high: int,
                          timeout: float = 30) -> Any:
        """The first job seen running with ``low <= progress_step <= high`` (mid-render)."""
        from workers.db import Job, JobStatus

        def seen() -> Any:
            with self.database.session() as session:
                return session.query(Job).filter(
                    Job.id.in_(job_ids), Job.status == JobStatus.RUNNING,
                    Job.progress_step >= low, Job.progress_step <= high).first()

        return wait_for(seen, timeout=timeout, interval=0.005,
                        what=f"a job to be rendering, at step {low}..{high}")

    def objects(self) -> list[str]:
        """Every key in the stack's bucket."""
        return self.s3.keys(self.bucket)

    def completions(self) -> dict[str, int]:
        """How many times each job was logged as finished, over every worker's log."""
        import re

        counts: dict[str, int] = {}
        for worker in self.workers:
            for job_id in re.findall(r"\bjob ([0-9a-f]{32}) (?:succeeded|failed)\b",
                                     worker.log()):
                counts[job_id] = counts.get(job_id, 0) + 1
        return counts

    def audit(self, job_ids: Sequence[str]) -> Audit:
        jobs = self.jobs(job_ids)
        keys = self.objects()
        completions = self.completions()
        by_job: dict[str, set[str]] = {}
        orphans = []
        for key in keys:
            parts = key.split("/")
            if len(parts) == 3 and parts[0] == "renders" and parts[1] in job_ids:
                by_job.setdefault(parts[1], set()).add(key)
            elif not (len(parts) == 2 and parts[0] == "inputs"
                      and parts[1].removesuffix(".png") in job_ids):  # a job's own input
                orphans.append(key)
        audit = Audit(sent=len(job_ids), succeeded=[], failed=[], lost=[], duplicated=[],
                      missing_objects=[], orphans=orphans, attempts={})
        for job_id, job in zip(job_ids, jobs, strict=True):
            if job is None or job.status in ("queued", "running"):
                audit.lost.append(job_id)
                continue
            audit.attempts[job_id] = job.attempts
            stored = by_job.get(job_id, set())
            if job.status == "succeeded":
                audit.succeeded.append(job_id)
                expected = {key for output in job.outputs
                            for key in (output["key"], output["record_key"],
                                        output.get("thumbnail_key"))
                            if key is not None}
                if not expected or not expected <= stored:
                    audit.missing_objects.append(job_id)
                if stored - expected or completions.get(job_id, 0) > 1:
                    audit.duplicated.append(job_id)
            else:
                audit.failed.append(job_id)
                audit.orphans.extend(sorted(stored))
        return audit

    def close(self) -> None:
        for worker in self.workers:
            worker.stop(grace=5)
        self.producer.close()


