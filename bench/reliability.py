"""Faults while jobs flow: how many jobs are lost or duplicated?

Starts the distributed shape on this machine with real processes, as the fault tests do
(tests/services.py): redis-server (append-only file, fsync always), SeaweedFS's S3 gateway,
a SQLite job table and Celery workers. It sends N jobs as a steady stream, as the API does
(the job's row, then its id to Redis), and meanwhile injects K faults of each kind:

- worker SIGKILL: a worker dies mid-render (as by the OOM killer) and is started again;
- Redis crash: redis-server is SIGKILLed and started again on its files;
- storage outage: SeaweedFS is SIGKILLed and started again (about 3 s without storage).

Then it waits for every job to end and audits the job table, the bucket and the worker logs:
a job is lost if it never ended, duplicated if it was finished twice or has objects beyond
its one set, and "without objects" if it succeeded but an output is missing.

Run: python bench/reliability.py [--jobs 60] [--faults 3] [--workers 2] [--size 1536]
Exit status 1 if any job was lost, duplicated, or stored wrong.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.render_stack import RenderStack
from tests.services import (
    CeleryWorker,
    ServiceError,
    start_redis,
    start_seaweedfs,
)

logger = logging.getLogger("reliability")


@dataclass
class Run:
    stack: RenderStack
    size: int
    accepted: list[str] = field(default_factory=list)
    refused: int = 0  # sends that failed (Redis down): the API answers 503, the client retries
    faults: dict[str, int] = field(default_factory=lambda: {
        "worker SIGKILL": 0, "Redis crash": 0, "storage outage": 0})
    mid_render: int = 0
    outages: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def submit_stream(run: Run, count: int, interval: float) -> None:
    """``count`` accepted jobs, one every ``interval`` s. A send that fails is answered as
    the API answers it (the job fails with "could not be queued", the client gets 503) and
    the client sends its request again a moment later."""
    from workers.db import JobStatus
    from workers.db import jobs as job_store

    stack, seed = run.stack, 0
    while len(run.accepted) < count:
        seed += 1
        job_id = job_store.new_job_id()
        with stack.database.session() as session:
            job_store.create_job(session, job_id=job_id, model="fractal", request={
                "prompt": "a lake at dusk", "width": run.size, "height": run.size,
                "seed": seed})
        try:
            stack.send(job_id)
        except Exception as exc:
            with stack.database.session() as session:
                job_store.finish_job(session, job_id, JobStatus.FAILED,
                                     error="the job could not be queued")
            with run.lock:
                run.refused += 1
            logger.info("send refused (%s); the client tries again", type(exc).__name__)
            time.sleep(0.5)
            continue
        with run.lock:
            run.accepted.append(job_id)
        time.sleep(interval)


def kill_a_worker(run: Run, workers: list[CeleryWorker]) -> None:
    stack = run.stack
    with run.lock:
        pending = list(run.accepted)
    try:
        stack.wait_for_progress(pending, 1, 9, timeout=10)
        run.mid_render += 1
    except ServiceError:
        logger.info("no job mid-render within 10 s; killing a worker anyway")
    index = random.randrange(len(workers))
    workers[index].kill()
    time.sleep(0.5)
    workers[index] = stack.start_worker()


def crash_redis(run: Run) -> None:
    run.stack.redis.crash()
    time.sleep(1.0)
    run.stack.redis.restart()


def storage_outage(run: Run) -> None:
    started = time.monotonic()
    run.stack.s3.stop()
    run.stack.s3.restart()
    run.outages.append(time.monotonic() - started)


def inject(run: Run, workers: list[CeleryWorker], rounds: int, pause: float) -> None:
    faults = [("worker SIGKILL", lambda: kill_a_worker(run, workers)),
              ("Redis crash", lambda: crash_redis(run)),
              ("storage outage", lambda: storage_outage(run))]
    for number in range(1, rounds + 1):
        random.shuffle(faults)
        for name, fault in faults:
            time.sleep(pause)
            logger.info("round %d: %s", number, name)
            fault()
            run.faults[name] += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=60, help="accepted jobs to send")
    parser.add_argument("--faults", type=int, default=3, help="faults of each kind")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--size", type=int, default=1536,
                        help="image side in pixels (1536: about a second per render)")
    parser.add_argument("--pause", type=float, default=3.0, help="seconds between faults")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the schedule")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        datefmt="%H:%M:%S")
    for noisy in ("botocore", "urllib3", "kombu", "celery", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    random.seed(args.seed)

    with tempfile.TemporaryDirectory(prefix="reliability-") as tmp:
        folder = Path(tmp)
        redis = start_redis(folder / "redis", appendonly=True, appendfsync="always")
        s3 = start_seaweedfs(folder / "seaweedfs")
        stack = RenderStack(redis, s3, folder / "stack", bucket="reliability")
        try:
            return measure(stack, args)
        finally:
            stack.close()
            s3.stop()
            redis.stop()


def measure(stack: RenderStack, args: argparse.Namespace) -> int:
    run = Run(stack, args.size)
    workers = [stack.start_worker() for _ in range(args.workers)]
    began = time.monotonic()
    duration = args.faults * 3 * (args.pause + 2)  # about how long the faults take
    submitter = threading.Thread(target=submit_stream, daemon=True,
                                 args=(run, args.jobs, duration / args.jobs))
    submitter.start()
    inject(run, workers, args.faults, args.pause)
    submitter.join()
    logger.info("all %d jobs sent; waiting for them to end", len(run.accepted))
    try:
        stack.wait(run.accepted, timeout=300)
    except ServiceError as exc:
        logger.error("%s", exc)
    wall = time.monotonic() - began
    audit = stack.audit(run.accepted)
    reruns = sum(attempts > 1 for attempts in audit.attempts.values())
    errors = sorted({job.error for job in stack.jobs(audit.failed) if job and job.error})

    kinds = ", ".join(f"{count} × {name}" for name, count in run.faults.items())
    outage = sum(run.outages) / len(run.outages) if run.outages else 0.0
    rows = [
        ("jobs sent (accepted)", len(run.accepted)),
        ("succeeded", len(audit.succeeded)),
        ("failed", len(audit.failed)),
        ("lost", len(audit.lost)),
        ("duplicated", len(audit.duplicated)),
        ("succeeded without objects", len(audit.missing_objects)),
        ("orphan objects", len(audit.orphans)),
        ("ran a second time", reruns),
        ("most attempts of one job", max(audit.attempts.values(), default=0)),
        ("sends refused (503, client retried)", run.refused),
    ]
    print()
    print(f"{args.workers} workers, {args.size}² renders; faults: {kinds}")
    print(f"worker kills while a job was mid-render: {run.mid_render} of "
          f"{run.faults['worker SIGKILL']}; storage down {outage:.1f} s per outage")
    print()
    print("| outcome | jobs |")
    print("|---|---:|")
    for label, value in rows:
        print(f"| {label} | {value} |")
    print(f"| wall time | {wall:.0f} s |")
    if errors:
        print(f"\nerrors of failed jobs: {errors}")
    faults = sorted(set(run.faults.values()))
    each = faults[0] if len(faults) == 1 else "/".join(map(str, run.faults.values()))
    print(f"\n{len(run.accepted)} jobs sent, {each} faults of each kind, "
          f"{len(audit.lost)} lost, {len(audit.duplicated)} duplicated")
    return 0 if audit.clean else 1


if __name__ == "__main__":
    sys.exit(main())
