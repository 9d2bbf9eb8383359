"""Untrusted images are decoded safely: formats, sizes, bombs, orientation, frames."""

from __future__ import annotations

import base64
import io
import resource
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fractal import InvalidRequestError, decode_image, image_to_data_url, load_image
from fractal import images as images_module
from tests import hostile_files as hostile


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_allowed_formats_decode_to_rgb(fmt: str) -> None:
    image = load_image(encode(Image.new("RGB", (40, 24), (200, 10, 10)), fmt))
    assert image.mode == "RGB" and image.size == (40, 24)


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF", "PDF", "ICO"])
def test_other_formats_are_refused_by_name(fmt: str) -> None:
    with pytest.raises(InvalidRequestError,
                       match=f"`image` is a {fmt} file; only PNG, JPEG and WEBP are accepted"):
        load_image(encode(Image.new("RGB", (8, 8)), fmt))


def test_garbage_and_truncated_files_are_refused() -> None:
    with pytest.raises(InvalidRequestError, match="`image` is truncated"):
        load_image(b"\x89PNG\r\n\x1a\nthis is not a png")
    with pytest.raises(InvalidRequestError, match="`image` is not a PNG, JPEG or WEBP image"):
        load_image(b"hello, I am plain text")
    whole = encode(Image.new("RGB", (64, 64), (1, 2, 3)), "PNG")
    with pytest.raises(InvalidRequestError, match="`image` is truncated"):
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


# -- hostile files (tests/hostile_files.py builds them) ---------------------------------------


def refused(data: bytes, match: str) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError, match=match) as caught:
        load_image(data)
    assert caught.value.argument == "image"
    return caught.value


def test_a_header_claiming_60000_squared_is_refused_before_any_allocation() -> None:
    data = hostile.png_header_bomb(60000, 60000)
    assert len(data) < 100
    started = time.perf_counter()
    refused(data, r"is 60000×60000 pixels, more than the limit of \d+ pixels")
    assert time.perf_counter() - started < 0.05  # 10.8 GB of RGB never allocated


def test_a_complete_small_file_huge_pixel_png_is_refused() -> None:
    data = hostile.png_zlib_bomb(8192)
    assert len(data) < 400_000
    # It is a real PNG: Pillow reads its header without complaint.
    assert Image.open(io.BytesIO(data)).size == (8192, 8192)
    refused(data, r"is 8192×8192 pixels, more than the limit")


def test_a_webp_canvas_bomb_is_refused_before_libwebp_opens_it() -> None:
    refused(hostile.webp_canvas_bomb(16383), r"is 16383×16383 pixels")


def test_pixel_cap_applies_below_pillows_own_limit() -> None:
    side = int(images_module.MAX_IMAGE_PIXELS ** 0.5) + 8
    assert side * side < Image.MAX_IMAGE_PIXELS  # Pillow alone would decode this
    refused(hostile.png_header_bomb(side, side), rf"is {side}×{side} pixels")


def test_bomb_warning_is_an_error_only_during_the_call(monkeypatch: pytest.MonkeyPatch) -> None:
    filters = list(warnings.filters)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300)  # 20×20 is in the warning band
    refused(encode(Image.new("RGB", (20, 20)), "PNG"), "too many pixels to decode safely")
    assert warnings.filters == filters  # no process-wide change left behind
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        Image.open(io.BytesIO(encode(Image.new("RGB", (20, 20)), "PNG")))
    assert any(issubclass(w.category, Image.DecompressionBombWarning) for w in seen)


@pytest.mark.parametrize("builder", [hostile.gif_extents_bomb, hostile.gif_many_frames])
def test_gifs_are_refused_without_being_parsed(builder, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_parsing(*args, **kwargs):
        raise AssertionError("a refused format reached Pillow")

    monkeypatch.setattr(Image, "open", no_parsing)
    refused(builder(), "is a GIF file; only PNG, JPEG and WEBP are accepted")


def test_eps_renamed_png_never_reaches_ghostscript(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import EpsImagePlugin

    def no_ghostscript(*args, **kwargs):
        raise AssertionError("Ghostscript was run on a caller's file")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", no_ghostscript)
    path = tmp_path / "photo.png"
    path.write_bytes(hostile.eps_as_png())
    refused(path.read_bytes(), "is a PostScript/EPS file; only PNG, JPEG and WEBP")
    refused(path, "is a PostScript/EPS file")  # by path too: the name means nothing


def test_even_a_disguised_eps_is_opened_by_no_plugin_but_the_allowed_ones() -> None:
    # A PNG signature glued on an EPS body: sniffed as PNG, but not a PNG.
    refused(b"\x89PNG\r\n\x1a\n" + hostile.eps_as_png(), "is truncated|not a readable")


@pytest.mark.parametrize(("builder", "match"), [
    (hostile.png_with_zip, "bytes after the end of the image; polyglot"),
    (hostile.png_with_html_chunk, "document hidden in its metadata"),
    (hostile.jpeg_with_html_comment, "document hidden in its metadata"),
    (hostile.jpeg_with_html_appended, "bytes after the end of the image"),
    (hostile.webp_with_trailer, "bytes after the end of the image"),
])
def test_polyglots_are_refused(builder, match: str) -> None:
    data = builder()
    Image.open(io.BytesIO(data)).load()  # each one *is* a valid image to Pillow
    refused(data, match)


@pytest.mark.parametrize(("data", "match"), [
    (hostile.truncated(hostile.noisy_png()), "is truncated"),
    (hostile.truncated(hostile.noisy_jpeg()), "is truncated"),
    (hostile.truncated(hostile.webp(64, 64)), "is truncated"),
    (hostile.noisy_png()[:40], "is truncated"),
    (b"\xff\xd8\xff", "is truncated"),
    (b"RIFF\x00\x00\x00\x00WEBP", "not a well-formed WEBP"),
    (b"RIFF\xff\x00\x00\x00WEBPVP8 ", "is truncated"),
])
def test_truncated_files_are_refused(data: bytes, match: str) -> None:
    refused(data, match)


def test_a_damaged_but_complete_png_is_a_typed_error() -> None:
    data = bytearray(hostile.noisy_png())
    start = data.index(b"IDAT") + 40
    data[start:start + 200] = b"\x00" * 200  # structure intact, pixel data (and CRC) broken
    refused(bytes(data), "not a readable PNG image")


def test_too_many_chunks_are_refused_quickly() -> None:
    started = time.perf_counter()
    refused(hostile.png_many_chunks(50_000), "more than 20000 chunks")
    assert time.perf_counter() - started < 1


def test_mpf_jpegs_with_a_gain_map_after_the_first_image_are_accepted() -> None:
    photo = hostile.jpeg(64, 48, "orange") + hostile.jpeg(16, 12, "gray")
    assert load_image(photo).size == (64, 48)
    assert load_image(hostile.jpeg() + b"\x00" * 16).size == (48, 32)  # zero padding


def test_apng_first_frame_only() -> None:
    data = hostile.apng(("red", "blue", "lime"))
    assert Image.open(io.BytesIO(data)).n_frames == 3
    assert tuple(np.asarray(load_image(data))[8, 8]) == (255, 0, 0)


@pytest.mark.parametrize(("orientation", "size"), [(1, (64, 32)), (3, (64, 32)), (6, (32, 64)),
                                                   (8, (32, 64))])
def test_every_orientation_comes_out_upright(orientation: int, size: tuple[int, int]) -> None:
    loaded = np.asarray(load_image(hostile.rotated_jpeg(64, 32, orientation))).mean(axis=2)
    assert (loaded.shape[1], loaded.shape[0]) == size
    # The white half (stored left) is shown: left (1), right (3), top (6), bottom (8).
    half = {1: loaded[:, :16], 3: loaded[:, -16:], 6: loaded[:16], 8: loaded[-16:]}[orientation]
    assert half.mean() > 200


@pytest.mark.parametrize("builder", [hostile.tagged_jpeg, hostile.tagged_png])
def test_no_input_metadata_survives(builder) -> None:
    data = builder()
    assert hostile.HIDDEN_MARKER.encode() in data
    loaded = load_image(data)
    assert loaded.info == {} and len(loaded.getexif()) == 0
    for fmt in ("PNG", "JPEG", "WEBP"):
        assert hostile.HIDDEN_MARKER.encode() not in encode(loaded, fmt)


def test_an_icc_profile_is_applied_and_a_broken_one_ignored() -> None:
    image = Image.new("RGB", (8, 8), (10, 200, 30))
    srgb = hostile._srgb_icc()
    assert tuple(np.asarray(load_image(encode(image, "PNG", icc_profile=srgb)))[0, 0]) == \
        pytest.approx((10, 200, 30), abs=2)
    broken = encode(image, "PNG", icc_profile=b"not a profile" * 20)
    assert tuple(np.asarray(load_image(broken))[0, 0]) == (10, 200, 30)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "I;16", "CMYK", "1"])
def test_other_pixel_modes_come_out_rgb(mode: str) -> None:
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    loaded = load_image(encode(Image.new(mode, (12, 10)), fmt))
    assert loaded.mode == "RGB" and loaded.size == (12, 10)


def test_decoding_a_bomb_corpus_keeps_memory_flat() -> None:
    corpus = [hostile.png_header_bomb(), hostile.png_zlib_bomb(8192), hostile.webp_canvas_bomb(),
              hostile.gif_extents_bomb(), hostile.gif_many_frames(), hostile.png_many_chunks()]
    before = _peak_rss_mb()
    for _ in range(3):
        for data in corpus:
            with pytest.raises(InvalidRequestError):
                load_image(data)
    assert _peak_rss_mb() - before < 50


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
