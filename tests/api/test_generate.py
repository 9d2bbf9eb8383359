"""POST /generate end to end in-process, with a real embedded worker on its queue."""

from __future__ import annotations

import io
import threading
import time
from datetime import datetime
from pathlib import Path

from fastapi.testclient import TestClient
from PIL import Image

from tests.api.conftest import UNLOADABLE_MODEL
from tests.api.helpers import (
    README_BODY,
    SMALL,
    data_url,
    decode,
    parse_sse,
    png_bytes,
    wait_status,
)
from workers.db import get_database
from workers.db import messages as message_store
from workers.settings import Settings


def test_readme_body_renders_and_the_url_downloads(rendering: TestClient) -> None:
    response = rendering.post("/generate", json={**README_BODY, **SMALL})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "success" and body["image_urls"] == [body["image_url"]]
    assert isinstance(body["seed"], int) and body["job_id"]
    image = decode(rendering.get(body["image_url"]).content)
    assert image.size == (128, 64)
    job = rendering.get(f"/jobs/{body['job_id']}").json()
    assert job["status"] == "succeeded" and job["attempts"] == 1
    assert job["timings"]["queue_seconds"] >= 0 and job["timings"]["render_seconds"] > 0
    assert job["progress"]["step"] == job["progress"]["total"] > 0
    record = rendering.get(job["outputs"][0]["record_url"]).json()
    assert record["seed"] == body["seed"]


def test_every_option_round_trips_into_the_record(rendering: TestClient) -> None:
    options = {"input_type": "text", "prompt": "a lighthouse at dusk",
               "negative_prompt": "blurry", "width": 96, "height": 64, "steps": 4,
               "guidance": 6.5, "seed": 1234, "scheduler": "euler", "style": "Watercolor",
               "lighting": "sunset", "colors": ["#112233", "teal"], "texture": 0.4, "n": 2,
               "model": "fractal", "output_format": "webp"}
    response = rendering.post("/generate", json=options)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["seeds"] == [1234, 1235] and len(body["image_urls"]) == 2
    job = body["job"]
    stored = job["request"]
    for key in ("prompt", "negative_prompt", "width", "height", "steps", "guidance", "seed",
                "scheduler", "style", "lighting", "colors", "texture", "n", "model"):
        assert stored[key] == options[key], key
    assert job["output_format"] == "webp"
    for output in job["outputs"]:
        assert output["format"] == "webp" and (output["width"], output["height"]) == (96, 64)
        assert output["record"]["seed"] == output["seed"]
        assert output["record"]["prompt"].startswith("a lighthouse at dusk")
        download = rendering.get(output["url"])
        assert download.headers["content-type"] == "image/webp"
        assert decode(download.content).format == "WEBP"


def test_multipart_upload_image_to_image(rendering: TestClient) -> None:
    response = rendering.post(
        "/generate",
        data={"input_type": "hybrid", "content": "a stormy sea", "strength": "0.6",
              "width": "64", "height": "48", "seed": "7", "colors": "navy,white"},
        files={"image": ("photo.png", png_bytes(), "image/png")})
    assert response.status_code == 200, response.text
    job = response.json()["job"]
    assert job["request"]["input_type"] == "hybrid" and job["request"]["strength"] == 0.6
    assert job["request"]["colors"] == ["navy", "white"] and "image" not in job["request"]
    assert decode(rendering.get(response.json()["image_url"]).content).size == (64, 48)


def test_data_url_image_to_image_and_bad_upload(rendering: TestClient) -> None:
    ok = rendering.post("/generate", json={"input_type": "image", "seed": 3,
                                           "image": data_url(png_bytes(80, 40))})
    assert ok.status_code == 200, ok.text
    assert decode(rendering.get(ok.json()["image_url"]).content).size[0] > 0
    bad = rendering.post("/generate", data={"input_type": "image"},
                         files={"image": ("x.png", b"not an image", "image/png")})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "image"]


def test_events_arrive_in_order(rendering: TestClient) -> None:
    job = rendering.post("/generate", json={**README_BODY, **SMALL},
                         headers={"Prefer": "respond-async"}).json()
    events = parse_sse(rendering.get(job["links"]["events"]).text)
    names = [name for name, _ in events]
    assert names[:2] == ["queued", "started"] and names[-1] == "succeeded"
    assert set(names[2:-1]) == {"progress"} and len(names) >= 4
    steps = [data["step"] for name, data in events if name == "progress"]
    assert steps == sorted(steps)
    assert events[-1][1]["outputs"][0]["url"].startswith("http")
    # A late client gets the same story, caught up from the row.
    late = [name for name, _ in parse_sse(rendering.get(job["links"]["events"]).text)]
    assert late == ["queued", "started", "progress", "succeeded"]


def test_a_model_the_worker_cannot_load_is_the_callers_422(rendering: TestClient) -> None:
    response = rendering.post("/generate", json={**README_BODY, **SMALL,
                                                 "model": UNLOADABLE_MODEL})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["detail"][0]["loc"] == ["body", "model"]
    assert body["job"]["status"] == "failed" and body["job_id"]


def test_a_model_the_server_does_not_serve_is_refused_before_any_job(
        rendering: TestClient) -> None:
    before = len(rendering.get("/jobs", params={"limit": 100}).json()["jobs"])
    for model in ("/etc", "../../models/private", "stabilityai/sd-turbo", "file:///etc/x"):
        response = rendering.post("/generate", json={**README_BODY, **SMALL, "model": model})
        assert response.status_code == 422, model
        error = response.json()["detail"][0]
        assert error["loc"] == ["body", "model"] and "does not serve" in error["msg"]
        assert "fractal" in error["ctx"]["choices"]
    assert len(rendering.get("/jobs", params={"limit": 100}).json()["jobs"]) == before


def _large_png() -> bytes:
    """The largest input the API takes (6144×4096): its PNG takes the server a while to store."""
    ramp = Image.linear_gradient("L").resize((6144, 4096))
    buffer = io.BytesIO()
    Image.merge("RGB", (ramp, ramp.transpose(Image.Transpose.FLIP_LEFT_RIGHT), ramp)).save(
        buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def test_concurrent_large_image_jobs_end_at_once(rendering: TestClient) -> None:
    # Issue #16.4: a job's row was claimable (as another job's batch partner) before its
    # input was stored; the partner's read failed, the task died, and every job of the batch
    # sat `running` until its lease ran out (120 s) instead of ending in about a second.
    upload = _large_png()
    answers: list[dict] = []

    def submit(seed: int) -> None:
        response = rendering.post(
            "/generate", data={"input_type": "hybrid", "content": "a stormy sea",
                               "width": "96", "height": "64", "seed": str(seed)},
            files={"image": ("large.png", upload, "image/png")},
            headers={"Prefer": "respond-async"})
        assert response.status_code == 202, response.text
        answers.append(response.json())

    started = time.monotonic()
    threads = [threading.Thread(target=submit, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(answers) == 4
    jobs = [wait_status(rendering.get, answer["id"], {"succeeded", "failed", "cancelled"},
                        timeout=60) for answer in answers]
    assert [job["status"] for job in jobs] == ["succeeded"] * 4, [job["error"] for job in jobs]
    assert time.monotonic() - started < 60
    for job in jobs:
        timings = job["timings"]
        waited = (datetime.fromisoformat(timings["finished_at"])
                  - datetime.fromisoformat(timings["created_at"])).total_seconds()
        assert waited < 30, job
        assert job["attempts"] == 1


def test_no_job_exists_before_its_input_is_stored(offline: TestClient,
                                                    tmp_path: Path) -> None:
    # The images folder in a failing state: where the inputs go is a file, not a folder.
    (tmp_path / "images" / "inputs").write_bytes(b"")
    response = offline.post("/generate", data={"input_type": "image", "seed": "1"},
                            files={"image": ("photo.png", png_bytes(), "image/png")},
                            headers={"Prefer": "respond-async"})
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "10"
    assert response.json()["detail"] == "image storage is unavailable; try again later"
    # Stored first, then the row: with the input missing there is no row a worker (or a
    # batch partner's claim) could take, nor a message.
    assert offline.get("/jobs").json()["jobs"] == []
    database = get_database(Settings(data_dir=tmp_path).resolved_database_url)
    with database.session() as session:
        assert message_store.count(session) == 0
