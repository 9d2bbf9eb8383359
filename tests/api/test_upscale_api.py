"""Upscaling through the service: ``input_type "upscale"`` on POST /generate and in batches,
POST /jobs/{id}/upscale on a finished job's image, and ``hires`` on requests. A real
embedded worker renders with the built-in engine."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.app import create_app
from fractal import Spec2Fractal
from tests.api.auth_helpers import bearer, make_key, secured
from tests.api.conftest import UNLOADABLE_MODEL
from tests.api.helpers import data_url, decode, png_bytes

PROMPT = "a lighthouse on a cliff above a stormy sea"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, start_worker
            ) -> Iterator[tuple[TestClient, dict[str, str], dict[str, str]]]:
    """Keys required; two callers (alice, bob); one worker."""
    data_dir = tmp_path_factory.mktemp("upscale")
    settings = secured(data_dir, sync_timeout=30, models=[UNLOADABLE_MODEL],
                       rate_limit="1000/second")
    with TestClient(create_app(settings, start_worker=False)) as client:
        alice, bob = (bearer(make_key(settings, name)) for name in ("alice", "bob"))
        start_worker(data_dir)
        yield client, alice, bob


def _render(client: TestClient, key: dict[str, str], **options: object) -> dict:
    body = {"input_type": "text", "content": PROMPT, "width": 96, "height": 64, "seed": 5,
            **options}
    response = client.post("/generate", json=body, headers=key)
    assert response.status_code == 200, response.text
    return response.json()


def _pixels(raw: bytes) -> np.ndarray:
    return np.asarray(decode(raw).convert("RGB"))


def _record(client: TestClient, key: dict[str, str], result: dict) -> dict:
    return result["job"]["outputs"][0]["record"]


def test_generate_upscales_an_uploaded_image(service) -> None:
    client, alice, _ = service
    # An engine PNG from the library carries its record: the worker draws it again.
    source = Spec2Fractal().generate_from_text(PROMPT, width=96, height=64, seed=5)
    buffer = io.BytesIO()
    source.save(buffer, format="PNG")
    response = client.post("/generate", headers=alice, json={
        "input_type": "upscale", "image": data_url(buffer.getvalue()), "scale": 2})
    assert response.status_code == 200, response.text
    result = response.json()
    assert decode(client.get(result["image_url"], headers=alice).content).size == (192, 128)
    record = _record(client, alice, result)
    assert record["input_type"] == "upscale" and record["scale"] == 2
    assert record["passes"][0]["upscaler"] == "engine re-render"
    assert result["job"]["request"]["scale"] == 2 and "image" not in result["job"]["request"]

    foreign = client.post("/generate", headers=alice,
                          data={"input_type": "upscale", "scale": "4"},
                          files={"image": ("photo.png", png_bytes(40, 30), "image/png")})
    assert foreign.status_code == 200, foreign.text
    assert decode(client.get(foreign.json()["image_url"], headers=alice).content).size == \
        (160, 120)
    assert _record(client, alice, foreign.json())["passes"][0]["upscaler"] == \
        "Lanczos + detail"


def test_upscale_a_finished_job_without_sending_it_again(service) -> None:
    client, alice, _ = service
    job = _render(client, alice, output_format="webp")  # a WebP holds no record chunk
    response = client.post(f"/jobs/{job['job_id']}/upscale", headers=alice,
                           json={"index": 0, "scale": 2, "output_format": "png"})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["job_id"] != job["job_id"]
    assert result["job"]["request"]["input_type"] == "upscale"
    assert result["job"]["output_format"] == "png"
    upscaled = client.get(result["image_url"], headers=alice).content
    assert decode(upscaled).size == (192, 128)
    assert _record(client, alice, result)["passes"][0]["upscaler"] == "engine re-render"
    # The same scene, drawn again: what a direct render at the new size gives.
    direct = _render(client, alice, width=192, height=128)
    assert np.array_equal(_pixels(upscaled),
                          _pixels(client.get(direct["image_url"], headers=alice).content))

    # No body: index 0, scale 2; the new job is the caller's, and answers asynchronously too.
    later = client.post(f"/jobs/{job['job_id']}/upscale", headers={
        **alice, "Prefer": "respond-async"})
    assert later.status_code in (200, 202), later.text
    new_id = later.json()["job_id"] if later.status_code == 200 else later.json()["id"]
    assert client.get(f"/jobs/{new_id}", headers=alice).status_code == 200


def test_another_keys_job_or_an_unknown_one_is_404(service) -> None:
    client, alice, bob = service
    job = _render(client, alice)
    for key, job_id in ((bob, job["job_id"]), (alice, "no-such-job")):
        response = client.post(f"/jobs/{job_id}/upscale", headers=key, json={"scale": 2})
        assert response.status_code == 404, response.text
    assert client.post(f"/jobs/{job['job_id']}/upscale", json={}).status_code == 401


def test_a_job_that_did_not_succeed_is_409(service) -> None:
    client, alice, _ = service
    failed = client.post("/generate", headers={**alice, "Prefer": "respond-async"}, json={
        "content": PROMPT, "width": 64, "height": 64, "model": UNLOADABLE_MODEL})
    assert failed.status_code == 202, failed.text
    job_id = failed.json()["id"]
    deadline = time.monotonic() + 120  # a loaded machine: the worker may be slow to start
    while client.get(f"/jobs/{job_id}", headers=alice).json()["status"] != "failed":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    response = client.post(f"/jobs/{job_id}/upscale", headers=alice, json={})
    assert response.status_code == 409 and "has not succeeded" in response.text


@pytest.mark.parametrize(("body", "field"), [
    ({"index": 3}, "index"), ({"index": -1}, "index"), ({"index": "0"}, "index"),
    ({"index": True}, "index"), ({"scale": 3}, "scale"), ({"scale": "2"}, "scale"),
    ({"scale": 2.0}, "scale"), ({"strength": 1.5}, "strength"), ({"prompt": 7}, "prompt"),
    ({"seed": -4}, "seed"), ({"output_format": "gif"}, "output_format"),
    ({"width": 512}, "width"),
])
def test_a_bad_upscale_body_is_422_naming_the_field(service, body: dict, field: str) -> None:
    client, alice, _ = service
    job = _render(client, alice, seed=6)
    before = len(client.get("/jobs", headers=alice, params={"limit": 100}).json()["jobs"])
    response = client.post(f"/jobs/{job['job_id']}/upscale", headers=alice, json=body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][:2] == ["body", field]
    after = len(client.get("/jobs", headers=alice, params={"limit": 100}).json()["jobs"])
    assert after == before  # refused before any job was made


def test_a_result_over_4096_is_422_naming_scale_before_any_job(service) -> None:
    client, alice, _ = service
    wide = _render(client, alice, width=2056, height=32)
    response = client.post(f"/jobs/{wide['job_id']}/upscale", headers=alice, json={})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"][0]
    assert detail["loc"] == ["body", "scale"] and "4112x64" in detail["msg"]
    direct = client.post("/generate", headers=alice, json={
        "input_type": "upscale", "scale": 4, "image": data_url(png_bytes(1100, 64))})
    assert direct.status_code == 422 and direct.json()["detail"][0]["loc"] == ["body", "scale"]


@pytest.mark.parametrize(("body", "field"), [
    ({"input_type": "upscale"}, "image"),
    ({"input_type": "upscale", "scale": 3}, "scale"),
    ({"input_type": "upscale", "scale": "2"}, "scale"),
    ({"input_type": "upscale", "width": 256}, "width"),
    ({"input_type": "text", "content": PROMPT, "scale": 2}, "scale"),
])
def test_bad_upscale_requests_on_generate_are_422(service, body: dict, field: str) -> None:
    client, alice, _ = service
    if body.get("input_type") == "upscale" and field != "image":
        body = {**body, "image": data_url(png_bytes())}
    response = client.post("/generate", headers=alice, json=body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][:2] == ["body", field]


def test_hires_is_accepted_and_recorded_in_the_request(service) -> None:
    client, alice, _ = service
    for hires in ("auto", "off", {"strength": 0.4, "steps": 3}):
        result = _render(client, alice, width=64, height=64, hires=hires)
        assert result["job"]["request"]["hires"] == hires
        # The engine renders any size natively: one pass, whatever hires says.
        assert result["job"]["outputs"][0]["record"]["passes"] is None


@pytest.mark.parametrize(("hires", "field"), [
    ("sometimes", "hires"), (True, "hires"), (3, "hires"), ({"strength": 2}, "hires.strength"),
    ({"steps": 0}, "hires.steps"), ({"steps": "3"}, "hires"), ({"strength": True}, "hires"),
    ({"bogus": 1}, "hires"), (["auto"], "hires"),
])
def test_malformed_hires_is_422_naming_it(service, hires: object, field: str) -> None:
    client, alice, _ = service
    response = client.post("/generate", headers=alice, json={
        "content": PROMPT, "width": 64, "height": 64, "hires": hires})
    assert response.status_code == 422, response.text
    loc = response.json()["detail"][0]["loc"]
    # Nested as pydantic nests them: the library's `hires.strength` is [hires, strength].
    parts = field.split(".")
    assert loc[:1 + len(parts)] == ["body", *parts], loc
    image_hires = client.post("/generate", headers=alice, json={
        "input_type": "image", "image": data_url(png_bytes()), "hires": "off"})
    assert image_hires.status_code == 200  # "off" (and "auto") mean no change anywhere
    image_forced = client.post("/generate", headers=alice, json={
        "input_type": "image", "image": data_url(png_bytes()), "hires": {"strength": 0.3}})
    assert image_forced.status_code == 422
    assert image_forced.json()["detail"][0]["loc"] == ["body", "hires"]


def test_batches_take_upscale_and_hires_items(service) -> None:
    client, alice, _ = service
    image = data_url(png_bytes(48, 32))
    response = client.post("/batches", headers=alice, json={"items": [
        {"input_type": "upscale", "image": image, "scale": 2},
        {"input_type": "image", "image": image, "seed": 1},
        {"content": PROMPT, "width": 64, "height": 64, "hires": "off"},
    ]})
    assert response.status_code == 201, response.text
    batch_id = response.json()["id"]
    deadline = time.monotonic() + 40
    while client.get(f"/batches/{batch_id}", headers=alice).json()["status"] != "finished":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    results = client.get(f"/batches/{batch_id}/results", headers=alice)
    lines = [line for line in results.text.splitlines() if line.strip()]
    assert len(lines) == 3
    jobs = [client.get(f"/jobs/{job['id']}", headers=alice).json()
            for job in client.get("/jobs", headers=alice, params={"limit": 3}).json()["jobs"]]
    sizes = sorted((job["outputs"][0]["width"], job["outputs"][0]["height"]) for job in jobs)
    assert sizes == [(48, 32), (64, 64), (96, 64)]

    too_large = client.post("/batches", headers=alice, json={"items": [
        {"input_type": "upscale", "image": data_url(png_bytes(1100, 64)), "scale": 4}]})
    assert too_large.status_code == 422, too_large.text
    assert too_large.json()["detail"][0]["loc"] == ["body", "items", 0, "scale"]


def test_the_stored_input_keeps_only_a_parsed_record(service) -> None:
    """A PNG's other text chunks never reach storage; its record only as parsed, anew."""
    from PIL import PngImagePlugin

    from workers.runner import input_key

    client, alice, _ = service
    source = Spec2Fractal().generate_from_text(PROMPT, width=40, height=24, seed=2)
    plain = Image.fromarray(np.asarray(source))  # no record of its own to save
    chunks = PngImagePlugin.PngInfo()
    chunks.add_text("Comment", "shot on a phone")
    chunks.add_text("spec2fractal", source.info["spec2fractal"])
    buffer = io.BytesIO()
    plain.save(buffer, format="PNG", pnginfo=chunks)
    response = client.post("/generate", headers=alice, json={
        "input_type": "upscale", "image": data_url(buffer.getvalue())})
    assert response.status_code == 200, response.text
    stored = decode(client.app.state.storage.get(input_key(response.json()["job_id"])))
    assert "Comment" not in stored.info
    assert json.loads(stored.info["spec2fractal"]) == json.loads(source.info["spec2fractal"])

    chunks = PngImagePlugin.PngInfo()
    chunks.add_text("spec2fractal", "{not json")
    buffer = io.BytesIO()
    plain.save(buffer, format="PNG", pnginfo=chunks)
    response = client.post("/generate", headers=alice, json={
        "input_type": "upscale", "image": data_url(buffer.getvalue())})
    assert response.status_code == 200, response.text
    stored = decode(client.app.state.storage.get(input_key(response.json()["job_id"])))
    assert "spec2fractal" not in stored.info
    assert _record(client, alice, response.json())["passes"][0]["upscaler"] == \
        "Lanczos + detail"
