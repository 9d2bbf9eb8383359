"""Style references and control images from the Python clients (sync and async) and from
``Spec2Fractal(server=...)``, rendered by the real service: images given as PIL images, paths
or bytes arrive whole, the records name them by hash, and a remote render equals the local
library's."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

import fractal
from fractal import InvalidRequestError, read_record
from fractal.references import pixel_hash
from spec2fractal import Spec2Fractal
from spec2fractal.client import AsyncSpec2FractalClient, Spec2FractalClient
from spec2fractal.client.errors import UnprocessableEntityError
from tests.client.conftest import Server

SMALL = {"width": 64, "height": 64, "seed": 12}
STYLE = Image.new("RGB", (32, 24), (200, 120, 30))


def _edges() -> Image.Image:
    image = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(image).ellipse((10, 10, 54, 54), outline="white", width=3)
    return image


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_sync_client_sends_references_as_pil_path_and_bytes(service: Server,
                                                                tmp_path: Path) -> None:
    path = tmp_path / "edges.png"
    _edges().save(path)
    with Spec2FractalClient(service.url, api_key=service.key, timeout=60) as client:
        result = client.images.generate(
            "a lighthouse", style_image=STYLE, style_strength=0.7, style_mode="style",
            control=[{"type": "canny", "image": path, "scale": 0.8},
                     {"type": "image", "image": _png(_edges()), "end": 0.5}], **SMALL)
        record = read_record(result.images()[0])
        assert record is not None
        assert record.style_reference["sha256"] == pixel_hash(STYLE)
        assert [unit["sha256"] for unit in record.controls] == [pixel_hash(_edges())] * 2
        assert result.job.request["style_image"] == f"sha256:{pixel_hash(STYLE)}"
        # With an input image the request goes as multipart: the references too.
        hybrid = client.images.generate("at dusk", image=Image.new("RGB", (64, 64), "teal"),
                                        style_image=path, **SMALL)
        assert read_record(hybrid.images()[0]).style_reference["sha256"] == \
            pixel_hash(_edges())  # type: ignore[union-attr]
        with pytest.raises(UnprocessableEntityError) as refused:
            client.images.generate("x", control=[{"type": "pose", "image": STYLE,
                                                  "preprocess": False}], **SMALL)
        assert refused.value.field == "control[0].type"


def test_the_async_client_sends_references(service: Server) -> None:
    async def main() -> fractal.GenerationRecord | None:
        async with AsyncSpec2FractalClient(service.url, api_key=service.key) as client:
            result = await client.images.generate(
                "a lighthouse", style_image=_png(STYLE),
                control=[{"type": "canny", "image": _edges()}], **SMALL)
            return read_record((await result.images())[0])

    record = asyncio.run(main())
    assert record is not None and record.style_reference["sha256"] == pixel_hash(STYLE)
    assert record.controls[0]["type"] == "canny"


def test_the_remote_library_renders_what_the_local_one_does(service: Server) -> None:
    options = {"style_image": STYLE, "style_strength": 0.9,
               "control": [{"type": "canny", "image": _edges()}], **SMALL}
    with Spec2Fractal(server=service.url, api_key=service.key) as remote:
        image = remote.generate_from_text("a valley", **options)
        local = fractal.Spec2Fractal().generate_from_text("a valley", **options)
        assert np.array_equal(np.asarray(image.convert("RGB")),  # type: ignore[union-attr]
                              np.asarray(local.convert("RGB")))  # type: ignore[union-attr]
        source = Image.new("RGB", (64, 64), (40, 60, 90))
        restyled = remote.generate_from_image(source, style_image=STYLE, strength=0.5)
        assert read_record(restyled).style_reference["sha256"] == \
            pixel_hash(STYLE)  # type: ignore[union-attr]
        with pytest.raises(InvalidRequestError) as caught:
            remote.generate_from_text("x", control=[{"type": "depth", "image": _edges(),
                                                      "preprocess": False}], **SMALL)
        assert caught.value.argument == "control[0].type"
        assert caught.value.choices == ["canny", "image"]
