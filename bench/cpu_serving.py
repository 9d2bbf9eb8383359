"""Images/s and latency on a CPU machine: `spec2fractal serve --workers N` against a
reference-style diffusers server, side by side, on the tiny random SD pipeline.

The reference is written here the way diffusers' own example server is (examples/server):
FastAPI, one shared pipeline, per request a pipeline made from it with a fresh scheduler
(``from_pipe``) and called in the event loop's thread executor, the PNG written to disk and
served as a static URL. Both servers get the same load: C closed-loop clients, each posting a
request, downloading the image its answer points to, and posting the next. Each case runs
in a fresh server; a warm-up request per client comes first and is not counted.

Run: python bench/cpu_serving.py [--seconds 30] [--rounds 1] [--clients 8] [--steps 8]
     [--workers 0 1 2]
(``--workers 0``: the default the server picks from the cores.)
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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from common import free_port, percentile
from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPT = "A tropical island with crystal-clear water"
SIZE = 64


class ReferenceRequest(BaseModel):
    prompt: str
    seed: int = 0
    steps: int = 8
    width: int = SIZE
    height: int = SIZE


def reference_app(folder: Path, images: Path) -> Any:  # a FastAPI app
    """The reference server: diffusers' example shape, on this machine's tiny pipeline."""
    import asyncio
    import uuid

    import torch
    from diffusers import StableDiffusionPipeline
    from fastapi import FastAPI
    from fastapi.staticfiles import StaticFiles
    shared = StableDiffusionPipeline.from_pretrained(str(folder))
    images.mkdir(parents=True, exist_ok=True)
    app = FastAPI()
    app.mount("/images", StaticFiles(directory=images), name="images")

    @app.get("/ready")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/generate")
    async def generate(body: ReferenceRequest) -> dict[str, str]:
        scheduler = shared.scheduler.from_config(shared.scheduler.config)
        pipeline = StableDiffusionPipeline.from_pipe(shared, scheduler=scheduler)
        generator = torch.Generator().manual_seed(body.seed)
        loop = asyncio.get_running_loop()
        output = await loop.run_in_executor(None, lambda: pipeline(
            body.prompt, num_inference_steps=body.steps, width=body.width,
            height=body.height, generator=generator))
        name = f"{uuid.uuid4().hex}.png"
        output.images[0].save(images / name)
        return {"image_url": f"/images/{name}"}

    return app


def serve_reference(folder: Path, images: Path, port: int) -> None:
    import uvicorn

    uvicorn.run(reference_app(folder, images), host="127.0.0.1", port=port,
                log_level="warning")


@contextlib.contextmanager
def running(command: list[str], env: dict[str, str], port: int) -> Iterator[str]:
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(base + "/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{command} did not become ready")
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()


def closed_loop(one: Callable[[httpx.Client, int], None], clients: int,
                seconds: float) -> tuple[float, list[float]]:
    """``clients`` threads each calling ``one`` back to back for ``seconds`` (after one
    uncounted warm-up call each); images/s and the counted calls' latencies."""
    latencies: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)
    start_at: list[float] = []
    stop = threading.Event()

    errors: list[BaseException] = []

    def client(number: int) -> None:
        try:
            run_client(number)
        except BaseException as error:  # the run is void: say why, and release the others
            errors.append(error)
            stop.set()
            barrier.abort()

    def run_client(number: int) -> None:
        with httpx.Client(timeout=300) as http:
            one(http, number * 1_000_000)  # warm-up: model loads, first-call costs
            barrier.wait()
            seed = number * 1_000_000 + 1
            while not stop.is_set():
                began = time.perf_counter()
                one(http, seed)
                ended = time.perf_counter()
                seed += 1
                if ended - start_at[0] <= seconds:  # finished inside the window: counted
                    with lock:
                        latencies.append(ended - began)

    threads = [threading.Thread(target=client, args=(number,)) for number in range(clients)]
    for thread in threads:
        thread.start()
    with contextlib.suppress(threading.BrokenBarrierError):
        barrier.wait()
        start_at.append(time.perf_counter())
        stop.wait(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError("a client failed") from errors[0]
    return len(latencies) / seconds, latencies


def ours(base: str, steps: int) -> Callable[[httpx.Client, int], None]:
    def one(http: httpx.Client, seed: int) -> None:
        response = http.post(f"{base}/generate", json={
            "input_type": "text", "content": PROMPT, "steps": steps, "seed": seed,
            "width": SIZE, "height": SIZE})
        if response.status_code != 200:
            raise RuntimeError(f"{response.status_code}: {response.text[:200]}")
        http.get(response.json()["image_url"]).raise_for_status()
    return one


def reference(base: str, steps: int) -> Callable[[httpx.Client, int], None]:
    def one(http: httpx.Client, seed: int) -> None:
        response = http.post(f"{base}/generate", json={"prompt": PROMPT, "seed": seed,
                                                        "steps": steps})
        response.raise_for_status()
        http.get(base + response.json()["image_url"]).raise_for_status()
    return one


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--reference", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--images", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reference is not None:
        serve_reference(args.reference, args.images, args.port)
        return

    from tests.tiny_models import build_tiny_sd
    from workers.cpu_share import usable_cores

    scratch = Path(tempfile.mkdtemp(prefix="s2f-cpu-bench-"))
    folder = build_tiny_sd(scratch / "tiny-sd", scratch)
    base_env = {key: value for key, value in os.environ.items()
                if not key.startswith("SPEC2FRACTAL_")}
    base_env.update({"HF_HUB_OFFLINE": "1", "SPEC2FRACTAL_MODEL": str(folder),
                     "SPEC2FRACTAL_WARMUP_MODEL": str(folder),
                     "SPEC2FRACTAL_SYNC_TIMEOUT": "300"})
    cases: list[tuple[str, list[str], dict[str, str], Callable[..., Any]]] = []
    port = free_port()
    cases.append(("reference (diffusers example shape)",
                  [sys.executable, __file__, "--reference", str(folder), "--images",
                   str(scratch / "reference-images"), "--port", str(port)],
                  base_env, reference))
    for workers in args.workers:
        env = {**base_env, "SPEC2FRACTAL_DATA_DIR": str(scratch / f"data-{workers}")}
        call = "serve(port={port}" + (f", workers={workers})" if workers else ")")
        name = f"spec2fractal serve --workers {workers}" if workers else \
            "spec2fractal serve (default workers)"
        cases.append((name, [sys.executable, "-c", f"from api.cli import serve; {call}"],
                      env, ours))
    # Rounds alternate the cases, so a change in the machine's background load (other
    # processes) falls on each about equally; each case's figures pool its rounds.
    counted: dict[str, list[float]] = {name: [] for name, *_ in cases}
    load = [os.getloadavg()[0]]
    try:
        for _ in range(args.rounds):
            for name, command, env, client in cases:
                port = free_port()
                if client is reference:
                    command = [*command[:-1], str(port)]
                else:
                    command = [*command[:-1], command[-1].replace("{port}", str(port))]
                with running(command, env, port) as base:
                    _, latencies = closed_loop(client(base, args.steps), args.clients,
                                               args.seconds)
                counted[name] += latencies
                load.append(os.getloadavg()[0])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    window = args.seconds * args.rounds
    rows = [(name, len(latencies) / window, latencies) for name, latencies in counted.items()]

    print(f"tiny SD {SIZE}x{SIZE}, {args.steps} steps, {args.clients} closed-loop clients, "
          f"{args.seconds:.0f} s x {args.rounds} round(s) per case; {usable_cores()} usable "
          f"cores; load average (1 min) at each case's end: "
          + ", ".join(f"{value:.2f}" for value in load))
    print(f"{'server':<40} {'images/s':>9} {'x ref':>6} {'p50 ms':>8} {'p99 ms':>8} {'n':>5}")
    reference_rate = rows[0][1]
    for name, rate, latencies in rows:
        print(f"{name:<40} {rate:>9.2f} {rate / reference_rate:>6.2f} "
              f"{statistics.median(latencies) * 1000:>8.0f} "
              f"{percentile(latencies, 99) * 1000:>8.0f} {len(latencies):>5}")


if __name__ == "__main__":
    main()
