"""Image-to-image renders at the input image's size (rounded to what the model renders),
whatever the model's own size, on every path a request takes: the library, POST /generate
(JSON and multipart), batches, /v1/images/edits and the CLI. The tiny SD model renders 64×64
from text; the input here is 96×48."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from fractal import GenerationRequest, Spec2Fractal, StyleLibrary
from fractal.plan import ModelDefaults, build_plan
from tests.api_server import serving

INPUT = (96, 48)
FAST = {"steps": 2, "seed": 3, "strength": 0.5}


def _png(size: tuple[int, int] = INPUT) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 90, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def _size_of(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


def test_the_library_keeps_the_input_size(sd_model: Spec2Fractal) -> None:
    assert sd_model.generate_from_text("a lake", steps=2, seed=1).size == (64, 64)
    source = Image.open(io.BytesIO(_png()))
    assert sd_model.generate_from_image(source, "a lake", **FAST).size == INPUT
    assert sd_model.generate_from_image(source, **FAST).size == INPUT
    # A side that is no multiple of 8 is rounded to the nearest one.
    odd = Image.new("RGB", (83, 50), (20, 20, 200))
    assert sd_model.generate_from_image(odd, **FAST).size == (80, 48)
    # width or height alone keeps the input's aspect ratio; both override it.
    assert sd_model.generate_from_image(source, width=128, **FAST).size == (128, 64)
    assert sd_model.generate_from_image(source, width=64, height=64, **FAST).size == (64, 64)


@pytest.mark.parametrize(("size", "multiple", "expected"), [
    ((6144, 4096), 8, (4096, 2728)),  # no side over 4096, aspect kept
    ((1000, 30), 16, (1008, 32)),  # a model that packs latent patches: multiples of 16
    ((3, 3), 8, (8, 8)),
])
def test_sizes_are_rounded_and_capped(size: tuple[int, int], multiple: int,
                                      expected: tuple[int, int]) -> None:
    defaults = ModelDefaults(width=512, height=512, steps=20, guidance=7.0,
                             size_multiple=multiple)
    plan = build_plan(GenerationRequest(input_type="image"), Image.new("RGB", size),
                      styles=StyleLibrary(), defaults=defaults)
    assert (plan.width, plan.height) == expected


@pytest.fixture(scope="module")
def api(tiny_sd: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    with serving(tmp_path_factory.mktemp("size"), timeout=120, SPEC2FRACTAL_AUTH="off",
                 SPEC2FRACTAL_MODEL=str(tiny_sd), SPEC2FRACTAL_SYNC_TIMEOUT="120") as server, \
            httpx.Client(base_url=server.url, timeout=180) as client:
        yield client


def _image(client: httpx.Client, answer: httpx.Response) -> tuple[int, int]:
    assert answer.status_code == 200, answer.text
    output = answer.json()["job"]["outputs"][0]
    assert (output["width"], output["height"]) == INPUT
    return _size_of(client.get(output["url"]).content)


def test_post_generate_keeps_the_input_size(api: httpx.Client) -> None:
    data_url = "data:image/png;base64," + base64.b64encode(_png()).decode()
    answer = api.post("/generate", json={"input_type": "image", "image": data_url, **FAST})
    assert _image(api, answer) == INPUT
    answer = api.post("/generate", data={"content": "a lake", "input_type": "hybrid",
                                          "steps": "2", "strength": "0.5"},
                      files={"image": ("in.png", _png(), "image/png")})
    assert _image(api, answer) == INPUT


def test_a_batch_item_keeps_the_input_size(api: httpx.Client) -> None:
    data_url = "data:image/png;base64," + base64.b64encode(_png()).decode()
    batch = api.post("/batches", json={"items": [{"input_type": "image", "image": data_url,
                                                  **FAST}]})
    assert batch.status_code == 201, batch.text
    link = batch.json()["links"]["self"]
    deadline = time.monotonic() + 180
    while api.get(link).json()["status"] != "finished":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    [item] = [json.loads(line) for line in api.get(link + "/results").text.splitlines()
              if line.strip()]
    assert item["status"] == "succeeded", item
    assert _size_of(api.get(item["urls"][0]).content) == INPUT


def test_openai_edits_keep_the_input_size(api: httpx.Client) -> None:
    answer = api.post("/v1/images/edits", data={"prompt": "a lake", "steps": "2"},
                      files={"image": ("in.png", _png(), "image/png")})
    assert answer.status_code == 200, answer.text
    assert _size_of(api.get(answer.json()["data"][0]["url"]).content) == INPUT


def test_the_cli_keeps_the_input_size(tiny_sd: Path, tmp_path: Path) -> None:
    source, out = tmp_path / "in.png", tmp_path / "out.png"
    source.write_bytes(_png())
    result = subprocess.run([sys.executable, "-m", "spec2fractal.cli", "generate", "--image",
                             str(source), "--model", str(tiny_sd), "--steps", "2", "-o",
                             str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert Image.open(out).size == INPUT
