"""Thumbnails: every image a worker stores gets a WebP ≤ 512 px beside it, and every job view
lists its URL next to the full one. Against ``spec2fractal serve`` (its embedded worker, the
built-in engine) and its local storage; tests/api/test_distributed_api.py checks S3."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image

from tests.api_server import ApiServer, serving
from workers.db import JobStatus, get_database
from workers.db import jobs as job_store
from workers.encoding import THUMBNAIL_SIDE, encode_thumbnail
from workers.settings import Settings


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    with serving(tmp_path_factory.mktemp("thumbnails"),
                 SPEC2FRACTAL_SYNC_TIMEOUT="60") as api:
        yield api


def _image(raw: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(raw))
    image.load()
    return image


def _generate(server: ApiServer, **body: object) -> dict:
    response = httpx.post(f"{server.url}/generate", timeout=90,
                          json={"prompt": "a spiral galaxy", **body})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize(("width", "height", "thumb"), [
    (1024, 576, (512, 288)),  # wide: the width is brought to 512, the aspect kept
    (320, 1280, (128, 512)),  # tall: the height is
    (96, 64, (96, 64)),  # already small: never enlarged
])
def test_stored_images_have_a_webp_thumbnail(server: ApiServer, width: int, height: int,
                                             thumb: tuple[int, int]) -> None:
    body = _generate(server, width=width, height=height, n=2, output_format="jpeg")
    assert len(body["thumbnail_urls"]) == len(body["image_urls"]) == 2
    assert body["thumbnail_url"] == body["thumbnail_urls"][0]
    for full_url, thumb_url in zip(body["image_urls"], body["thumbnail_urls"], strict=True):
        full = httpx.get(full_url, timeout=10)
        small = httpx.get(thumb_url, timeout=10)
        assert full.status_code == small.status_code == 200
        assert small.headers["content-type"] == "image/webp"
        image = _image(small.content)
        assert image.format == "WEBP" and image.size == thumb
        assert max(image.size) <= THUMBNAIL_SIDE
        assert _image(full.content).size == (width, height)
        if width * height > THUMBNAIL_SIDE ** 2:
            assert len(small.content) < len(full.content)
    # Beside the image in storage, signed like it.
    job_id = body["job_id"]
    for index in (0, 1):
        assert (server.data_dir / "images" / "renders" / job_id / f"{index}.thumb.webp").is_file()
    assert "signature=" in body["thumbnail_url"] and "expires=" in body["thumbnail_url"]
    unsigned = body["thumbnail_url"].split("?")[0]
    assert httpx.get(unsigned, timeout=10).status_code == 403


def test_every_job_view_lists_the_thumbnails(server: ApiServer) -> None:
    body = _generate(server, width=128, height=96)
    job_id = body["job_id"]
    path = f"renders/{job_id}/0.thumb.webp"

    def thumb_of(output: dict) -> str:
        assert output["thumbnail_url"] != output["url"]
        assert path in output["thumbnail_url"]
        return output["thumbnail_url"]

    thumb_of(body["job"]["outputs"][0])
    thumb_of(httpx.get(f"{server.url}/jobs/{job_id}", timeout=10).json()["outputs"][0])
    listed = httpx.get(f"{server.url}/jobs", params={"limit": 100}, timeout=10).json()
    [job] = [job for job in listed["jobs"] if job["id"] == job_id]
    assert httpx.get(thumb_of(job["outputs"][0]), timeout=10).status_code == 200

    batch = httpx.post(f"{server.url}/batches", timeout=10, json={
        "items": [{"prompt": "a fern", "width": 64, "height": 64}]}).json()
    results = f"{server.url}/batches/{batch['id']}/results"
    for _ in range(300):
        [line] = [json.loads(text) for text in
                  httpx.get(results, timeout=10).text.splitlines()]
        if line["status"] == "succeeded":
            break
        time.sleep(0.1)
    assert line["status"] == "succeeded"
    assert len(line["thumbnail_urls"]) == len(line["urls"]) == 1
    assert ".thumb.webp" in line["thumbnail_urls"][0]
    assert _image(httpx.get(line["thumbnail_urls"][0], timeout=10).content).format == "WEBP"


def test_a_job_stored_before_thumbnails_still_answers(server: ApiServer) -> None:
    body = _generate(server, width=64, height=64)
    job_id = body["job_id"]
    # As a job finished before this change was stored: its outputs name no thumbnail.
    database = get_database(Settings(data_dir=server.data_dir).resolved_database_url)
    with database.session() as session:
        outputs = job_store.get_job(session, job_id).outputs
        old = [{key: value for key, value in output.items() if key != "thumbnail_key"}
               for output in outputs]
        job_store.finish_job(session, job_id, JobStatus.SUCCEEDED, outputs=old)
    (server.data_dir / "images" / "renders" / job_id / "0.thumb.webp").unlink()

    answer = httpx.get(f"{server.url}/jobs/{job_id}", timeout=10)
    assert answer.status_code == 200, answer.text
    [output] = answer.json()["outputs"]
    # The full image stands in, so a page can always show something.
    assert output["thumbnail_url"] == output["url"]
    assert httpx.get(output["thumbnail_url"], timeout=10).status_code == 200
    listed = httpx.get(f"{server.url}/jobs", params={"limit": 100}, timeout=10)
    assert listed.status_code == 200


def test_thumbnail_keeps_transparency_and_mode() -> None:
    for mode in ("RGB", "RGBA", "L", "P"):
        image = Image.new(mode, (2048, 1024))
        small = _image(encode_thumbnail(image))
        assert small.format == "WEBP" and small.size == (512, 256), mode
    assert _image(encode_thumbnail(Image.new("RGBA", (64, 64)))).mode == "RGBA"
