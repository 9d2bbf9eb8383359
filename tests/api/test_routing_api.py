"""Model-aware routing for real (issue #22): Redis, two Celery worker processes each serving
one model, the API in process. Each job reaches its model's worker (each worker loads its
model once), GET /models shows who serves what, /ready waits for a warm worker of the
default model, and a model no live worker serves is a 503 with Retry-After."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from api.app import create_app
from tests.services import RedisServer, wait_for
from workers.db import get_database
from workers.db import presence as presence_store
from workers.settings import Settings

REDIS_DB = 11  # apart from the other tests' queues on the shared Redis
TEXT = {"prompt": "a lake", "width": 64, "height": 64, "seed": 3}


def _env(settings: Settings, models: str) -> dict[str, str]:
    return {
        "SPEC2FRACTAL_BROKER_URL": str(settings.broker_url),
        "SPEC2FRACTAL_DATABASE_URL": settings.resolved_database_url,
        "SPEC2FRACTAL_STORAGE_URL": settings.resolved_storage_url,
        "SPEC2FRACTAL_DATA_DIR": str(settings.data_dir),
        "SPEC2FRACTAL_MODEL": settings.model,
        "SPEC2FRACTAL_MODELS": ",".join(settings.models),
        "SPEC2FRACTAL_WORKER_MODELS": models,
        "SPEC2FRACTAL_WORKER_PRESENCE_INTERVAL": "0.5",
        "SPEC2FRACTAL_DEVICE": "cpu",
    }


def _loads(settings: Settings) -> dict[str, dict[str, int]]:
    with get_database(settings.resolved_database_url).session() as session:
        live = presence_store.live_workers(session, settings.worker_presence_ttl)
    return {",".join(worker.models): worker.loads for worker in live}


def _by_id(models: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {model["id"]: model for model in models}


def test_jobs_reach_their_models_workers(tmp_path: Path, tiny_sd: Path,
                                         redis_server: RedisServer, celery_worker: Any) -> None:
    redis_server.client(db=REDIS_DB).flushdb()
    settings = Settings(data_dir=tmp_path / "data", broker_url=redis_server.url(REDIS_DB),
                        storage_url=str(tmp_path / "images"), models=[str(tiny_sd)],
                        sync_timeout=60, worker_presence_interval=0.5,
                        worker_presence_ttl=3)
    sd = str(tiny_sd)
    with TestClient(create_app(settings, start_worker=False)) as client:
        # No worker yet: not ready, and a job for the default model is refused, not queued.
        assert client.get("/ready").status_code == 503
        refused = client.post("/generate", json=TEXT)
        assert refused.status_code == 503, refused.text
        assert refused.json()["model"] == "fractal" and "fractal" in refused.json()["detail"]
        assert int(refused.headers["Retry-After"]) > 0

        engine = celery_worker(_env(settings, "fractal"), name="engine")
        diffusion = celery_worker(_env(settings, sd), name="diffusion")
        wait_for(lambda: client.get("/ready").status_code == 200, timeout=30,
                 what="/ready with a warm worker for the default model")
        # Warm start: each worker loaded its one model before it took a job.
        assert _loads(settings) == {"fractal": {"fractal": 1}, sd: {sd: 1}}
        listed = _by_id(client.get("/models").json()["models"])
        assert [worker["warm"] and worker["loaded"]
                for worker in listed["fractal"]["workers"]] == [True]
        assert [worker["loaded"] for worker in listed["tiny-sd"]["workers"]] == [True]
        assert listed["fractal"]["workers"][0]["name"] != listed["tiny-sd"]["workers"][0]["name"]

        # A mixed stream: every job to its model's worker, and no worker loads again.
        ids = []
        for index in range(6):
            model = {"model": "tiny-sd", "steps": 2} if index % 2 else {}
            made = client.post("/generate", json={**TEXT, **model, "seed": index},
                               headers={"Prefer": "respond-async"})
            assert made.status_code == 202, made.text
            ids.append(made.json()["id"])
        wait_for(lambda: all(client.get(f"/jobs/{job_id}").json()["status"] == "succeeded"
                             for job_id in ids), timeout=120, what="the mixed jobs to finish")
        assert _loads(settings) == {"fractal": {"fractal": 1}, sd: {sd: 1}}
        metrics = client.get("/metrics").text
        assert 'spec2fractal_model_loads{model="tiny-sd"} 1.0' in metrics
        assert 'spec2fractal_model_workers{model="fractal"} 1.0' in metrics
        assert 'spec2fractal_model_render_seconds_count{model="tiny-sd"} 3.0' in metrics
        assert "spec2fractal_model_queue_depth" in metrics
        # A batch's items go to their models' batch queues, and reach the same workers.
        batch = client.post("/batches", json={"items": [
            {**TEXT, "model": "tiny-sd", "steps": 2}, TEXT]})
        assert batch.status_code in (201, 202), batch.text
        batch_id = batch.json()["id"]
        wait_for(lambda: client.get(f"/batches/{batch_id}").json()["counts"]["succeeded"] == 2,
                 timeout=60, what="the batch to finish")
        assert _loads(settings) == {"fractal": {"fractal": 1}, sd: {sd: 1}}

        # Its only worker gone (a cold stop: no goodbye, so silent past the time to live):
        # the model is refused by name, the other still served.
        diffusion.stop()
        wait_for(lambda: not _by_id(client.get("/models").json()["models"])["tiny-sd"][
            "workers"], timeout=20, what="the stopped worker to leave GET /models")
        gone = client.post("/generate", json={**TEXT, "model": "tiny-sd", "steps": 2})
        assert gone.status_code == 503 and gone.json()["model"] == "tiny-sd"
        assert "Retry-After" in gone.headers
        refused_batch = client.post("/batches", json={"items": [
            TEXT, {**TEXT, "model": "tiny-sd"}]})
        assert refused_batch.status_code == 503 and refused_batch.json()["model"] == "tiny-sd"
        started = time.monotonic()
        assert client.post("/generate", json=TEXT).status_code == 200
        assert time.monotonic() - started < 30
        engine.stop()
