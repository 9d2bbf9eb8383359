"""Routing's parts without services: queue names from model ids, what a worker serves and
consumes, its announcements in the job database and who counts as live."""

from __future__ import annotations

import re
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from api.errors import ApiError
from api.routing import check_served, warm_for
from tests.services import ROOT, ManagedProcess, RedisServer, service_env, wait_for
from workers.db import Database, Job, JobStatus
from workers.db import jobs as job_store
from workers.db import presence as presence_store
from workers.db.models import WorkerPresence, utcnow
from workers.model_cache import ModelCache
from workers.presence import Presence
from workers.routing import model_queue, render_queue, served_models, worker_queues
from workers.settings import Settings
from workers.task_queue import TaskQueue

SAFE = re.compile(r"^(renders|batch)\.[A-Za-z0-9_-]{1,40}-[0-9a-f]{10}$")
HOSTILE_IDS = ["stabilityai/sdxl-turbo", "a b", "a_b", "a/b", "", "../../etc", "\ud800x",
               "x" * 5000, "日本語モデル", "{}", "a.b", "*", "renders"]


def test_queue_names_are_safe_and_distinct_for_any_model_id() -> None:
    names = [model_queue("renders", model) for model in HOSTILE_IDS]
    assert all(SAFE.match(name) for name in names), names
    assert len(set(names)) == len(HOSTILE_IDS)  # "a/b", "a b" and "a_b" slug alike
    assert model_queue("renders", "m") != model_queue("batch", "m")
    assert model_queue("renders", "m") == model_queue("renders", "m")  # stable


def test_embedded_mode_keeps_the_plain_queues(tmp_path: Path) -> None:
    embedded = Settings(data_dir=tmp_path)
    routed = Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:1/0")
    assert render_queue(embedded, "renders", "m") == "renders"
    assert render_queue(routed, "renders", "m") == model_queue("renders", "m")
    assert render_queue(routed, "batch", None) == "batch"


def test_a_worker_serves_its_models_or_every_configured_one(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    every = Settings(data_dir=tmp_path, model="sd-turbo", models=["sdxl", "sd-turbo"])
    assert served_models(every) == ["sd-turbo", "fractal", "sdxl"]
    monkeypatch.setenv("SPEC2FRACTAL_WORKER_MODELS", "sdxl, fractal,sdxl")
    assert served_models(Settings(data_dir=tmp_path)) == ["sdxl", "fractal"]
    # Interactive queues of every model before any batch queue.
    assert worker_queues(["a", "b"]) == [model_queue("renders", "a"), model_queue("renders", "b"),
                                         model_queue("batch", "a"), model_queue("batch", "b")]


def test_announcements_count_while_fresh_and_go_with_their_worker(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:1/0",
                        worker_presence_ttl=30)
    database = Database(settings.resolved_database_url)
    database.migrate()
    cache = ModelCache(1)
    presence = Presence(database, cache, ["fractal"], interval=60, name="w1")
    presence.start()
    with database.session() as session:
        assert not warm_for(session, settings, "fractal")  # announced, still loading
        check_served(session, settings, ["fractal"])  # live: served even before warm
    cache.get("fractal")  # the real built-in engine
    presence.mark_warm()
    with database.session() as session:
        [worker] = presence_store.live_workers(session, settings.worker_presence_ttl)
        assert (worker.models, worker.loaded, worker.loads, worker.warm) == (
            ("fractal",), ("fractal",), {"fractal": 1}, True)
        assert warm_for(session, settings, "fractal")
        with pytest.raises(ApiError) as refused:
            check_served(session, settings, ["fractal", "other/model", "third"])
        assert refused.value.status == 503 and refused.value.extra == {"model": "other/model"}
        assert int(refused.value.headers["Retry-After"]) > 0
        # Silent past the time to live: no longer live.
        session.execute(update(WorkerPresence).values(seen_at=utcnow() - timedelta(minutes=5)))
    with database.session() as session:
        assert presence_store.live_workers(session, settings.worker_presence_ttl) == []
        with pytest.raises(ApiError):
            check_served(session, settings, ["fractal"])
    presence.announce()
    with database.session() as session:
        assert len(presence_store.live_workers(session, 30)) == 1
    presence.stop()  # a worker going down withdraws its row at once
    with database.session() as session:
        assert presence_store.live_workers(session, 30) == []
        # The embedded mode's one worker takes every model: no check there.
        check_served(session, Settings(data_dir=tmp_path), ["anything"])
        # Nor where the operator turned it off.
        check_served(session, settings.model_copy(update={"refuse_unserved_models": False}),
                     ["anything"])


def test_the_worker_command_serves_the_models_it_is_given(tmp_path: Path,
                                                          redis_server: RedisServer) -> None:
    """`spec2fractal worker --models a,b`: the worker announces those models, is warm once
    it loaded them (as many as its cache holds), and takes their jobs from their queues."""
    redis_server.client(db=12).flushdb()
    settings = Settings(data_dir=tmp_path / "data", broker_url=redis_server.url(12),
                        storage_url=str(tmp_path / "images"))
    env = {"SPEC2FRACTAL_BROKER_URL": str(settings.broker_url),
           "SPEC2FRACTAL_DATABASE_URL": settings.resolved_database_url,
           "SPEC2FRACTAL_STORAGE_URL": settings.resolved_storage_url,
           "SPEC2FRACTAL_DATA_DIR": str(settings.data_dir),
           "SPEC2FRACTAL_WORKER_PRESENCE_INTERVAL": "0.5"}
    process = ManagedProcess("spec2fractal worker", [
        sys.executable, "-c", "from spec2fractal.cli import main; main()", "worker",
        "--models", "fractal,some/other-model", "--device", "cpu"],
        tmp_path / "worker.log", env=service_env(env), cwd=ROOT).start()
    database = Database(settings.resolved_database_url)
    try:
        def warm() -> list[presence_store.LiveWorker]:
            with database.session() as session:
                return [worker for worker in presence_store.live_workers(session, 30)
                        if worker.warm]
        wait_for(warm, timeout=60, what="the worker to be warm", process=process)
        [worker] = warm()
        assert worker.models == ("fractal", "some/other-model")
        assert worker.loaded == ("fractal",) and worker.loads == {"fractal": 1}
        assert model_queue("renders", "some/other-model") in process.log()  # its queues
        job_id = "routing-cli-job"
        with database.session() as session:
            job_store.create_job(session, job_id=job_id, model="fractal",
                                 request={"prompt": "a lake", "width": 64, "height": 64,
                                          "seed": 1, "model": "fractal"})
        TaskQueue(settings).enqueue_render(job_id)  # to the model's queue, read from the row

        def status() -> str | None:
            with database.session() as session:
                return session.scalar(select(Job.status).where(Job.id == job_id))
        wait_for(lambda: status() == JobStatus.SUCCEEDED, timeout=60, what="the job rendered",
                 process=process)
    finally:
        process.stop(grace=10)
    # A warm shutdown withdraws its announcement at once.
    with database.session() as session:
        assert presence_store.live_workers(session, 30) == []
