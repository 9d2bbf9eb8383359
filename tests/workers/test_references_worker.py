"""A job's reference images on the worker's side: read back from storage by the hash its row
names, the request rebuilt whole for the library; a reference gone from storage fails the
job at once, naming the field. The API (offline: no worker of its own) queues the jobs; the
worker runs in this process on the same database and storage."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.app import create_app
from fractal.references import pixel_hash
from tests.api.helpers import data_url, png_bytes
from workers import job_errors
from workers.db import JobStatus
from workers.db import jobs as job_store
from workers.model_cache import ModelCache
from workers.references import reference_key
from workers.runner import WorkerContext, run_job
from workers.settings import Settings

BODY = {"content": "a harbour at dusk", "width": 64, "height": 64, "seed": 9}


@pytest.fixture
def api(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(data_dir=tmp_path), start_worker=False)) as client:
        yield client


def _context(client: TestClient) -> WorkerContext:
    state = client.app.state  # type: ignore[attr-defined]
    return WorkerContext(database=state.database, storage=state.storage, models=ModelCache(1),
                         max_attempts=3)


def _queue(client: TestClient, **extra: object) -> str:
    response = client.post("/generate", headers={"Prefer": "respond-async"},
                           json={**BODY, **extra})
    assert response.status_code == 202, response.text
    return response.json()["id"]


def _hash(raw: bytes) -> str:
    return pixel_hash(Image.open(io.BytesIO(raw)).convert("RGB"))


def test_the_worker_renders_the_references_its_row_names(api: TestClient) -> None:
    style, edges = png_bytes(32, 32, "crimson"), png_bytes(64, 64, "white")
    job_id = _queue(api, style_image=data_url(style), style_strength=0.9,
                    control=[{"type": "image", "image": data_url(edges), "scale": 0.5}])
    context = _context(api)
    with context.database.session() as session:
        row = job_store.get_job(session, job_id)
        assert row is not None
        assert row.request["style_image"] == f"sha256:{_hash(style)}"
        assert row.request["control"][0]["image"] == f"sha256:{_hash(edges)}"
    assert run_job(job_id, context) == JobStatus.SUCCEEDED
    record = api.get(f"/jobs/{job_id}").json()["outputs"][0]["record"]
    assert record["style_reference"]["sha256"] == _hash(style)
    assert record["controls"][0]["sha256"] == _hash(edges)
    # The style changes the picture: the same job without it renders otherwise.
    plain = _queue(api)
    assert run_job(plain, context) == JobStatus.SUCCEEDED
    urls = [api.get(f"/jobs/{job}").json()["outputs"][0]["url"] for job in (job_id, plain)]
    assert api.get(urls[0]).content != api.get(urls[1]).content


@pytest.mark.parametrize("field", ["style_image", "control[1].image"])
def test_a_reference_gone_from_storage_fails_the_job_naming_it(api: TestClient,
                                                               field: str) -> None:
    style, first, second = (png_bytes(16, 16, color) for color in ("gold", "gray", "olive"))
    job_id = _queue(api, style_image=data_url(style), control=[
        {"type": "image", "image": data_url(first)},
        {"type": "canny", "image": data_url(second)}])
    context = _context(api)
    gone = style if field == "style_image" else second
    context.storage.path(reference_key(_hash(gone))).unlink()  # type: ignore[attr-defined]
    assert run_job(job_id, context) == JobStatus.FAILED
    job = api.get(f"/jobs/{job_id}").json()
    assert job["error_detail"]["code"] == job_errors.INPUT_MISSING
    assert job["error_detail"]["field"] == field
    assert field in job["error"]
    assert job["attempts"] == 1  # missing is final: no retry brings it back
