"""A job with LoRAs on a (tiny) diffusion model through the real worker stack (issue #21):
a request's LoRA by name, a prompt tag and a caller's own style's LoRA are applied by the
worker from the shared LoRA folder, and the record names each with its hash."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from fractal.loras import inspect_lora
from tests.api.helpers import decode
from tests.tiny_loras import build_lora
from workers.settings import Settings

SMALL = {"width": 64, "height": 64, "steps": 2, "seed": 5, "prompt": "a lighthouse"}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, tiny_sd: Path, start_worker
            ) -> Iterator[tuple[TestClient, Path, Path]]:
    data_dir = tmp_path_factory.mktemp("loras-render")
    folder = data_dir / "loras"
    build_lora(tiny_sd, folder / "ink.safetensors", seed=0)
    settings = Settings(data_dir=data_dir, sync_timeout=120, models=[str(tiny_sd)],
                        model=str(tiny_sd), lora_dir=folder, rate_limit="1000/second")
    with TestClient(create_app(settings, start_worker=False)) as client:
        start_worker(data_dir, SPEC2FRACTAL_LORA_DIR=str(folder),
                     SPEC2FRACTAL_MODEL=str(tiny_sd))
        yield client, tiny_sd, folder


def _render(client: TestClient, **body: object) -> tuple[np.ndarray, dict]:
    answer = client.post("/generate", json={**SMALL, **body})
    assert answer.status_code == 200, answer.text
    output = answer.json()["job"]["outputs"][0]
    image = decode(client.get(answer.json()["image_url"]).content)
    return np.asarray(image).astype(np.int16), output["record"]


def test_loras_apply_on_the_worker(service) -> None:  # type: ignore[no-untyped-def]
    client, tiny_sd, folder = service
    short = inspect_lora(folder / "ink.safetensors").short_hash
    assert {model["id"]: model for model in client.get("/models").json()["models"]}[
        tiny_sd.name]["loras"] is True
    plain, _ = _render(client, model=tiny_sd.name)
    inked, record = _render(client, model=tiny_sd.name, loras=[{"name": "ink", "weight": 1}])
    assert np.abs(inked - plain).mean() > 1
    assert record["loras"][0]["name"] == "ink" and record["loras"][0]["applied"] is True
    assert record["loras"][0]["hash"] == short
    tagged, _ = _render(client, model=tiny_sd.name, prompt="a lighthouse <lora:ink:1>")
    assert np.abs(tagged - inked).max() <= 1  # the tag is the same LoRA, out of the prompt
    made = client.post("/styles", json={"name": "Inked", "prompt": "{prompt}",
                                        "loras": [{"name": "ink", "weight": 1}]})
    assert made.status_code == 201, made.text
    styled, record = _render(client, model=tiny_sd.name, style="inked")
    assert np.abs(styled - inked).max() <= 1 and record["loras"][0]["applied"] is True
