"""Inpainting and outpainting through POST /generate and POST /batches: the mask as a data URL
or a multipart file part reaches a real embedded worker, which renders on the built-in engine;
the job row names the mask by hash (storage holds it as the library reads it, "L"); every bad
value is a 422 naming its field, a mask of another size than the image's among them; a mask
gone from storage fails its job naming `mask`."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from api.app import create_app
from fractal.images import load_mask
from fractal.references import pixel_hash
from tests.api.helpers import data_url, png_bytes
from workers import job_errors
from workers.db import JobStatus
from workers.model_cache import ModelCache
from workers.references import reference_key
from workers.runner import WorkerContext, run_job
from workers.settings import Settings

PROMPT = "a red boat on a calm lake"
IMAGE = png_bytes(64, 64, "teal")


def _mask_png(size: tuple[int, int] = (64, 64), box: tuple[int, ...] = (16, 16, 47, 47)
              ) -> bytes:
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).rectangle(box, fill=255)
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    return buffer.getvalue()


MASK = _mask_png()
MASK_HASH = pixel_hash(load_mask(MASK))
BODY = {"input_type": "hybrid", "content": PROMPT, "seed": 5, "image": data_url(IMAGE)}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, start_worker) -> Iterator[TestClient]:
    data_dir = tmp_path_factory.mktemp("inpaint")
    settings = Settings(data_dir=data_dir, sync_timeout=30, rate_limit="1000/second")
    with TestClient(create_app(settings, start_worker=False)) as client:
        start_worker(data_dir)
        yield client


def _pixels(client: TestClient, job: dict) -> np.ndarray:
    raw = client.get(job["outputs"][0]["url"]).content
    return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))


def _outside_kept(client: TestClient, job: dict) -> None:
    """Far from the mask's (blurred) edge, the result's pixels are the input's."""
    result = _pixels(client, job)
    source = np.asarray(Image.open(io.BytesIO(IMAGE)).convert("RGB"))
    assert result.shape == source.shape
    keep = np.asarray(load_mask(MASK)) == 0
    keep[8:56, 8:56] = False  # the blur's reach around the 16..47 square
    assert np.array_equal(result[keep], source[keep])
    assert not np.array_equal(result[24:40, 24:40], source[24:40, 24:40])  # repainted


def test_a_json_inpaint_job_renders_and_the_row_names_the_mask_by_hash(
        service: TestClient) -> None:
    response = service.post("/generate", json={**BODY, "mask": data_url(MASK),
                                                "mask_blur": 2})
    assert response.status_code == 200, response.text
    job = response.json()["job"]
    assert job["request"]["mask"] == f"sha256:{MASK_HASH}"
    assert job["request"]["mask_blur"] == 2
    assert "base64" not in json.dumps(job["request"])
    root: Path = service.app.state.storage.root  # type: ignore[attr-defined]
    stored = Image.open(root / reference_key(MASK_HASH))
    assert stored.mode == "L" and pixel_hash(stored) == MASK_HASH
    _outside_kept(service, job)


def test_a_multipart_inpaint_job_renders(service: TestClient) -> None:
    # An RGBA mask read as OpenAI reads one: the transparent square is repainted.
    rgba = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
    ImageDraw.Draw(rgba).rectangle((16, 16, 47, 47), fill=(0, 0, 0, 0))
    buffer = io.BytesIO()
    rgba.save(buffer, format="PNG")
    response = service.post("/generate", data={
        "input_type": "hybrid", "content": PROMPT, "seed": "5", "mask_blur": "2",
        "inpaint_area": "masked", "padding": "8"},
        files=[("image", ("i.png", IMAGE, "image/png")),
               ("mask", ("m.png", buffer.getvalue(), "image/png"))])
    assert response.status_code == 200, response.text
    job = response.json()["job"]
    assert job["request"]["mask"] == f"sha256:{MASK_HASH}"  # the same pixels as MASK
    assert job["request"]["inpaint_area"] == "masked"
    assert job["request"]["padding"] == 8
    _outside_kept(service, job)


def test_an_outpaint_job_grows_the_canvas(service: TestClient) -> None:
    response = service.post("/generate", data={
        "input_type": "image", "seed": "1", "expand": '{"left": 16, "top": 8}'},
        files=[("image", ("i.png", IMAGE, "image/png"))])
    assert response.status_code == 200, response.text
    job = response.json()["job"]
    assert job["request"]["expand"] == {"left": 16, "top": 8}
    assert _pixels(service, job).shape == (72, 80, 3)


def test_batch_items_carry_masks(service: TestClient) -> None:
    response = service.post("/batches", json={
        "template": {**BODY, "mask": data_url(MASK)}, "grid": {"seed": [1, 2]}})
    assert response.status_code == 201, response.text
    results: list[dict] = []
    batch = response.json()["id"]
    for _ in range(300):
        results = [json.loads(line) for line in
                   service.get(f"/batches/{batch}/results").text.splitlines() if line]
        if results and all(item["status"] in ("succeeded", "failed") for item in results):
            break
        service.get("/health")
    assert [item["status"] for item in results] == ["succeeded", "succeeded"]
    job = service.get(f"/jobs/{results[0]['job_id']}").json()
    assert job["request"]["mask"] == f"sha256:{MASK_HASH}"


def test_a_batch_items_mask_of_another_size_is_a_422_naming_it(service: TestClient) -> None:
    response = service.post("/batches", json={"items": [
        {**BODY, "mask": data_url(MASK)}, {**BODY, "mask": data_url(_mask_png((32, 64)))}]})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"][0]
    assert detail["loc"] == ["body", "items", 1, "mask"]
    assert "32x64" in detail["msg"] and "64x64" in detail["msg"]


BAD_IMAGE = "data:image/png;base64," + "A" * 40


@pytest.mark.parametrize(("extra", "loc"), [
    ({"mask": 5}, ["body", "mask"]),
    ({"mask": BAD_IMAGE}, ["body", "mask"]),
    ({"mask": "not base64!"}, ["body", "mask"]),
    ({"mask": "sha256:" + "0" * 64}, ["body", "mask"]),
    ({"mask": "upload:sha256:" + "0" * 64}, ["body", "mask"]),
    ({"mask": data_url(_mask_png((32, 32)))}, ["body", "mask"]),
    ({"mask": data_url(MASK), "input_type": "text", "image": None}, ["body", "mask"]),
    ({"mask": data_url(MASK), "image": None}, ["body", "image"]),
    ({"mask_blur": 4}, ["body", "mask_blur"]),
    ({"mask": data_url(MASK), "mask_blur": -1}, ["body", "mask_blur"]),
    ({"mask": data_url(MASK), "mask_blur": 10**9}, ["body", "mask_blur"]),
    ({"mask": data_url(MASK), "mask_blur": True}, ["body", "mask_blur"]),
    ({"mask": data_url(MASK), "mask_blur": 2.5}, ["body", "mask_blur"]),
    ({"mask": data_url(MASK), "mask_blur": "4"}, ["body", "mask_blur"]),
    ({"mask": data_url(MASK), "inpaint_area": "sky"}, ["body", "inpaint_area"]),
    ({"mask": data_url(MASK), "inpaint_area": 1}, ["body", "inpaint_area"]),
    ({"mask": data_url(MASK), "padding": 8}, ["body", "padding"]),
    ({"mask": data_url(MASK), "inpaint_area": "masked", "padding": -8}, ["body", "padding"]),
    ({"expand": {"left": 12}}, ["body", "expand", "left"]),
    ({"expand": {"left": 10**9}}, ["body", "expand", "left"]),
    ({"expand": {"left": -8}}, ["body", "expand", "left"]),
    ({"expand": {"left": "64"}}, ["body", "expand", "left"]),
    ({"expand": {"left": True}}, ["body", "expand", "left"]),
    ({"expand": {"left": 8.0}}, ["body", "expand", "left"]),
    ({"expand": {"middle": 8}}, ["body", "expand", "middle"]),
    ({"expand": {"left": 0}}, ["body", "expand"]),
    ({"expand": [8, 8]}, ["body", "expand"]),
    ({"expand": "left=8"}, ["body", "expand"]),
    ({"expand": {str(index): 8 for index in range(10_000)}}, ["body", "expand"]),
    ({"expand": {"left": 8, "x" * 100_000: 8}}, ["body", "expand"]),
    ({"expand": {"0": 8}}, ["body", "expand", "0"]),
])
def test_bad_inpaint_fields_are_422_naming_them(service: TestClient, extra: dict,
                                                loc: list) -> None:
    body = {key: value for key, value in {**BODY, **extra}.items() if value is not None}
    response = service.post("/generate", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][:len(loc)] == loc, response.text
    assert len(response.text) < 5000  # no data echoed back


def test_a_mask_of_another_size_says_both_sizes(service: TestClient) -> None:
    response = service.post("/generate", json={**BODY, "mask": data_url(_mask_png((48, 64)))})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"][0]
    assert detail["loc"] == ["body", "mask"]
    assert "48x64" in detail["msg"] and "64x64" in detail["msg"]


@pytest.mark.parametrize("text", ['{"mask_blur": NaN}', '{"expand": {"left": Infinity}}',
                                  '{"mask": "\\ud800"}', '{"inpaint_area": "\\udc00"}',
                                  '{"expand": {"\\ud800": 8}}', '{"padding": 1e999}'])
def test_non_finite_numbers_and_lone_surrogates_are_422(service: TestClient,
                                                        text: str) -> None:
    response = service.post("/generate", content=text,
                            headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][1] in (
        "mask_blur", "expand", "mask", "inpaint_area", "padding")


@pytest.mark.parametrize(("files", "data", "loc"), [
    ([("mask", ("m.png", b"\x89PNG broken", "image/png"))], {}, ["body", "mask"]),
    ([("mask", ("m.png", MASK, "image/png"))] * 2, {}, ["body", "mask"]),
    ([("mask", ("m.png", _mask_png((64, 32)), "image/png"))], {}, ["body", "mask"]),
    ([], {"expand": '{"left": 8'}, ["body", "expand", 10]),
    ([], {"expand": '{"left": NaN}'}, ["body", "expand", "left"]),
    ([], {"expand": '{"left": 7}'}, ["body", "expand", "left"]),
    ([], {"mask_blur": "x"}, ["body", "mask_blur"]),
])
def test_bad_multipart_parts_are_422_naming_them(service: TestClient, files: list,
                                                 data: dict, loc: list) -> None:
    response = service.post("/generate", data={"input_type": "hybrid", "content": PROMPT,
                                                **data},
                            files=[("image", ("i.png", IMAGE, "image/png")), *files])
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == loc, response.text


def test_the_openapi_documents_the_fields(service: TestClient) -> None:
    operation = service.get("/openapi.json").json()["paths"]["/generate"]["post"]
    content = operation["requestBody"]["content"]
    for media in ("application/json", "multipart/form-data"):
        properties = content[media]["schema"]["properties"]
        assert {"mask", "mask_blur", "inpaint_area", "padding", "expand"} <= set(properties)
    assert content["multipart/form-data"]["schema"]["properties"]["mask"]["format"] == "binary"


def test_a_mask_gone_from_storage_fails_the_job_naming_it(tmp_path: Path) -> None:
    with TestClient(create_app(Settings(data_dir=tmp_path), start_worker=False)) as api:
        response = api.post("/generate", headers={"Prefer": "respond-async"},
                            json={**BODY, "mask": data_url(MASK)})
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        state = api.app.state  # type: ignore[attr-defined]
        context = WorkerContext(database=state.database, storage=state.storage,
                                models=ModelCache(1), max_attempts=3)
        context.storage.path(reference_key(MASK_HASH)).unlink()  # type: ignore[attr-defined]
        assert run_job(job_id, context) == JobStatus.FAILED
        job = api.get(f"/jobs/{job_id}").json()
    assert job["error_detail"]["code"] == job_errors.INPUT_MISSING
    assert job["error_detail"]["field"] == "mask"
    assert "mask" in job["error"]
