"""Untrusted images are decoded safely: formats, sizes, bombs, orientation, frames."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fractal import InvalidRequestError, decode_image, image_to_data_url, load_image
from fractal import images as images_module


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_allowed_formats_decode_to_rgb(fmt: str) -> None:
    image = load_image(encode(Image.new("RGB", (40, 24), (200, 10, 10)), fmt))
    assert image.mode == "RGB" and image.size == (40, 24)


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF"])
def test_other_formats_are_refused(fmt: str) -> None:
    with pytest.raises(InvalidRequestError, match="`image` is not a readable image"):
        load_image(encode(Image.new("RGB", (8, 8)), fmt))


def test_garbage_and_truncated_files_are_refused() -> None:
    with pytest.raises(InvalidRequestError, match="not a readable image"):
        load_image(b"\x89PNG\r\n\x1a\nthis is not a png")
    whole = encode(Image.new("RGB", (64, 64), (1, 2, 3)), "PNG")
    with pytest.raises(InvalidRequestError, match="not a readable image"):
        load_image(whole[: len(whole) // 2])


def test_decompression_bomb_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    data = encode(Image.new("RGB", (400, 400)), "PNG")
    # Pillow warns past MAX_IMAGE_PIXELS; a small limit turns this picture into a "bomb".
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100 * 100)
    with pytest.raises(InvalidRequestError, match="too many pixels"):
        load_image(data)


def test_byte_cap_is_checked_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images_module, "MAX_IMAGE_BYTES", 100)
    with pytest.raises(InvalidRequestError, match="larger than 100 bytes"):
        load_image(b"x" * 101)


def test_exif_orientation_is_applied_and_metadata_dropped() -> None:
    image = Image.new("RGB", (40, 20), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 20, 20))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    loaded = load_image(encode(image, "JPEG", exif=exif.tobytes(), quality=95))
    assert loaded.size == (20, 40)
    top = np.asarray(loaded)[:20].mean()
    bottom = np.asarray(loaded)[20:].mean()
    assert top > 200 and bottom < 50  # the white half is now on top
    assert "exif" not in loaded.info


def test_only_the_first_frame_of_an_animation_is_used() -> None:
    frames = [Image.new("RGB", (16, 16), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="WEBP", save_all=True, append_images=frames[1:], lossless=True)
    loaded = load_image(buffer.getvalue())
    assert tuple(np.asarray(loaded)[8, 8]) == (255, 0, 0)


def test_transparency_is_flattened_on_white() -> None:
    loaded = load_image(Image.new("RGBA", (8, 8), (255, 0, 0, 0)))
    assert tuple(np.asarray(loaded)[0, 0]) == (255, 255, 255)


def test_data_url_round_trip_is_lossless() -> None:
    image = Image.fromarray(np.arange(48 * 32 * 3, dtype=np.uint8).reshape(32, 48, 3))
    url = image_to_data_url(image)
    assert url.startswith("data:image/png;base64,")
    assert np.array_equal(np.asarray(decode_image(url)), np.asarray(image))
    plain = url.split(",", 1)[1]
    assert np.array_equal(np.asarray(decode_image(plain)), np.asarray(image))


def test_bad_base64_and_paths_are_named() -> None:
    with pytest.raises(InvalidRequestError, match="not valid base64"):
        decode_image("data:image/png;base64,@@@")
    with pytest.raises(InvalidRequestError, match="base64 data URL"):
        decode_image("data:image/png,rawbytes")
    with pytest.raises(InvalidRequestError, match="cannot be read"):
        load_image(Path("/definitely/not/here.png"))
    with pytest.raises(InvalidRequestError, match="PIL image, a file path or bytes"):
        load_image(12345)  # type: ignore[arg-type]
    assert base64.b64decode(image_to_data_url(Image.new("RGB", (8, 8))).split(",")[1])
