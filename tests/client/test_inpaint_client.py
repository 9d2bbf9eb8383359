"""Inpainting and outpainting from the clients against the real service: the official
``openai`` SDK's ``images.edit(image=…, mask=…)`` (OpenAI's mask: transparent = edit), the
Python client and ``Spec2Fractal(server=…)``, whose masks go as PNG keeping their alpha;
pixels outside the mask come back as the input's, and a remote render equals the local
library's."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import openai
import pytest
from PIL import Image, ImageDraw

import fractal
from fractal import InvalidRequestError, read_record
from fractal.images import load_mask
from fractal.references import pixel_hash
from spec2fractal import Spec2Fractal
from spec2fractal.client import Spec2FractalClient
from tests.client.conftest import Server

COLOUR = (30, 120, 140)
PHOTO = Image.new("RGB", (64, 64), COLOUR)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _openai_mask(size: tuple[int, int] = (64, 64), mode: str = "RGBA") -> bytes:
    """OpenAI's kind of mask: opaque keeps, a fully transparent square is edited."""
    mask = Image.new(mode, size, (0, 0, 0, 255) if mode == "RGBA" else 0)
    ImageDraw.Draw(mask).rectangle((16, 16, 47, 47), fill=(0, 0, 0, 0) if mode == "RGBA"
                                   else 255)
    return _png(mask)


def _kept(image: Image.Image) -> None:
    """Far from the square's feathered edge the pixels are the input's; inside, repainted."""
    pixels = np.asarray(image.convert("RGB"))
    outside = np.ones(pixels.shape[:2], dtype=bool)
    outside[4:60, 4:60] = False  # the default blur (4 px) reaches past the square
    assert (pixels[outside] == COLOUR).all()
    assert not (pixels[24:40, 24:40] == COLOUR).all()


@pytest.fixture(scope="module")
def sdk(service: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{service.url}/v1", api_key=service.key, max_retries=0)


def test_the_openai_sdk_edits_the_masked_area_only(sdk: openai.OpenAI) -> None:
    answer = sdk.images.edit(image=("photo.png", _png(PHOTO), "image/png"),
                             mask=("mask.png", _openai_mask(), "image/png"),
                             prompt="a red boat", response_format="b64_json",
                             extra_body={"seed": 3})
    image = Image.open(io.BytesIO(base64.b64decode(answer.data[0].b64_json or "")))
    assert image.size == (64, 64)
    _kept(image)
    record = read_record(image)
    assert record is not None and record.mask is not None
    square = Image.new("L", (64, 64), 0)
    square.paste(255, (16, 16, 48, 48))
    assert record.mask["sha256"] == pixel_hash(square)


def test_our_inpaint_options_ride_along_in_extra_body(sdk: openai.OpenAI) -> None:
    answer = sdk.images.edit(image=("photo.png", _png(PHOTO), "image/png"),
                             mask=("mask.png", _openai_mask(), "image/png"),
                             prompt="a red boat", response_format="b64_json",
                             extra_body={"seed": 3, "mask_blur": 1, "inpaint_area": "masked",
                                         "padding": 8})
    image = Image.open(io.BytesIO(base64.b64decode(answer.data[0].b64_json or "")))
    _kept(image)
    record = read_record(image)
    assert record is not None and record.mask is not None
    assert (record.mask["blur"], record.mask["area"], record.mask["padding"]) == (1, "masked", 8)
    with pytest.raises(openai.BadRequestError) as caught:  # no mask to feather
        sdk.images.edit(image=("photo.png", _png(PHOTO), "image/png"), prompt="a boat",
                        extra_body={"mask_blur": 2})
    assert caught.value.body["param"] == "mask_blur"  # type: ignore[index]


def test_an_all_opaque_openai_mask_edits_nothing(sdk: openai.OpenAI) -> None:
    white = _png(Image.new("RGBA", (64, 64), (255, 255, 255, 255)))
    answer = sdk.images.edit(image=("photo.png", _png(PHOTO), "image/png"),
                             mask=("mask.png", white, "image/png"), prompt="a red boat",
                             response_format="b64_json")
    image = Image.open(io.BytesIO(base64.b64decode(answer.data[0].b64_json or "")))
    assert (np.asarray(image.convert("RGB")) == COLOUR).all()


@pytest.mark.parametrize(("mask", "words"), [
    (_openai_mask(mode="L"), "alpha"),  # no alpha channel: OpenAI refuses it too
    (b"GIF89a not a png", "alpha"),
    (_openai_mask((32, 64)), "32x64"),  # another size than the image's
    (_png(Image.new("RGBA", (64, 64)))[:60], ""),  # a truncated PNG
])
def test_a_bad_openai_mask_is_a_400_naming_it(sdk: openai.OpenAI, mask: bytes,
                                              words: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.images.edit(image=("photo.png", _png(PHOTO), "image/png"),
                        mask=("mask.png", mask, "image/png"), prompt="a cat")
    error = caught.value.body
    assert isinstance(error, dict) and error["param"] == "mask", error
    assert words in error["message"]


def test_the_python_client_sends_masks_and_expand(service: Server, tmp_path: Path) -> None:
    path = tmp_path / "mask.png"
    Image.open(io.BytesIO(_openai_mask())).save(path)
    with Spec2FractalClient(service.url, api_key=service.key, timeout=60) as client:
        # With an input image the request goes as multipart: the mask as a data URL field.
        result = client.images.generate("a red boat", image=PHOTO, mask=path, mask_blur=2,
                                        seed=3)
        _kept(result.images()[0])
        assert result.job.request["mask"] == f"sha256:{pixel_hash(load_mask(path))}"
        grown = client.images.generate(None, image=_png(PHOTO),
                                       expand={"left": 16, "bottom": 8}, seed=3)
        assert grown.images()[0].size == (80, 72)


def test_the_remote_library_inpaints_as_the_local_one(service: Server) -> None:
    mask = Image.open(io.BytesIO(_openai_mask()))  # RGBA: its alpha must travel
    options = {"mask": mask, "mask_blur": 2, "inpaint_area": "masked", "padding": 8,
               "seed": 6}
    with Spec2Fractal(server=service.url, api_key=service.key) as remote:
        image = remote.generate_from_image(PHOTO, "a red boat", **options)
        local = fractal.Spec2Fractal().generate_from_image(PHOTO, "a red boat", **options)
        _kept(image)  # type: ignore[arg-type]
        assert np.array_equal(np.asarray(image.convert("RGB")),  # type: ignore[union-attr]
                              np.asarray(local.convert("RGB")))  # type: ignore[union-attr]
        with pytest.raises(InvalidRequestError) as caught:
            remote.generate_from_image(PHOTO, "x", expand={"left": 12})
        assert caught.value.argument == "expand.left"
