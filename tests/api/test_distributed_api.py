"""The distributed shape end to end: uvicorn API → Redis → Celery worker → SeaweedFS S3.

All real processes on loopback ports. The README's body goes in; a presigned URL comes out
and downloads as an image of the requested size. The API and the worker share a job database
of each kind in turn: PostgreSQL, as in production, and SQLite.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.helpers import README_BODY, decode
from tests.service_fixtures import DATABASES, new_database
from tests.services import (
    ROOT,
    ManagedProcess,
    RedisServer,
    SeaweedS3,
    free_port,
    service_env,
    start_celery_worker,
    wait_for,
)

BUCKET = "api-renders"
REDIS_DB = 3  # apart from the other tests' queues on the shared Redis


@pytest.fixture(scope="module", params=DATABASES)
def distributed_api(request: pytest.FixtureRequest, redis_server: RedisServer,
                    seaweedfs_s3: SeaweedS3,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder: Path = tmp_path_factory.mktemp("distributed-api")
    with new_database(request.param, request, folder) as database_url:
        yield from _serve(folder, database_url, redis_server, seaweedfs_s3)


def _serve(folder: Path, database_url: str, redis_server: RedisServer,
           seaweedfs_s3: SeaweedS3) -> Iterator[str]:
    """The worker, then the API; the API's URL once it is ready."""
    env = {
        "SPEC2FRACTAL_BROKER_URL": redis_server.url(REDIS_DB),
        "SPEC2FRACTAL_DATABASE_URL": database_url,
        "SPEC2FRACTAL_STORAGE_URL": f"s3://{BUCKET}",
        "SPEC2FRACTAL_S3_ENDPOINT_URL": seaweedfs_s3.endpoint_url,
        "SPEC2FRACTAL_DATA_DIR": str(folder / "data"),
        "SPEC2FRACTAL_SYNC_TIMEOUT": "30",
        **seaweedfs_s3.aws_env,
    }
    worker = start_celery_worker(env, folder, name="api-e2e")
    port = free_port()
    api = ManagedProcess("api", [sys.executable, "-c",
                                 f"from api.cli import serve; serve(port={port})"],
                         folder / "api.log", env=service_env(env), cwd=ROOT).start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(f"{base}/ready", timeout=2).status_code == 200,
                 timeout=60, what="the API to be ready", process=api)
        yield base
    finally:
        api.stop()
        worker.stop()


def test_readme_body_through_redis_and_s3(distributed_api: str,
                                          seaweedfs_s3: SeaweedS3) -> None:
    response = httpx.post(f"{distributed_api}/generate", timeout=60,
                          json={**README_BODY, "width": 160, "height": 96})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "success"
    url = body["image_url"]
    assert url.startswith(seaweedfs_s3.endpoint_url + f"/{BUCKET}/renders/{body['job_id']}/0.png")
    image = httpx.get(url, timeout=10)
    assert image.status_code == 200
    assert decode(image.content).size == (160, 96)
    assert seaweedfs_s3.keys(BUCKET, f"renders/{body['job_id']}/") == [
        f"renders/{body['job_id']}/0.json", f"renders/{body['job_id']}/0.png",
        f"renders/{body['job_id']}/0.thumb.webp"]
    thumbnail = httpx.get(body["thumbnail_url"], timeout=10)
    assert thumbnail.status_code == 200 and decode(thumbnail.content).format == "WEBP"
    # Private: the same object without the signature is refused.
    assert httpx.get(url.split("?")[0], timeout=10).status_code == 403
    ready = httpx.get(f"{distributed_api}/ready", timeout=10).json()
    assert ready["status"] == "ready"
