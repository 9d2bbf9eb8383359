"""POST /generate (sync) against a direct library call, on the tiny diffusers pipeline.

Starts the real service (`spec2fractal serve`: API + worker child) on a loopback port, embedded
(the queue in its SQLite database) or with --broker redis (a redis-server it starts itself),
and prints a table: p50/p99 at concurrency 1 and 8, the overhead over the library, and
/health p99 while renders run.
Run: python bench/service.py [--requests 100] [--rounds 8] [--steps 8] [--broker embedded|redis]

A process renders the same model a few per cent faster or slower than another, for the
whole of its life (where its memory landed, much as pyperf finds); on a render of ~200 ms
that alone moves a single comparison by ±10 ms. So, as pyperf does, the concurrency-1
figures pool several rounds, each with a fresh service and a fresh process making the
direct calls.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import httpx
from common import free_port, percentile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fractal import Spec2Fractal
from tests.tiny_models import build_tiny_sd

PROMPT = "A tropical island with crystal-clear water"
# Where a sync request's time goes beyond the render, from the job's timestamps.
PHASES = {
    "api: request to job row": "HTTP, checks, admission",
    "queue: job row to worker's claim": "the message, the worker taking it",
    "worker: claim to end, minus the direct call": "store, record; and render speed",
    "api: job's end to answer": "signal, read the row, answer",
}


def wait_until_ready(base: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the service did not become ready")


def _stamp(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def serve_direct_calls(folder: Path, steps: int) -> None:
    """The --direct mode: a library call per seed read from stdin, its seconds to stdout."""
    model = Spec2Fractal(str(folder))
    model.generate_from_text(PROMPT, steps=steps, seed=0)
    print("ready", flush=True)
    for line in sys.stdin:
        start = time.perf_counter()
        model.generate_from_text(PROMPT, steps=steps, seed=int(line))
        print(time.perf_counter() - start, flush=True)


class DirectCalls:
    """A process of its own that makes the library calls and times them."""

    def __init__(self, folder: Path, steps: int, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--direct", str(folder), "--steps", str(steps)],
            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True)
        if self._line() != "ready":
            raise RuntimeError("the direct-call process did not start")

    def _line(self) -> str:
        assert self.process.stdout is not None
        return self.process.stdout.readline().strip()

    def render(self, seed: int) -> float:
        assert self.process.stdin is not None
        self.process.stdin.write(f"{seed}\n")
        self.process.stdin.flush()
        return float(self._line())

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(30)


def paired_times(direct_calls: DirectCalls, base: str, steps: int, seeds: range
                 ) -> tuple[list[float], list[float], dict[str, list[float]]]:
    """A library call and the same request through the API, alternately: both meet the
    same background (the idle service, other load), so their difference is the overhead.
    Also where each request's time went, from the job's own timestamps (one clock)."""
    direct, api = [], []
    phases: dict[str, list[float]] = {name: [] for name in PHASES}
    with httpx.Client(base_url=base, timeout=120) as client:
        client.post("/generate", json={"content": PROMPT, "steps": steps, "seed": 0})
        for seed in seeds:
            direct.append(direct_calls.render(seed))
            sent, start = time.time(), time.perf_counter()
            response = client.post("/generate", json={"input_type": "text", "content": PROMPT,
                                                      "steps": steps, "seed": seed})
            api.append(time.perf_counter() - start)
            answered = time.time()
            if response.status_code != 200:
                raise RuntimeError(f"{response.status_code}: {response.text[:200]}")
            job = response.json()["job"]["timings"]
            created, started, finished = (_stamp(job[name]) for name in
                                          ("created_at", "started_at", "finished_at"))
            for name, seconds in zip(PHASES, (created - sent, started - created,
                                              finished - started - direct[-1],
                                              answered - finished), strict=True):
                phases[name].append(seconds)
    return direct, api, phases


def api_times(base: str, steps: int, count: int, concurrency: int) -> list[float]:
    def one(seed: int) -> float:
        start = time.perf_counter()
        response = httpx.post(f"{base}/generate", timeout=120,
                              json={"input_type": "text", "content": PROMPT, "steps": steps,
                                    "seed": seed})
        elapsed = time.perf_counter() - start
        if response.status_code != 200:
            raise RuntimeError(f"{response.status_code}: {response.text[:200]}")
        return elapsed

    one(0)  # warm-up: the worker loads the model on its first job
    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(one, range(count)))


def health_under_load(base: str, steps: int, probes: int) -> list[float]:
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=120) as client:
            while not stop.is_set():
                client.post(f"{base}/generate", json={"content": PROMPT, "steps": steps})

    threads = [threading.Thread(target=load) for _ in range(2)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    times = []
    with httpx.Client(timeout=10) as client:
        for _ in range(probes):
            start = time.perf_counter()
            client.get(f"{base}/health")
            times.append(time.perf_counter() - start)
            time.sleep(0.01)
    stop.set()
    for thread in threads:
        thread.join()
    return times


@contextlib.contextmanager
def running_service(env: dict[str, str], broker_url: str | None) -> Iterator[str]:
    """A fresh API with its worker (the embedded child, or a Celery worker on ``broker_url``);
    its base URL."""
    port = free_port()
    processes: list[subprocess.Popen[bytes]] = []
    if broker_url is not None:
        env = {**env, "SPEC2FRACTAL_BROKER_URL": broker_url}
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "--pool",
             "solo", "--loglevel", "WARNING", "--without-mingle", "--without-gossip"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    processes.append(subprocess.Popen(
        [sys.executable, "-c", f"from api.cli import serve; serve(port={port})"], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_ready(base)
        yield base
    finally:
        stop(processes)


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in reversed(processes):
        process.terminate()
    for process in processes:
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=8,
                        help="fresh service and direct-call processes the requests share")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--broker", choices=["embedded", "redis"], default="embedded")
    parser.add_argument("--direct", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.direct is not None:
        serve_direct_calls(args.direct, args.steps)
        return
    if args.rounds < 1 or args.requests < args.rounds:
        parser.error("need --rounds >= 1 and at least one request per round")

    scratch = Path(tempfile.mkdtemp(prefix="s2f-bench-"))
    folder = build_tiny_sd(scratch / "tiny-sd", scratch)
    env = {**os.environ, "SPEC2FRACTAL_DATA_DIR": str(scratch / "data"),
           "SPEC2FRACTAL_MODEL": str(folder), "HF_HUB_OFFLINE": "1"}
    redis: list[subprocess.Popen[bytes]] = []
    broker_url = None
    direct: list[float] = []
    serial: list[float] = []
    phases: dict[str, list[float]] = {name: [] for name in PHASES}
    rounds: list[tuple[float, float]] = []
    try:
        if args.broker == "redis":
            redis_port = free_port()
            redis.append(subprocess.Popen(
                ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(scratch)], stdout=subprocess.DEVNULL))
            broker_url = f"redis://127.0.0.1:{redis_port}/0"
        per_round = max(1, args.requests // args.rounds)
        for number in range(args.rounds):
            seeds = range(number * per_round, (number + 1) * per_round)
            with running_service(env, broker_url) as base:
                direct_calls = DirectCalls(folder, args.steps, env)
                try:
                    lib, api, where = paired_times(direct_calls, base, args.steps, seeds)
                finally:
                    direct_calls.close()
                direct += lib
                serial += api
                for name, values in where.items():
                    phases[name] += values
                rounds.append((statistics.median(lib), statistics.median(api)))
                if number == args.rounds - 1:
                    parallel = api_times(base, args.steps, args.requests, 8)
                    health = health_under_load(base, args.steps, 200)
    finally:
        stop(redis)
        shutil.rmtree(scratch, ignore_errors=True)

    p50_direct, p50_api = statistics.median(direct), statistics.median(serial)
    rows = [
        ("library call (direct)", direct),
        ("POST /generate, concurrency 1", serial),
        ("POST /generate, concurrency 8", parallel),
        ("GET /health while rendering", health),
    ]
    print(f"broker: {args.broker}; tiny SD 64x64, {args.steps} steps; {len(serial)} requests "
          f"at concurrency 1 over {args.rounds} rounds, {args.requests} at concurrency 8")
    print(f"{'case':<32} {'p50 ms':>8} {'p99 ms':>8}")
    for name, values in rows:
        print(f"{name:<32} {statistics.median(values) * 1000:>8.1f} "
              f"{percentile(values, 99) * 1000:>8.1f}")
    print(f"overhead at concurrency 1: p50 {(p50_api - p50_direct) * 1000:+.1f} ms, "
          f"x{p50_api / p50_direct:.3f}")
    # Each request and its library call ran back to back on the same seed: the median of
    # their differences is steadier than a difference of medians on a machine whose speed
    # drifts between runs.
    paired = [api - lib for api, lib in zip(serial, direct, strict=True)]
    ratios = [api / lib for api, lib in zip(serial, direct, strict=True)]
    print(f"overhead, paired: median {statistics.median(paired) * 1000:+.1f} ms, "
          f"x{statistics.median(ratios):.3f}")
    by_round = [(api - lib) * 1000 for lib, api in rounds]
    print("overhead at p50 by round (fresh processes each): " + ", ".join(
        f"{overhead:+.1f}" for overhead in by_round) + " ms")
    if len(by_round) > 1:
        # Each round draws a new pair of processes, so the rounds are the independent
        # samples of the overhead: their spread says how far the pooled figure can be trusted.
        error = statistics.stdev(by_round) / len(by_round) ** 0.5
        print(f"  mean of the rounds {statistics.mean(by_round):+.1f} ms, "
              f"standard error {error:.1f} ms")
    # The third phase holds the difference between the worker's render and the direct
    # process's (same model, two processes): the rounds above show how far that moves.
    print("where the time goes, median per request at concurrency 1:")
    for name, values in phases.items():
        print(f"  {name:<46} {statistics.median(values) * 1000:>6.1f} ms  ({PHASES[name]})")


if __name__ == "__main__":
    main()
