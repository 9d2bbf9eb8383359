"""Jobs without a worker: they stay queued, so cancel, lists and limits are deterministic.
On each job database (``offline`` here: SQLite and PostgreSQL)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from api.app import create_app
from tests.api.helpers import README_BODY, SMALL
from workers.db import get_database
from workers.settings import Settings
from workers.storage import get_storage

ASYNC = {"Prefer": "respond-async"}


@pytest.fixture
def offline(offline_on_each_database: TestClient) -> TestClient:
    return offline_on_each_database


def _queue(client: TestClient, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        response = client.post("/generate", json={**README_BODY, **SMALL}, headers=ASYNC)
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    return ids


def test_respond_async_is_202_with_location(offline: TestClient) -> None:
    response = offline.post("/generate", json={**README_BODY, **SMALL}, headers=ASYNC)
    assert response.status_code == 202
    job = response.json()
    assert response.headers["location"].endswith(f"/jobs/{job['id']}")
    assert response.headers["preference-applied"] == "respond-async"
    assert job["status"] == "queued"
    assert isinstance(job["request"]["seed"], int)  # resolved by the API, stored
    assert "image" not in job["request"]


def test_cancel_a_queued_job_means_it_never_runs(offline: TestClient) -> None:
    (job_id,) = _queue(offline, 1)
    response = offline.post(f"/jobs/{job_id}/cancel")
    assert response.status_code == 200
    job = response.json()
    assert job["status"] == "cancelled" and job["cancel_requested"]
    assert job["timings"]["started_at"] is None and job["timings"]["finished_at"]
    again = offline.post(f"/jobs/{job_id}/cancel")
    assert again.status_code == 200 and again.json()["status"] == "cancelled"
    events = offline.get(f"/jobs/{job_id}/events").text
    assert "event: queued" in events and "event: cancelled" in events
    assert "event: started" not in events


def test_pagination_with_a_status_filter(offline: TestClient) -> None:
    ids = _queue(offline, 7)
    for job_id in ids[:5]:
        offline.post(f"/jobs/{job_id}/cancel")
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 2, "status": "cancelled", **({"cursor": cursor} if cursor else {})}
        page = offline.get("/jobs", params=params).json()
        pages += 1
        seen += [job["id"] for job in page["jobs"]]
        assert all(job["status"] == "cancelled" for job in page["jobs"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == list(reversed(ids[:5]))  # newest first, each once
    queued = offline.get("/jobs", params={"status": "queued"}).json()
    assert {job["id"] for job in queued["jobs"]} == set(ids[5:])
    assert queued["next_cursor"] is None


def test_full_queue_is_503_with_retry_after(tmp_path: Path, database_url: str) -> None:
    app = create_app(Settings(data_dir=tmp_path, database_url=database_url, max_queued_jobs=1),
                     start_worker=False)
    with TestClient(app) as client:
        assert client.post("/generate", json=README_BODY, headers=ASYNC).status_code == 202
        response = client.post("/generate", json=README_BODY, headers=ASYNC)
        assert response.status_code == 503
        assert int(response.headers["retry-after"]) > 0
        assert "queue" in response.json()["detail"]


def test_sync_wait_runs_out_into_a_202(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path, sync_timeout=0.3), start_worker=False)
    with TestClient(app) as client:
        started = time.monotonic()
        response = client.post("/generate", json=README_BODY)
        assert response.status_code == 202
        assert 0.3 <= time.monotonic() - started < 3
        assert "preference-applied" not in response.headers


def test_files_need_a_valid_unexpired_signature(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    with TestClient(create_app(settings, start_worker=False)) as client:
        storage = get_storage(settings)
        storage.put("renders/x/0.png", b"\x89PNG fake", "image/png")
        url = storage.url("renders/x/0.png", 60)
        good = client.get(url)
        assert good.status_code == 200 and good.headers["content-type"] == "image/png"
        assert good.content == b"\x89PNG fake"
        # HEAD was a 405: now GET's headers, no body, under the same signature rules.
        head = client.head(url)
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-type"] == "image/png"
        assert head.headers["content-length"] == str(len(b"\x89PNG fake"))
        assert head.headers["etag"] == good.headers["etag"]
        assert client.head(url[:-4] + ("0000" if not url.endswith("0000") else "1111")
                           ).status_code == 403
        assert client.head(storage.url("renders/x/9.png", 60)).status_code == 404
        forged = url[:-4] + ("0000" if not url.endswith("0000") else "1111")
        assert client.get(forged).status_code == 403
        # A signature that is not ASCII is a forgery too, not a 500.
        assert client.get(url.split("signature=")[0] + "signature=%C3%A9t%C3%A9"
                          ).status_code == 403
        expires = int(time.time()) - 10
        expired = (f"/files/renders/x/0.png?expires={expires}"
                   f"&signature={storage.signature('renders/x/0.png', expires)}")
        assert client.get(expired).status_code == 403
        assert client.get("/files/renders/x/0.png").status_code == 403
        other = url.replace("renders/x/0.png", "renders/x/1.png")
        assert client.get(other).status_code == 403  # signed for another key
        missing = storage.url("renders/x/9.png", 60)
        assert client.get(missing).status_code == 404
        escape = storage.url("../secret.key", 60)
        assert client.get(escape).status_code in (403, 404)
        assert "secret" not in client.get(escape).text


def test_health_ready_metrics_docs(offline: TestClient) -> None:
    assert offline.get("/health").json() == {"status": "ok"}
    ready = offline.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "storage": "ok", "broker": "ok"}
    ids = _queue(offline, 2)
    offline.post(f"/jobs/{ids[0]}/cancel")
    text = offline.get("/metrics").text
    assert "spec2fractal_queue_depth 1.0" in text
    assert 'spec2fractal_jobs_finished_total{status="cancelled"} 1.0' in text
    assert "spec2fractal_images_rendered_total 0.0" in text
    assert 'spec2fractal_job_duration_seconds_count 1.0' in text
    assert 'spec2fractal_http_requests_total{method="POST",route="/generate",status="202"} 2.0' \
        in text
    assert 'route="/jobs/{job_id}/cancel"' in text
    assert offline.get("/docs").status_code == 200
    assert "/generate" in offline.get("/openapi.json").json()["paths"]


def test_ready_names_what_is_down(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    with TestClient(create_app(settings, start_worker=False)) as client:
        # The embedded queue is a table of the job database: gone, while the database is up.
        with get_database(settings.resolved_database_url).engine.begin() as connection:
            connection.execute(text("DROP TABLE queue_messages"))
        response = client.get("/ready")
        assert response.json()["checks"]["database"] == "ok"
        assert response.status_code == 503
        assert response.json()["checks"]["broker"] == "down"
        assert "broker" in response.json()["detail"]


def test_models_lists_the_operators_models_with_folders_by_name(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, model=str(tmp_path / "my-model"),
                        models=["stabilityai/sd-turbo"])
    with TestClient(create_app(settings, start_worker=False)) as client:
        listed = client.get("/models").json()
    assert listed["default"] == "my-model"
    assert [model["id"] for model in listed["models"]] == ["my-model", "fractal",
                                                           "stabilityai/sd-turbo"]
    assert str(tmp_path) not in str(listed)  # no server path is shown
    assert listed["models"][2]["family"] == "SD 2.1 turbo"


def test_models_and_styles(offline: TestClient) -> None:
    models = offline.get("/models").json()
    assert models["default"] == "fractal"
    assert models["models"][0] == {**models["models"][0], "id": "fractal", "default": True}
    # Only what a request may name here: no hub id the operator did not list.
    assert [model["id"] for model in models["models"]] == ["fractal"]
    styles = {style["name"]: style for style in offline.get("/styles").json()["styles"]}
    assert styles["Impressionist"]["effect"] == "impressionist"
    assert "{prompt}" in styles["Impressionist"]["template"]
    assert styles["Impressionist"]["description"]
