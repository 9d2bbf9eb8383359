"""Style references and control images through POST /generate and POST /batches: JSON data
URLs and multipart file parts reach a real embedded worker, which renders them on the
built-in engine; the job row and view name them by hash, storage holds each once; every bad
value is a 422 naming its field."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from api.app import create_app
from fractal.references import pixel_hash
from tests.api.helpers import data_url, png_bytes, wait_status
from workers.settings import Settings

PROMPT = "a quiet valley at dawn"
SMALL = {"width": 64, "height": 64, "seed": 3}


def _edges_png() -> bytes:
    image = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(image).rectangle((12, 20, 52, 44), outline="white", width=3)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


STYLE = png_bytes(40, 30, "orange")
EDGES = _edges_png()


def _hash(raw: bytes) -> str:
    image = Image.open(io.BytesIO(raw))
    return pixel_hash(image.convert("RGB"))


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, start_worker) -> Iterator[TestClient]:
    data_dir = tmp_path_factory.mktemp("references")
    settings = Settings(data_dir=data_dir, sync_timeout=30, rate_limit="1000/second")
    with TestClient(create_app(settings, start_worker=False)) as client:
        start_worker(data_dir)
        yield client


def _storage_root(client: TestClient) -> Path:
    return client.app.state.storage.root  # type: ignore[attr-defined]


def _references(client: TestClient) -> list[str]:
    folder = _storage_root(client) / "references"
    return sorted(path.name for path in folder.iterdir()) if folder.is_dir() else []


def test_json_references_render_and_are_named_by_hash(service: TestClient) -> None:
    response = service.post("/generate", json={
        "content": PROMPT, **SMALL, "style_image": data_url(STYLE), "style_strength": 0.8,
        "style_mode": "both",
        "control": [{"type": "canny", "image": data_url(EDGES), "scale": 0.7, "end": 0.9}]})
    assert response.status_code == 200, response.text
    job = response.json()["job"]
    style_hash, edges_hash = _hash(STYLE), _hash(EDGES)
    # The job view (and so the row) names each reference by hash, never by its data.
    assert job["request"]["style_image"] == f"sha256:{style_hash}"
    assert job["request"]["control"] == [{"type": "canny", "image": f"sha256:{edges_hash}",
                                          "scale": 0.7, "end": 0.9}]
    assert "base64" not in json.dumps(job["request"])
    record = job["outputs"][0]["record"]
    assert record["style_reference"] == {"sha256": style_hash, "strength": 0.8,
                                         "mode": "both"}
    assert record["controls"][0]["sha256"] == edges_hash
    assert record["controls"][0]["scale"] == 0.7
    assert {f"{style_hash}.png", f"{edges_hash}.png"} <= set(_references(service))


def test_multipart_references_render(service: TestClient) -> None:
    control = [{"type": "image", "scale": 0.5}, {"type": "canny", "preprocess": False}]
    response = service.post(
        "/generate",
        data={"content": PROMPT, "width": "64", "height": "64", "seed": "4",
              "style_strength": "0.3", "control": json.dumps(control)},
        files=[("style_image", ("style.png", STYLE, "image/png")),
               ("control_image", ("a.png", png_bytes(64, 64, "navy"), "image/png")),
               ("control_image", ("b.png", EDGES, "image/png"))])
    assert response.status_code == 200, response.text
    request = response.json()["job"]["request"]
    assert request["style_image"] == f"sha256:{_hash(STYLE)}"
    assert [unit["image"] for unit in request["control"]] == [
        f"sha256:{_hash(png_bytes(64, 64, 'navy'))}", f"sha256:{_hash(EDGES)}"]
    record = response.json()["job"]["outputs"][0]["record"]
    assert [unit["type"] for unit in record["controls"]] == ["image", "canny"]
    assert record["controls"][1]["preprocess"] is False


def test_the_same_reference_is_stored_once(service: TestClient) -> None:
    style = png_bytes(24, 24, "purple")
    before = _references(service)
    for seed in (1, 2):
        response = service.post("/generate", headers={"Prefer": "respond-async"}, json={
            "content": PROMPT, **SMALL, "seed": seed, "style_image": data_url(style)})
        assert response.status_code == 202, response.text
    # The same picture as a WEBP (lossless) is the same reference too.
    buffer = io.BytesIO()
    Image.open(io.BytesIO(style)).save(buffer, format="WEBP", lossless=True)
    webp = "data:image/webp;base64," + data_url(buffer.getvalue()).split(",", 1)[1]
    response = service.post("/batches", json={"items": [
        {"content": PROMPT, **SMALL, "style_image": webp},
        {"content": PROMPT, **SMALL, "style_image": data_url(style)}]})
    assert response.status_code == 201, response.text
    added = sorted(set(_references(service)) - set(before))
    assert added == [f"{_hash(style)}.png"]


def test_batch_items_carry_references(service: TestClient) -> None:
    response = service.post("/batches", json={
        "template": {"content": PROMPT, **SMALL, "style_image": data_url(STYLE)},
        "grid": {"style_strength": [0.2, 0.9]}})
    assert response.status_code == 201, response.text
    batch_id = response.json()["id"]
    results = []
    for _ in range(200):
        results = [json.loads(line) for line in
                   service.get(f"/batches/{batch_id}/results").text.splitlines() if line]
        if results and all(item["status"] == "succeeded" for item in results):
            break
        wait_status(service.get, results[0]["job_id"] if results else "", {"succeeded"}, 0.2)
    assert [item["status"] for item in results] == ["succeeded", "succeeded"]
    job = service.get(f"/jobs/{results[1]['job_id']}").json()
    assert job["request"]["style_image"] == f"sha256:{_hash(STYLE)}"
    assert job["outputs"][0]["record"]["style_reference"]["strength"] == 0.9


BAD_IMAGE = "data:image/png;base64," + "A" * 40


@pytest.mark.parametrize(("extra", "loc"), [
    ({"style_image": 5}, ["body", "style_image"]),
    ({"style_image": BAD_IMAGE}, ["body", "style_image"]),
    ({"style_image": "not base64!"}, ["body", "style_image"]),
    ({"style_strength": 0.5}, ["body", "style_strength"]),
    ({"style_image": data_url(STYLE), "style_strength": 1.5}, ["body", "style_strength"]),
    ({"style_image": data_url(STYLE), "style_strength": True}, ["body", "style_strength"]),
    ({"style_image": data_url(STYLE), "style_mode": "cubist"}, ["body", "style_mode"]),
    # A stored reference's name is the server's, never the caller's: no reading another
    # job's reference by its hash.
    ({"style_image": "sha256:" + "0" * 64}, ["body", "style_image"]),
    ({"style_image": "upload:sha256:" + "0" * 64}, ["body", "style_image"]),
    ({"control": [{"type": "canny", "image": "sha256:" + "0" * 64}]},
     ["body", "control", 0, "image"]),
    ({"control": "canny"}, ["body", "control"]),
    ({"control": [{"type": "canny", "image": data_url(EDGES)}] * 5}, ["body", "control"]),
    ({"control": [{"type": "canny"}] * 100_000}, ["body", "control"]),
    ({"control": [{"type": "sketch", "image": data_url(EDGES)}]},
     ["body", "control", 0, "type"]),
    ({"control": [{"type": "canny", "image": data_url(EDGES), "weight": 1}]},
     ["body", "control", 0, "weight"]),
    ({"control": [{"type": "canny", "image": 7}]}, ["body", "control", 0, "image"]),
    ({"control": [{"type": "canny"}]}, ["body", "control", 0, "image"]),
    ({"control": [{"type": "canny", "image": data_url(EDGES)},
                  {"type": "canny", "image": BAD_IMAGE}]}, ["body", "control", 1, "image"]),
    ({"control": [{"type": "canny", "image": data_url(EDGES), "start": 0.6, "end": 0.6}]},
     ["body", "control", 0, "end"]),
    ({"control": [{"type": "canny", "image": data_url(EDGES), "scale": 3}]},
     ["body", "control", 0, "scale"]),
    ({"control": [{"type": "canny", "image": data_url(EDGES), "scale": "1"}]},
     ["body", "control", 0, "scale"]),
    ({"control": [{"type": "depth", "image": data_url(EDGES), "preprocess": False}]},
     ["body", "control", 0, "type"]),  # the engine takes canny and image only
    ({"input_type": "upscale", "image": data_url(STYLE), "content": None,
      "style_image": data_url(STYLE), "width": None, "height": None},
     ["body", "style_image"]),
])
def test_bad_reference_fields_are_422_naming_them(service: TestClient, extra: dict,
                                                   loc: list) -> None:
    body = {"content": PROMPT, **SMALL, **extra}
    body = {key: value for key, value in body.items() if value is not None}
    response = service.post("/generate", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == loc, response.text
    assert len(response.text) < 5000  # no data echoed back


@pytest.mark.parametrize("text", ['{"control": [{"type": "canny", "scale": NaN}]}',
                                  '{"control": [{"type": "canny", "scale": Infinity}]}',
                                  '{"style_image": "x", "style_strength": -Infinity}',
                                  '{"style_image": "\\ud800"}',
                                  '{"control": [{"type": "canny", "image": "\\udc00"}]}'])
def test_non_finite_numbers_and_lone_surrogates_are_422(service: TestClient,
                                                        text: str) -> None:
    response = service.post("/generate", content=text,
                            headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][:2] in (
        ["body", "control"], ["body", "style_strength"], ["body", "style_image"])


def test_engine_refuses_unconfigured_types_listing_its_own(service: TestClient) -> None:
    response = service.post("/generate", json={
        "content": PROMPT, **SMALL,
        "control": [{"type": "canny", "image": data_url(EDGES)},
                    {"type": "pose", "image": data_url(EDGES), "preprocess": False}]})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"][0]
    assert detail["loc"] == ["body", "control", 1, "type"]
    assert detail["ctx"]["choices"] == ["canny", "image"]


@pytest.mark.parametrize(("files", "data", "loc"), [
    ([("control_image", ("a.png", EDGES, "image/png"))], {}, ["body", "control_image"]),
    ([("control_image", ("a.png", b"not an image", "image/png"))],
     {"control": '[{"type": "canny"}]'}, ["body", "control", 0, "image"]),
    ([("style_image", ("s.png", b"\x89PNG broken", "image/png"))], {},
     ["body", "style_image"]),
    ([], {"control": "[{"}, ["body", "control", 2]),
    ([("style_image", ("s.png", STYLE, "image/png"))] * 2, {}, ["body", "style_image"]),
    ([], {"control": '[{"type": "canny", "scale": NaN}]'}, ["body", "control", 0, "scale"]),
    ([], {"control": '[{"type": "canny", "image": "upload:sha256:%s"}]' % ("0" * 64)},
     ["body", "control", 0, "image"]),
])
def test_bad_multipart_parts_are_422_naming_them(service: TestClient, files: list,
                                                 data: dict, loc: list) -> None:
    response = service.post("/generate", data={"content": PROMPT, "width": "64",
                                                "height": "64", **data},
                            files=files or None)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == loc, response.text


def test_a_large_reference_is_taken(service: TestClient) -> None:
    """A ~20 MB style reference (random pixels: PNG cannot shrink them) goes through the
    guarded JSON parser and the safe decoder, and the row still holds its hash only."""
    import numpy as np

    pixels = np.random.default_rng(0).integers(0, 255, (2600, 2600, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=0)
    raw = buffer.getvalue()
    assert len(raw) > 20_000_000
    response = service.post("/generate", headers={"Prefer": "respond-async"}, json={
        "content": PROMPT, **SMALL, "style_image": data_url(raw)})
    assert response.status_code == 202, response.text
    assert response.json()["request"]["style_image"] == \
        f"sha256:{pixel_hash(Image.fromarray(pixels))}"


def test_models_list_the_engines_capabilities(service: TestClient) -> None:
    models = {model["id"]: model for model in service.get("/models").json()["models"]}
    engine = models["fractal"]
    assert engine["style_reference"] is True
    assert engine["controls"] == ["canny", "image"]
    assert engine["adapter_family"] is None


@pytest.fixture(scope="module")
def diffusion(tmp_path_factory: pytest.TempPathFactory, tiny_sd: Path, start_worker
              ) -> Iterator[tuple[TestClient, Path]]:
    """The API believes the tiny SD 1.5 family has a canny ControlNet (its own adapters
    setting); its worker (started without SPEC2FRACTAL_ADAPTERS) has none."""
    data_dir = tmp_path_factory.mktemp("references-diffusion")
    adapters = {"sd15": {"controlnets": {"canny": str(data_dir / "controlnet-canny")}}}
    settings = Settings(data_dir=data_dir, sync_timeout=60, models=[str(tiny_sd)],
                        adapters=adapters, rate_limit="1000/second")
    with TestClient(create_app(settings, start_worker=False)) as client:
        start_worker(data_dir)
        yield client, tiny_sd


def test_models_list_a_diffusers_folders_family_and_adapters(
        tmp_path: Path, diffusion: tuple[TestClient, Path]) -> None:
    client, tiny_sd = diffusion
    listed = {model["id"]: model for model in client.get("/models").json()["models"]}
    assert listed[tiny_sd.name]["adapter_family"] == "sd15"
    assert listed[tiny_sd.name]["controls"] == ["canny"]
    assert listed[tiny_sd.name]["style_reference"] is False
    # Without the adapters setting: the family, and nothing it takes.
    settings = Settings(data_dir=tmp_path, models=[str(tiny_sd), "/no/such/model"])
    with TestClient(create_app(settings, start_worker=False)) as plain:
        listed = {model["id"]: model for model in plain.get("/models").json()["models"]}
        assert listed[tiny_sd.name]["adapter_family"] == "sd15"
        assert (listed[tiny_sd.name]["controls"], listed[tiny_sd.name]["style_reference"]) \
            == ([], False)
        assert listed["model"]["adapter_family"] is None  # unreadable here: not known
        # Known not to take them: refused at submit, naming the field.
        body = {"model": tiny_sd.name, "content": PROMPT, **SMALL}
        refused = plain.post("/generate", json={
            **body, "control": [{"type": "depth", "image": data_url(EDGES)}]})
        assert refused.status_code == 422, refused.text
        detail = refused.json()["detail"][0]
        assert detail["loc"] == ["body", "control", 0, "type"]
        assert detail["ctx"]["choices"] == []
        refused = plain.post("/generate", json={**body, "style_image": data_url(STYLE)})
        assert refused.status_code == 422, refused.text
        assert refused.json()["detail"][0]["loc"] == ["body", "style_image"]
        # Not known here: queued, for the worker to decide.
        unknown = plain.post("/generate", headers={"Prefer": "respond-async"}, json={
            "model": "/no/such/model", "content": PROMPT, **SMALL,
            "control": [{"type": "depth", "image": data_url(EDGES)}]})
        assert unknown.status_code == 202, unknown.text


def test_a_control_the_worker_lacks_is_a_422_naming_it(
        diffusion: tuple[TestClient, Path]) -> None:
    client, tiny_sd = diffusion
    response = client.post("/generate", json={
        "model": tiny_sd.name, "content": PROMPT, **SMALL,
        "control": [{"type": "canny", "image": data_url(EDGES)}]})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"][0]
    assert detail["loc"] == ["body", "control", 0, "type"]
    assert response.json()["job"]["error_detail"]["field"] == "control[0].type"


def test_a_hub_models_family_is_read_from_the_local_cache(tmp_path: Path,
                                                          tiny_sd: Path) -> None:
    """A hub id's family comes from its model_index.json in the Hugging Face cache (laid out
    as huggingface_hub lays it out; nothing is downloaded); not cached: not known."""
    import shutil
    import subprocess
    import sys

    repo = tmp_path / "hub" / "models--acme--tiny-sd"
    snapshot = repo / "snapshots" / "0123abcd"
    (snapshot / "unet").mkdir(parents=True)
    shutil.copy(tiny_sd / "model_index.json", snapshot / "model_index.json")
    shutil.copy(tiny_sd / "unet" / "config.json", snapshot / "unet" / "config.json")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    code = ("from api.capabilities import capabilities_of; from workers.settings import "
            "Settings; s = Settings(adapters={'sd15': {'controlnets': {'canny': 'x/y'}}}); "
            "print(capabilities_of('acme/tiny-sd', s)); print(capabilities_of('acme/other', s))")
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=60, check=True,
                           env={**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"),
                                "HF_HUB_OFFLINE": "1"}).stdout.splitlines()
    assert shown == [
        "Capabilities(family='sd15', known=True, style_reference=False, controls=['canny'], "
        "loras=True)",
        "Capabilities(family=None, known=False, style_reference=False, controls=[], "
        "loras=True)"]
