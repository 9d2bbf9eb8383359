"""Worker throughput with co-rendering off and on, on the tiny diffusers pipeline.

Offered load ≥ capacity: N jobs are queued at once and one worker (in-process, the same
runner Celery calls) drains them. Then the latency a wait window adds at low load: one job
alone, window 0 against window W. Prints a table; not a test.
Run: python bench/corender.py [--jobs 48] [--steps 8] [--window-ms 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.tiny_models import build_tiny_sd
from workers.db import JobStatus, get_database
from workers.db import jobs as job_store
from workers.model_cache import ModelCache
from workers.partners import claim_partners
from workers.runner import WorkerContext, run_job
from workers.storage.local import LocalStorage


def make_context(folder: Path, name: str, models: ModelCache, max_corender: int,
                 window: float) -> WorkerContext:
    database = get_database(f"sqlite:///{folder / f'{name}.db'}")
    database.migrate()
    return WorkerContext(database=database, storage=LocalStorage(folder / name, secret=b"b"),
                         models=models, max_corender=max_corender, corender_wait=window,
                         stale_after=600)


def queue_jobs(context: WorkerContext, model: str, count: int, steps: int) -> list[str]:
    with context.database.session() as session:
        return [job_store.create_job(session, job_id=job_store.new_job_id(), model=model,
                                     request={"prompt": f"a lake number {k}", "seed": k,
                                              "steps": steps}).id for k in range(count)]


def drain(context: WorkerContext, ids: list[str]) -> float:
    """Run jobs as a worker receives their tasks; partners' tasks find them done."""
    start = time.perf_counter()
    for job_id in ids:
        run_job(job_id, context)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=48)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--window-ms", type=float, default=20)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="s2f-corender-"))
    model = str(build_tiny_sd(folder / "tiny-sd", folder))
    models = ModelCache(1)
    models.get(model)

    contexts = {size: make_context(folder, f"load-{size}", models, size, 0.0)
                for size in (1, 4, 8)}
    for context in contexts.values():
        drain(context, queue_jobs(context, model, 8, args.steps))  # warm-up
    # Rounds interleave the three settings, so a busy moment on the machine hits all alike.
    rates: dict[int, list[float]] = {size: [] for size in contexts}
    for _ in range(args.rounds):
        for size, context in contexts.items():
            ids = queue_jobs(context, model, args.jobs, args.steps)
            rates[size].append(args.jobs / drain(context, ids))
    rows = [(size, statistics.median(values)) for size, values in rates.items()]
    base = rows[0][1]
    print(f"tiny SD 64x64, {args.steps} steps, {args.jobs} jobs queued at once, one worker; "
          f"median of {args.rounds} rounds")
    print(f"{'max batch':>9}  {'images/s':>9}  {'speed-up':>8}")
    for max_corender, rate in rows:
        print(f"{max_corender:>9}  {rate:>9.2f}  {rate / base:>7.2f}x")

    window = args.window_ms / 1000
    labels = {0.0: "window 0", window: f"window {args.window_ms:g} ms"}
    latency_contexts = {wait: make_context(folder, f"latency-{wait}", models, 4, wait)
                        for wait in labels}
    samples: dict[float, list[float]] = {wait: [] for wait in labels}
    for _ in range(args.repeat):  # alternating, so both meet the same background
        for wait, context in latency_contexts.items():
            (job_id,) = queue_jobs(context, model, 1, args.steps)
            start = time.perf_counter()
            run_job(job_id, context)
            samples[wait].append(time.perf_counter() - start)
    latencies = {labels[wait]: statistics.median(values) for wait, values in samples.items()}
    print(f"\nlow load (one job at a time), median over {args.repeat}:")
    for label, seconds in latencies.items():
        print(f"  {label:<16} {seconds * 1000:8.1f} ms")
    without, with_window = latencies.values()
    added = with_window - without
    print(f"  added by the window: {added * 1000:.1f} ms (window {args.window_ms:g} ms; "
          "the difference of two noisy medians)")
    # The wait itself, timed where it happens: a lone job looking for partners.
    context = latency_contexts[window]
    waits = []
    for _ in range(args.repeat):
        (job_id,) = queue_jobs(context, model, 1, args.steps)
        with context.database.session() as session:
            job = job_store.start_job(session, job_id)
        start = time.perf_counter()
        claim_partners(context, job)
        waits.append(time.perf_counter() - start)
        with context.database.session() as session:
            job_store.finish_job(session, job_id, JobStatus.CANCELLED)
    print(f"  the wait itself: median {statistics.median(waits) * 1000:.1f} ms, "
          f"max {max(waits) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
