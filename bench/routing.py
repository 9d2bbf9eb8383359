"""Model-aware routing against one shared queue (issue #22): two real Celery workers on a
real Redis, two diffusion models, a mixed stream of jobs; model loads and images/s.

- **shared**: today's shape: every job on one queue (``renders``), both workers serve both
  models, each keeps one model loaded (``MODEL_CACHE_SIZE=1``): a job for the other model
  unloads one and loads the other.
- **routed**: each model has its queue; worker 1 serves model A, worker 2 model B
  (``SPEC2FRACTAL_WORKER_MODELS``), each loaded once, before its first job (warm start).

The models are SD 1.x-shaped pipelines with random weights built here, offline, with a
CLIP text encoder large enough (``--encoder-layers``, ``--encoder-width``) that loading one
from its safetensors takes a noticeable time of its own, as a real model's does (no sleep
anywhere); renders are small (64², ``--steps``). Loads are counted by the workers
themselves (their announcements in the job database), not timed. The stream is a seeded
random mix of the two models sent by ``--clients`` closed-loop clients (each sends a job,
waits for its end, sends the next: the traffic of interactive users), or with
``--clients 0`` all queued at once (a burst, where co-rendering groups many jobs of a model
and hides much of the cost of a shared queue); images/s is jobs / (first sent → last
finished). Co-rendering is at the product's default (4) unless
``--corender`` says otherwise; ``--corender 1`` isolates routing.

Run: python bench/routing.py [--jobs 200] [--steps 4] [--modes shared,routed] [--json F].
Needs redis-server (as the test suite does). Prints a table; not a test.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from sqlalchemy import func, select
from transformers import CLIPTextConfig, CLIPTextModel

from fractal import GenerationRequest, Spec2Fractal
from tests.services import start_celery_worker, start_redis, wait_for
from tests.tiny_models import write_tokenizer
from workers.db import Database, Job, JobStatus
from workers.db import jobs as job_store
from workers.db import presence as presence_store
from workers.settings import Settings
from workers.task_queue import QUEUE, RENDER_TASK, TaskQueue


def build_model(folder: Path, scratch: Path, seed: int, layers: int, width: int,
                vocab: int) -> Path:
    """An SD 1.x-shaped pipeline, saved in fp16 (as most published checkpoints are), whose
    weights are mostly its text encoder's token table (``vocab`` rows; the tokenizer uses
    the first few hundred): a worker on CPU loads it in fp32, so every byte is read and
    converted, a real load whose cost grows with the weights as a GPU's transfer does,
    while a render stays cheap (a table lookup costs the same whatever its size)."""
    torch.manual_seed(seed)
    tokenizer = write_tokenizer(scratch / f"tokenizer-{seed}")
    text = CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, vocab_size=max(vocab, len(tokenizer)),
        hidden_size=width,
        intermediate_size=4 * width, num_attention_heads=8, num_hidden_layers=layers,
        projection_dim=width)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=32, in_channels=4,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=width)
    vae = AutoencoderKL(
        block_out_channels=[32, 64], in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
        norm_num_groups=32, sample_size=64)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012,
                                       beta_schedule="scaled_linear", steps_offset=1)
    pipeline = StableDiffusionPipeline(
        vae=vae, text_encoder=CLIPTextModel(text), tokenizer=tokenizer, unet=unet,
        scheduler=scheduler, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    pipeline.to(torch.float16).save_pretrained(folder, safe_serialization=True)
    return folder


def load_and_render_seconds(model: Path, steps: int) -> tuple[float, float]:
    """One model's load and one render, timed in this process (for the table's context)."""
    started = time.perf_counter()
    engine = Spec2Fractal(str(model), device="cpu")
    request = GenerationRequest(prompt="warm", width=64, height=64, steps=steps, seed=0)
    engine.generate(request)  # the first call pays lazy set-up; time the second
    loaded = time.perf_counter() - started
    started = time.perf_counter()
    engine.generate(request)
    return loaded, time.perf_counter() - started


def run_mode(mode: str, models: list[str], args: argparse.Namespace, redis_url: str,
             folder: Path) -> dict[str, Any]:
    folder.mkdir(parents=True)
    settings = Settings(data_dir=folder / "data", broker_url=redis_url,
                        storage_url=str(folder / "images"), model=models[0],
                        models=models[1:])
    database = Database(settings.resolved_database_url)
    database.migrate()
    base_env = {
        "SPEC2FRACTAL_BROKER_URL": redis_url,
        "SPEC2FRACTAL_DATABASE_URL": settings.resolved_database_url,
        "SPEC2FRACTAL_STORAGE_URL": settings.resolved_storage_url,
        "SPEC2FRACTAL_DATA_DIR": str(settings.data_dir),
        "SPEC2FRACTAL_MODEL": models[0], "SPEC2FRACTAL_MODELS": ",".join(models[1:]),
        "SPEC2FRACTAL_MODEL_CACHE_SIZE": "1", "SPEC2FRACTAL_DEVICE": "cpu",
        "SPEC2FRACTAL_MAX_CORENDER_SIZE": str(args.corender),
        "SPEC2FRACTAL_WORKER_PRESENCE_INTERVAL": "0.5",
        # One core each: two workers on a small machine must not fight over every core.
        "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
    }
    served = ([[models[0]], [models[1]]] if mode == "routed" else [models, models])
    workers = [start_celery_worker({**base_env, "SPEC2FRACTAL_WORKER_MODELS": ",".join(mine)},
                                   folder, name=f"{mode}-{index}", timeout=180)
               for index, mine in enumerate(served)]
    try:
        wait_for(lambda: _warm(database) == 2, timeout=180, what="both workers warm")
        queue = TaskQueue(settings)
        rng = random.Random(args.seed)
        stream = iter([rng.choice(models) for _ in range(args.jobs)])
        lock = threading.Lock()
        ids: list[str] = []

        def submit(index: int, model: str) -> str:
            request = GenerationRequest(prompt=f"a lake {index}", model=model, width=64,
                                        height=64, steps=args.steps, seed=index)
            job_id = job_store.new_job_id()
            stored = request.to_dict()
            stored.pop("image", None)
            with database.session() as session:
                job_store.create_job(session, job_id=job_id, model=model, request=stored)
            if mode == "routed":
                queue.enqueue_render(job_id, model=model)  # the product's path: its model's
            else:
                queue.send(RENDER_TASK, {"job_id": job_id}, QUEUE)  # one shared queue
            with lock:
                ids.append(job_id)
            return job_id

        def client() -> None:
            """Closed loop: one job at a time, the next once it is done."""
            while True:
                with lock:
                    index, model = len(ids), next(stream, None)
                if model is None:
                    return
                job_id = submit(index, model)
                while _status(database, job_id) not in (JobStatus.SUCCEEDED, JobStatus.FAILED):
                    time.sleep(0.01)

        started = time.perf_counter()
        if args.clients:
            threads = [threading.Thread(target=client) for _ in range(args.clients)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        else:  # a burst: everything queued at once
            for index, model in enumerate(stream):
                submit(index, model)
        wait_for(lambda: _finished(database) == args.jobs, timeout=args.timeout,
                 what=f"{mode}: all jobs finished", interval=0.05)
        elapsed = time.perf_counter() - started
        with database.session() as session:
            succeeded = session.scalar(select(func.count()).where(
                Job.status == JobStatus.SUCCEEDED)) or 0
            live = presence_store.live_workers(session, 60)
        loads = {worker.name: dict(worker.loads) for worker in live}
        # Warm start loads are counted too: each worker loaded one model before any job.
        total = sum(sum(each.values()) for each in loads.values())
        return {"mode": mode, "jobs": len(ids), "succeeded": succeeded,
                "seconds": round(elapsed, 2), "images_per_s": round(succeeded / elapsed, 3),
                "loads": total, "loads_per_worker": list(loads.values())}
    finally:
        for worker in workers:
            worker.stop(grace=10)
        database.engine.dispose()


def _warm(database: Database) -> int:
    with database.session() as session:
        return sum(worker.warm for worker in presence_store.live_workers(session, 60))


def _status(database: Database, job_id: str) -> str | None:
    with database.session() as session:
        return session.scalar(select(Job.status).where(Job.id == job_id))


def _finished(database: Database) -> int:
    with database.session() as session:
        return session.scalar(select(func.count()).where(
            Job.status.in_([JobStatus.SUCCEEDED, JobStatus.FAILED]))) or 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--modes", default="shared,routed")
    parser.add_argument("--corender", type=int, default=4)
    parser.add_argument("--clients", type=int, default=4,
                        help="Closed-loop clients, each with one job at a time; 0: a burst, "
                             "every job queued at once.")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--encoder-layers", type=int, default=2)
    parser.add_argument("--encoder-width", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=400_000,
                        help="Rows of the token table: the models' size (default ~400 MiB "
                             "in fp16 each).")
    parser.add_argument("--seed", type=int, default=22)
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--json", type=Path, help="Also write the results here.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-routing-") as tmp:
        root = Path(tmp)
        models = [str(build_model(root / name, root, seed, args.encoder_layers,
                                  args.encoder_width, args.vocab))
                  for seed, name in enumerate(("model-a", "model-b"))]
        torch.set_num_threads(args.threads)
        load, render = load_and_render_seconds(Path(models[0]), args.steps)
        size = sum(path.stat().st_size for path in Path(models[0]).rglob("*.safetensors"))
        print(f"each model: {size / 2**20:.0f} MiB of weights; load (+ first render) "
              f"{load:.2f} s, one render {render:.2f} s ({args.steps} steps, 64², "
              f"{args.threads} thread(s))", flush=True)
        redis = start_redis(root / "redis")
        try:
            results = []
            for index, mode in enumerate(args.modes.split(",")):
                results.append(run_mode(mode, models, args, redis.url(index),
                                        root / f"run-{mode}"))
                print(json.dumps(results[-1]), flush=True)
        finally:
            redis.stop()
    print()
    arrival = f"{args.clients} closed-loop clients" if args.clients else "one burst"
    print(f"{args.jobs} jobs ({arrival}), 2 workers, 2 models, co-render {args.corender}")
    print(f"{'mode':<8} {'jobs ok':>8} {'seconds':>9} {'images/s':>9} {'loads':>6}")
    for row in results:
        print(f"{row['mode']:<8} {row['succeeded']:>8} {row['seconds']:>9.1f} "
              f"{row['images_per_s']:>9.3f} {row['loads']:>6}")
    by_mode = {row["mode"]: row for row in results}
    if {"shared", "routed"} <= by_mode.keys():
        ratio = by_mode["routed"]["images_per_s"] / by_mode["shared"]["images_per_s"]
        print(f"routed / shared throughput: {ratio:.2f}x (target >= 1.5x); routed loads "
              f"{by_mode['routed']['loads']} (target <= workers x models = 4)")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)},
                                         "load_seconds": load, "render_seconds": render,
                                         "results": results}, indent=2))


if __name__ == "__main__":
    main()
