"""``Spec2Fractal(server=...)``: the library's calls, rendered by the real service."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image

import fractal
from fractal import GenerationCancelled, InvalidRequestError, read_record
from spec2fractal import Spec2Fractal
from spec2fractal.client.remote import RemoteSpec2Fractal
from tests.client.conftest import Server

SMALL = {"width": 96, "height": 64}


@pytest.fixture(scope="module")
def remote(service: Server) -> RemoteSpec2Fractal:
    with Spec2Fractal(server=service.url, api_key=service.key) as made:
        yield made


def test_without_a_server_it_is_the_local_library() -> None:
    local = Spec2Fractal()
    assert isinstance(local, fractal.Spec2Fractal) and local.model == "fractal"
    image = local.generate_from_text("a lake", seed=5, **SMALL)
    assert read_record(image).seed == 5  # type: ignore[union-attr]


def test_text_renders_match_local_ones(remote: RemoteSpec2Fractal) -> None:
    assert isinstance(remote, RemoteSpec2Fractal) and remote.model == "fractal"
    image = remote.generate_from_text("a serene lake at sunrise", seed=21, style="Watercolor",
                                      **SMALL)
    assert isinstance(image, Image.Image) and image.size == (96, 64)
    record = read_record(image)
    assert record is not None and record.seed == 21 and record.style == "Watercolor"
    assert "a serene lake at sunrise" in image.info["parameters"]
    local = fractal.Spec2Fractal().generate_from_text("a serene lake at sunrise", seed=21,
                                                      style="Watercolor", **SMALL)
    assert np.array_equal(np.asarray(image.convert("RGB")), np.asarray(local.convert("RGB")))
    several = remote.generate_from_text("a forest", n=2, seed=3, **SMALL)
    assert isinstance(several, list) and [read_record(i).seed for i in several] == [3, 4]  # type: ignore[union-attr]


def test_image_renders_and_generate(remote: RemoteSpec2Fractal, tmp_path) -> None:
    source = Image.new("RGB", (120, 80), (30, 90, 160))
    transformed = remote.generate_from_image(source, style="Impressionist")
    assert transformed.size == (120, 80)  # type: ignore[union-attr]
    assert read_record(transformed).style == "Impressionist"  # type: ignore[arg-type]
    path = tmp_path / "input.png"
    source.save(path)
    hybrid = remote.generate_from_image(path, "at night", strength=0.4)
    assert read_record(hybrid).input_type == "hybrid"  # type: ignore[arg-type]
    images = remote.generate({"prompt": "a comet", "n": 2, "seed": 9, **SMALL})
    assert len(images) == 2 and read_record(images[1]).seed == 10  # type: ignore[union-attr]
    hybrid.save(tmp_path / "out.png")  # type: ignore[union-attr]
    assert read_record(Image.open(tmp_path / "out.png")).input_type == "hybrid"  # type: ignore[union-attr]


def test_bad_arguments_raise_the_librarys_error(remote: RemoteSpec2Fractal) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        remote.generate_from_text("a cat", width=100, height=64)
    assert caught.value.argument == "width" and "multiple of 8" in str(caught.value)
    with pytest.raises(InvalidRequestError) as caught:
        remote.generate_from_text("a cat", style="no such style")
    assert caught.value.argument == "style" and "Watercolor" in (caught.value.choices or [])


def test_progress_and_cancel_follow_the_job(remote: RemoteSpec2Fractal) -> None:
    seen: list[tuple[int, int]] = []
    image = remote.generate_from_text("a slow galaxy", width=768, height=768,
                                      on_progress=lambda step, total, _: seen.append(
                                          (step, total)))
    assert image.size == (768, 768) and seen and seen[-1][1] == 10  # type: ignore[union-attr]
    stop = threading.Event()
    stop.set()
    with pytest.raises(GenerationCancelled):
        remote.generate_from_text("never finished", width=768, height=768, cancel=stop)
