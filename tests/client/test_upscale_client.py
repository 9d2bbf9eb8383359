"""Upscaling from the clients: ``images.upscale``, ``jobs.upscale`` (both flavours) and
``Spec2Fractal(server=...).upscale``, against the real service."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from PIL import Image

import fractal
from fractal import GenerationCancelled, InvalidRequestError, read_record
from spec2fractal import Spec2Fractal
from spec2fractal.client import AsyncSpec2FractalClient, Spec2FractalClient
from tests.client.conftest import Server

PROMPT = "a red barn in a snowy field"
SMALL = {"width": 96, "height": 64}


@pytest.fixture(scope="module")
def client(service: Server) -> Spec2FractalClient:
    with Spec2FractalClient(service.url, api_key=service.key, timeout=60) as made:
        yield made


def _rgb(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def test_images_upscale_and_jobs_upscale(client: Spec2FractalClient) -> None:
    drawn = client.images.generate(PROMPT, seed=4, **SMALL)
    # The downloaded PNG keeps its record: sent back, the engine draws the scene again.
    upscaled = client.images.upscale(drawn.images()[0], scale=2).images()[0]
    assert upscaled.size == (192, 128)
    assert read_record(upscaled).passes[0]["upscaler"] == "engine re-render"  # type: ignore[union-attr]
    again = client.jobs.upscale(drawn.job_id, scale=4)
    assert again.job.request["input_type"] == "upscale" and again.job.request["scale"] == 4
    assert again.images()[0].size == (384, 256)
    direct = fractal.Spec2Fractal().generate_from_text(PROMPT, seed=4, width=384, height=256)
    assert np.array_equal(_rgb(again.images()[0]), _rgb(direct))
    foreign = client.images.upscale(Image.new("RGB", (30, 20), "olive"), strength=0.2)
    record = read_record(foreign.images()[0])
    assert record.passes[0]["upscaler"] == "Lanczos + detail" and record.strength == 0.2  # type: ignore[union-attr]
    assert client.images.generate(PROMPT, hires="off", **SMALL).job.request["hires"] == "off"


def test_async_upscale(service: Server) -> None:
    async def scenario() -> None:
        async with AsyncSpec2FractalClient(service.url, api_key=service.key) as client:
            drawn = await client.images.generate(PROMPT, seed=8, **SMALL)
            result = await client.jobs.upscale(drawn.job_id)
            assert [image.size for image in await result.images()] == [(192, 128)]
            sent = await client.images.upscale((await drawn.images())[0], scale=2)
            assert (await sent.images())[0].size == (192, 128)

    asyncio.run(scenario())


def test_the_remote_library_upscales_as_the_local_one(service: Server, tmp_path) -> None:
    with Spec2Fractal(server=service.url, api_key=service.key) as remote:
        local = fractal.Spec2Fractal()
        source = local.generate_from_text(PROMPT, seed=12, **SMALL)
        path = tmp_path / "source.png"
        source.save(path)
        steps: list[int] = []
        image = remote.upscale(path, scale=2, on_progress=lambda step, _t, _p: steps.append(
            step))
        assert np.array_equal(_rgb(image), _rgb(local.upscale(source, scale=2)))
        assert read_record(image).scale == 2  # type: ignore[union-attr]
        with pytest.raises(InvalidRequestError) as caught:
            remote.upscale(path, scale=3)
        assert caught.value.argument == "scale"
        stop = threading.Event()
        stop.set()
        with pytest.raises(GenerationCancelled):
            remote.upscale(path, scale=4, cancel=stop)
