"""The distributed shape, for real: Redis broker, SeaweedFS S3, Celery worker processes.

The job database is each kind in turn: PostgreSQL, as in production, and SQLite in a
temporary folder; the test process and the workers share it through
SPEC2FRACTAL_DATABASE_URL.
"""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from sqlalchemy import update

from tests.service_fixtures import DATABASES, new_database, show_logs_on_failure
from tests.services import (
    CeleryWorker,
    RedisServer,
    SeaweedS3,
    start_celery_worker,
    wait_for,
)
from workers.celery_app import celery_config
from workers.db import Database, Job, JobStatus, get_database
from workers.db import jobs as job_store
from workers.db import messages as message_store
from workers.db.messages import Message
from workers.db.models import utcnow
from workers.model_cache import ModelCache
from workers.runner import INPUT_ERROR, INPUT_UNAVAILABLE, WorkerContext, input_key, run_job
from workers.settings import Settings
from workers.storage.s3 import S3Storage
from workers.task_queue import QUEUES, TaskQueue

BUCKET = "spec2fractal-test"
# → Redis visibility_timeout 2 × 5 s: an orphaned task comes back quickly, and a 2048² render
# still fits in the (soft) limit on a loaded machine.
TIME_LIMIT = 5
FAST = {"prompt": "a lake", "width": 256, "height": 128, "seed": 1}


@dataclass
class Stack:
    redis: RedisServer
    s3: SeaweedS3
    folder: Path
    database: Database
    settings: Settings

    def env(self, redis_db: int = 0) -> dict[str, str]:
        """What a worker process is configured with (the same as production, but local)."""
        return {
            "SPEC2FRACTAL_BROKER_URL": self.redis.url(redis_db),
            "SPEC2FRACTAL_DATABASE_URL": self.database.url,
            "SPEC2FRACTAL_STORAGE_URL": f"s3://{BUCKET}",
            "SPEC2FRACTAL_S3_ENDPOINT_URL": self.s3.endpoint_url,
            "SPEC2FRACTAL_DATA_DIR": str(self.folder / "data"),
            "SPEC2FRACTAL_TASK_TIME_LIMIT": str(TIME_LIMIT),
            "SPEC2FRACTAL_TASK_SOFT_TIME_LIMIT": str(TIME_LIMIT),
            **self.s3.aws_env,
        }

    def enqueue(self, job_id: str, redis_db: int = 0) -> None:
        """A render message through a sender configured for this stack's Redis."""
        settings = Settings(broker_url=self.redis.url(redis_db), task_time_limit=TIME_LIMIT)
        TaskQueue(settings).enqueue_render(job_id)

    def storage(self, *, readonly: bool = False, endpoint: str | None = None) -> S3Storage:
        """An S3Storage on the test bucket, as the admin, as the read-only identity, or
        pointed at another endpoint."""
        storage = S3Storage(BUCKET, endpoint_url=endpoint or self.s3.endpoint_url,
                            create_bucket=False)
        if readonly:
            storage.client = self.s3.client(readonly=True)
        elif endpoint is not None:
            storage.client = _client_for(endpoint, self.s3)
        return storage

    def job(self, request: dict[str, Any] | None = None, model: str = "fractal") -> str:
        job_id = job_store.new_job_id()
        with self.database.session() as session:
            job_store.create_job(session, job_id=job_id, model=model,
                                 request=dict(request or FAST))
        return job_id

    def get(self, job_id: str) -> Job:
        with self.database.session() as session:
            job = job_store.get_job(session, job_id)
            assert job is not None
            return job

    def wait(self, job_id: str, *statuses: str, timeout: float = 20,
             worker: CeleryWorker | None = None) -> Job:
        wanted = set(statuses) or {s.value for s in JobStatus if s.finished}
        return wait_for(lambda: (job := self.get(job_id)).status in wanted and job,
                        timeout=timeout, what=f"job {job_id} to be {'/'.join(sorted(wanted))}",
                        process=worker.process if worker else None)


def _client_for(endpoint: str, s3: SeaweedS3) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint, region_name=s3.region,
                        aws_access_key_id=s3.access_key, aws_secret_access_key=s3.secret_key,
                        config=Config(signature_version="s3v4", connect_timeout=1,
                                      retries={"max_attempts": 1, "mode": "standard"}))


@pytest.fixture(scope="module", params=DATABASES)
def stack(request: pytest.FixtureRequest, redis_server: RedisServer, seaweedfs_s3: SeaweedS3,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("distributed")
    with new_database(request.param, request, folder) as url, \
            pytest.MonkeyPatch.context() as patch:
        database = get_database(url)
        database.migrate()
        stack = Stack(redis_server, seaweedfs_s3, folder, database, Settings(url_expiry=1))
        # boto3 in this process: the admin identity, nothing from ~/.aws or EC2 metadata.
        for key, value in {**seaweedfs_s3.aws_env, "AWS_EC2_METADATA_DISABLED": "true",
                           "AWS_CONFIG_FILE": os.devnull,
                           "AWS_SHARED_CREDENTIALS_FILE": os.devnull}.items():
            patch.setenv(key, value)
        yield stack


@pytest.fixture(scope="module")
def worker(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CeleryWorker]:
    """The module's shared worker, on Redis database 0."""
    worker = start_celery_worker(stack.env(), tmp_path_factory.mktemp("worker"), name="shared")
    yield worker
    worker.stop()


@pytest.fixture(autouse=True)
def _worker_logs_on_failure(request: pytest.FixtureRequest) -> None:
    if "worker" in request.fixturenames:
        show_logs_on_failure(request.node, request.getfixturevalue("worker").process)


def _render(stack: Stack, worker: CeleryWorker, request: dict[str, Any] | None = None) -> Job:
    job_id = stack.job(request)
    stack.enqueue(job_id)
    return stack.wait(job_id, worker=worker)


def test_a_job_through_redis_lands_in_the_private_bucket(stack: Stack,
                                                        worker: CeleryWorker) -> None:
    job = _render(stack, worker)
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.attempts == 1
    assert stack.s3.keys(BUCKET, f"renders/{job.id}/") == [
        f"renders/{job.id}/0.json", f"renders/{job.id}/0.png", f"renders/{job.id}/0.thumb.webp"]
    [output] = job.outputs
    assert output["key"] == f"renders/{job.id}/0.png"
    assert (output["width"], output["height"]) == (256, 128)

    storage = stack.storage()
    record = json.loads(storage.get(output["record_key"]))
    assert record["seed"] == 1

    # A client downloads the image through its presigned URL, with no credentials at all.
    response = httpx.get(storage.url(output["key"], 300), timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    assert image.format == "PNG"
    assert image.size == (256, 128)

    # The bucket is private: the same object without a signature is refused.
    plain = httpx.get(f"{stack.s3.endpoint_url}/{BUCKET}/{output['key']}", timeout=10)
    assert plain.status_code == 403
    listing = httpx.get(f"{stack.s3.endpoint_url}/{BUCKET}?list-type=2", timeout=10)
    assert listing.status_code == 403


def test_an_expired_presigned_url_is_refused(stack: Stack, worker: CeleryWorker) -> None:
    job = _render(stack, worker)
    assert job.status == JobStatus.SUCCEEDED, job.error
    url = stack.storage().url(job.outputs[0]["key"], stack.settings.url_expiry)  # 1 s
    time.sleep(2)
    response = httpx.get(url, timeout=10)
    assert response.status_code == 403
    assert b"expired" in response.content.lower()


def test_a_rerun_overwrites_the_same_keys(stack: Stack, worker: CeleryWorker) -> None:
    job = _render(stack, worker)
    assert job.status == JobStatus.SUCCEEDED, job.error
    first = stack.storage().get(f"renders/{job.id}/0.png")
    # As if the worker died after uploading but before its acknowledgement: the job is
    # still "running" and the broker delivers it again.
    with stack.database.session() as session:
        session.execute(update(Job).where(Job.id == job.id)
                        .values(status=JobStatus.RUNNING, finished_at=None))
    stack.enqueue(job.id)
    again = stack.wait(job.id, JobStatus.SUCCEEDED, JobStatus.FAILED, worker=worker)
    assert again.status == JobStatus.SUCCEEDED, again.error
    assert again.attempts == 2
    assert stack.s3.keys(BUCKET, f"renders/{job.id}/") == [
        f"renders/{job.id}/0.json", f"renders/{job.id}/0.png", f"renders/{job.id}/0.thumb.webp"]
    assert stack.storage().get(f"renders/{job.id}/0.png") == first  # same seed, same image


def test_the_worker_honours_cancel_of_a_running_job(stack: Stack, worker: CeleryWorker) -> None:
    slow = {"prompt": "a lake", "width": 4096, "height": 4096, "seed": 3, "n": 4}  # ≈ 15 s
    job_id = stack.job(slow)
    stack.enqueue(job_id)
    stack.wait(job_id, JobStatus.RUNNING, worker=worker)
    time.sleep(0.3)
    asked = time.monotonic()
    with stack.database.session() as session:
        job_store.request_cancel(session, job_id)
    job = stack.wait(job_id, timeout=10, worker=worker)
    assert job.status == JobStatus.CANCELLED
    assert time.monotonic() - asked < 5
    assert stack.s3.keys(BUCKET, f"renders/{job_id}/") == []


@pytest.mark.parametrize("broken", ["read-only identity", "server down"])
def test_a_failed_upload_fails_the_job(stack: Stack, broken: str) -> None:
    from tests.services import free_port

    storage = (stack.storage(readonly=True) if broken == "read-only identity"
               else stack.storage(endpoint=f"http://127.0.0.1:{free_port()}"))
    context = WorkerContext(database=stack.database, storage=storage, models=ModelCache(1))
    job_id = stack.job()
    assert run_job(job_id, context) == JobStatus.FAILED
    job = stack.get(job_id)
    assert job.status == JobStatus.FAILED
    assert job.error == "image storage unavailable: the image could not be stored; try again later"
    assert job.outputs == []
    assert stack.s3.keys(BUCKET, f"renders/{job_id}/") == []


def _input_job(stack: Stack, *, stored: bool = True) -> str:
    """An image-to-image job as the API makes one: its input in the bucket, then its row."""
    job_id = job_store.new_job_id()
    if stored:
        buffer = io.BytesIO()
        Image.new("RGB", (64, 48), "teal").save(buffer, format="PNG")
        stack.storage().put(input_key(job_id), buffer.getvalue(), "image/png")
    with stack.database.session() as session:
        job_store.create_job(session, job_id=job_id, model="fractal",
                             input_key=input_key(job_id),
                             request={"input_type": "hybrid", "prompt": "a stormy sea",
                                      "width": 64, "height": 48, "seed": 1})
    return job_id


def _messages_for(stack: Stack, job_id: str, *, after: float) -> list[Message]:
    """The render messages for ``job_id`` available ``after`` seconds from now, taken."""
    now = utcnow() + timedelta(seconds=after)
    taken = []
    with stack.database.session() as session:
        while (message := message_store.take(session, QUEUES, lease=600, now=now)) is not None:
            taken.append(message)
    return [message for message in taken if message.kwargs == {"job_id": job_id}]


def test_a_job_whose_input_storage_does_not_answer_is_queued_again(stack: Stack) -> None:
    from tests.services import free_port

    down = stack.storage(endpoint=f"http://127.0.0.1:{free_port()}")  # nothing listens
    # The embedded queue, on the stack's job database: the re-sent message can be read back.
    queue = TaskQueue(Settings(database_url=stack.database.url, data_dir=stack.folder / "data"))
    context = WorkerContext(database=stack.database, storage=down, models=ModelCache(1),
                            max_attempts=3, requeue=queue.enqueue_render, requeue_delay=30)
    job_id = _input_job(stack)
    started = time.monotonic()
    assert run_job(job_id, context) == JobStatus.QUEUED
    assert time.monotonic() - started < 10
    job = stack.get(job_id)
    assert (job.status, job.attempts, job.error) == (JobStatus.QUEUED, 1, None)
    # Sent again, to run once requeue_delay has passed (not before).
    assert _messages_for(stack, job_id, after=20) == []
    assert len(_messages_for(stack, job_id, after=31)) == 1
    # Storage answers again: the next attempt renders, from the same input.
    context.storage = stack.storage()
    assert run_job(job_id, context) == JobStatus.SUCCEEDED
    job = stack.get(job_id)
    assert job.attempts == 2 and job.outputs[0]["record"]["seed"] == 1


def test_a_job_whose_input_storage_does_not_answer_fails_on_its_last_attempt(
        stack: Stack) -> None:
    from tests.services import free_port

    down = stack.storage(endpoint=f"http://127.0.0.1:{free_port()}")
    queue = TaskQueue(Settings(database_url=stack.database.url, data_dir=stack.folder / "data"))
    context = WorkerContext(database=stack.database, storage=down, models=ModelCache(1),
                            max_attempts=1, requeue=queue.enqueue_render)
    job_id = _input_job(stack)
    assert run_job(job_id, context) == JobStatus.FAILED
    job = stack.get(job_id)
    assert job.error_detail == INPUT_UNAVAILABLE.to_dict() and job.attempts == 1
    assert _messages_for(stack, job_id, after=3600) == []


def test_a_missing_input_fails_the_job_at_once(stack: Stack) -> None:
    # S3 answers 404: no retry and no re-queue brings the object back.
    queue = TaskQueue(Settings(database_url=stack.database.url, data_dir=stack.folder / "data"))
    context = WorkerContext(database=stack.database, storage=stack.storage(),
                            models=ModelCache(1), max_attempts=3, requeue=queue.enqueue_render)
    job_id = _input_job(stack, stored=False)
    assert run_job(job_id, context) == JobStatus.FAILED
    job = stack.get(job_id)
    assert job.error_detail == INPUT_ERROR.to_dict() and job.attempts == 1
    assert _messages_for(stack, job_id, after=3600) == []


def test_a_second_job_on_the_same_model_does_not_reload_it(stack: Stack, tiny_sd: Path) -> None:
    models = ModelCache(1)
    context = WorkerContext(database=stack.database, storage=stack.storage(), models=models)
    request = {"prompt": "a lake", "width": 64, "height": 64, "steps": 2}
    first = stack.job({**request, "seed": 1}, model=str(tiny_sd))
    second = stack.job({**request, "seed": 2}, model=str(tiny_sd))
    assert run_job(first, context) == JobStatus.SUCCEEDED
    assert run_job(second, context) == JobStatus.SUCCEEDED
    assert models.loads == 1
    for job_id in (first, second):
        assert stack.s3.keys(BUCKET, f"renders/{job_id}/") == [
            f"renders/{job_id}/0.json", f"renders/{job_id}/0.png",
            f"renders/{job_id}/0.thumb.webp"]


def test_a_killed_worker_s_job_is_redelivered_to_a_restarted_worker(
        stack: Stack, celery_worker: Callable[..., CeleryWorker]) -> None:
    # Redis database 1: a queue of their own, so the shared worker cannot take the job.
    env = stack.env(redis_db=1)
    settings = Settings(broker_url=env["SPEC2FRACTAL_BROKER_URL"], task_time_limit=TIME_LIMIT)
    visibility = celery_config(settings)["broker_transport_options"]["visibility_timeout"]
    assert visibility == 2 * TIME_LIMIT
    first = celery_worker(env, name="doomed")
    # Long enough to be killed mid-render, short enough for the restarted worker to render it
    # within TIME_LIMIT on a loaded machine (2048² did not, there).
    job_id = stack.job({"prompt": "a lake", "width": 1024, "height": 1024, "seed": 5, "n": 2})
    stack.enqueue(job_id, redis_db=1)
    stack.wait(job_id, JobStatus.RUNNING, worker=first)
    delivered = time.monotonic()
    first.kill()
    job = stack.get(job_id)
    assert (job.status, job.attempts) == (JobStatus.RUNNING, 1), "killed too late"
    # Redis hands an unacknowledged task out again once it is visibility_timeout old; a new
    # worker looks for such tasks as it starts.
    time.sleep(max(0.0, delivered + visibility + 0.5 - time.monotonic()))
    second = celery_worker(env, name="restarted")
    job = stack.wait(job_id, JobStatus.SUCCEEDED, JobStatus.FAILED, timeout=30, worker=second)
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.attempts == 2
    assert stack.s3.keys(BUCKET, f"renders/{job_id}/") == [
        f"renders/{job_id}/0.json", f"renders/{job_id}/0.png", f"renders/{job_id}/0.thumb.webp",
        f"renders/{job_id}/1.json", f"renders/{job_id}/1.png", f"renders/{job_id}/1.thumb.webp"]


def test_presigned_urls_name_the_public_endpoint(stack: Stack) -> None:
    """Workers reach S3 at one address, clients at another: the URL must work for clients."""
    internal = stack.s3.endpoint_url
    public = internal.replace("127.0.0.1", "localhost")
    storage = S3Storage(BUCKET, endpoint_url=internal, public_endpoint_url=public,
                        region=stack.s3.region, create_bucket=False)
    storage.put("renders/x/0.json", b'{"ok": true}', "application/json")
    url = storage.url("renders/x/0.json", 60)
    assert url.startswith(public + "/")
    assert httpx.get(url, timeout=10).content == b'{"ok": true}'
