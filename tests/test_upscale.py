"""``Spec2Fractal.upscale`` on the built-in engine: its own images drawn again larger from
their record, others resampled with a detail pass; the record read from hostile bytes safely."""

from __future__ import annotations

import base64
import io
import json
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from fractal import (
    GenerationCancelled,
    GenerationRecord,
    InvalidRequestError,
    Spec2Fractal,
    read_record,
)
from fractal.record import RECORD_KEY, parse_record, record_from_png

PROMPT = "a lake below snowy mountains at sunrise, pine trees"
SOURCE = {"width": 96, "height": 64, "seed": 11}


@pytest.fixture(scope="module")
def engine() -> Spec2Fractal:
    return Spec2Fractal()


@pytest.fixture(scope="module")
def drawn(engine: Spec2Fractal) -> Image.Image:
    """An engine render with a style, lighting and colours: all of it must carry over."""
    image = engine.generate_from_text(PROMPT, style="Watercolor", lighting="golden hour",
                                      colors=["#204060", "orange"], texture=0.7, **SOURCE)
    assert isinstance(image, Image.Image)
    return image


def _png(image: Image.Image, chunks: PngImagePlugin.PngInfo | None = None) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=chunks)
    return buffer.getvalue()


def _with_record(text: str, *, compressed: bool = False, size: tuple[int, int] = (96, 64)
                 ) -> bytes:
    chunks = PngImagePlugin.PngInfo()
    if compressed:
        chunks.add_itxt(RECORD_KEY, text, zip=True)
    else:
        chunks.add_text(RECORD_KEY, text)
    return _png(Image.new("RGB", size, (40, 120, 200)), chunks)


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def _sharpness(image: Image.Image) -> float:
    grey = _pixels(image).astype(np.float32).mean(axis=2)
    return float(np.abs(np.diff(grey, axis=0)).mean() + np.abs(np.diff(grey, axis=1)).mean())


def test_the_result_is_scale_times_the_input(engine: Spec2Fractal) -> None:
    source = Image.new("RGB", (120, 80), (30, 90, 160))
    for scale in (2, 4):
        result = engine.upscale(source, scale=scale)
        assert result.size == (120 * scale, 80 * scale)
        record = read_record(result)
        assert record is not None
        assert (record.input_type, record.scale, record.width) == ("upscale", scale, 120 * scale)
        assert "Upscale: " in result.info["parameters"]


@pytest.mark.parametrize("form", ["pil", "bytes", "path", "reopened"])
def test_an_engine_image_is_drawn_again_from_its_record(
        engine: Spec2Fractal, drawn: Image.Image, form: str, tmp_path: Path) -> None:
    path = tmp_path / "drawn.png"
    drawn.save(path)  # attach_record makes a plain save keep the record chunk
    source = {"pil": drawn, "bytes": path.read_bytes(), "path": path,
              "reopened": Image.open(path)}[form]
    result = engine.upscale(source, scale=2)
    direct = engine.generate_from_text(PROMPT, style="Watercolor", lighting="golden hour",
                                       colors=["#204060", "orange"], texture=0.7, width=192,
                                       height=128, seed=11)
    assert np.array_equal(_pixels(result), _pixels(direct))  # the same scene, larger
    record = read_record(result)
    assert record is not None and record.passes is not None
    assert record.passes[0]["upscaler"] == "engine re-render"
    assert record.passes[0]["kind"] == "upscale"


def test_an_upscale_request_carrying_the_png_re_renders_too(
        engine: Spec2Fractal, drawn: Image.Image) -> None:
    """The service's path: the input arrives as base64 PNG bytes in a request."""
    data = base64.b64encode(_png(drawn)).decode()
    [result] = engine.generate({"input_type": "upscale", "image": data, "scale": 2})
    assert result.size == (192, 128)
    assert read_record(result).passes[0]["upscaler"] == "engine re-render"


def test_a_foreign_image_is_resampled_with_a_detail_pass(engine: Spec2Fractal) -> None:
    rng = np.random.default_rng(3)
    photo = Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).resize(
        (120, 80), Image.Resampling.BICUBIC)
    plain = photo.resize((240, 160), Image.Resampling.LANCZOS)
    untouched = engine.upscale(photo, scale=2, strength=0.0)
    assert np.array_equal(_pixels(untouched), _pixels(plain))  # strength 0: Lanczos alone
    detailed = engine.upscale(photo, scale=2)
    assert _sharpness(detailed) > _sharpness(plain) * 1.05
    record = read_record(detailed)
    assert record.passes == [{"kind": "upscale", "width": 240, "height": 160, "steps": 10,
                              "strength": 0.3, "upscaler": "Lanczos + detail", "tiles": 1,
                              "tile": None, "vae_tile": None}]


def test_a_larger_render_is_not_a_re_render_of_another_size(
        engine: Spec2Fractal, drawn: Image.Image) -> None:
    """A record whose size is not the source's (a resized copy) cannot be drawn again."""
    resized = drawn.resize((100, 64))
    resized.info = dict(drawn.info)
    result = engine.upscale(resized, scale=2)
    assert read_record(result).passes[0]["upscaler"] == "Lanczos + detail"


@pytest.mark.parametrize("scale", [3, 1, 8, True, "2", 2.0])
def test_a_bad_scale_is_refused_naming_scale(engine: Spec2Fractal, scale: object) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        engine.upscale(Image.new("RGB", (64, 64)), scale=scale)  # type: ignore[arg-type]
    assert caught.value.argument == "scale"


def test_a_result_over_4096_is_refused_naming_scale_and_the_largest(
        engine: Spec2Fractal) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        engine.upscale(Image.new("RGB", (1536, 512)), scale=4)
    assert caught.value.argument == "scale"
    assert "6144x2048" in str(caught.value) and "largest scale for this image is 2" in str(
        caught.value)
    with pytest.raises(InvalidRequestError, match="too large to upscale") as caught:
        engine.upscale(Image.new("RGB", (2056, 64)), scale=2)
    assert caught.value.argument == "scale"


def _forged(**changes: object) -> str:
    record = GenerationRecord(input_type="text", prompt=PROMPT, user_prompt=PROMPT,
                              negative_prompt="", width=96, height=64, steps=10, guidance=0.0,
                              seed=11, sampler="Fractal", model="fractal").to_dict()
    record.update(changes)
    return json.dumps(record)


@pytest.mark.parametrize("text", [
    "not json", "[1, 2]", "{}", '{"model": "fractal"}', "[" * 100_000 + "]" * 100_000,
    _forged(width="96"), _forged(seed=True), _forged(guidance=float("nan")).replace("NaN", "1e999"),
    _forged(colors=[1, 2]), _forged(passes=["x"]), _forged(unknown=1), _forged(prompt=None),
    _forged(prompt="x" * 5000),  # well typed, but longer than any prompt may be
    _forged(lighting="strobe"), _forged(colors=["not-a-colour"]), _forged(seed=-1),
    _forged(texture=7.0), _forged(style="no such style"), _forged(input_type="hybrid"),
    _forged(model="other/model"), _forged(width=4096),
])
def test_a_hostile_or_foreign_record_is_ignored(engine: Spec2Fractal, text: str) -> None:
    result = engine.upscale(_with_record(text), scale=2)
    assert result.size == (192, 128)
    assert read_record(result).passes[0]["upscaler"] == "Lanczos + detail"


def test_a_forged_but_valid_record_asks_for_no_more_than_a_text_request(
        engine: Spec2Fractal) -> None:
    """Drawing the record's scene is what a text request could ask for anyway."""
    result = engine.upscale(_with_record(_forged()), scale=2)
    assert read_record(result).passes[0]["upscaler"] == "engine re-render"
    direct = engine.generate_from_text(PROMPT, width=192, height=128, seed=11)
    assert np.array_equal(_pixels(result), _pixels(direct))


def test_a_record_is_read_as_its_request_would_be(engine: Spec2Fractal) -> None:
    """Names a request may spell loosely are normalised the same way from a record."""
    loose = engine.upscale(_with_record(_forged(lighting="Golden_Hour", style="watercolor")),
                           scale=2)
    assert read_record(loose).passes[0]["upscaler"] == "engine re-render"
    direct = engine.generate_from_text(PROMPT, width=192, height=128, seed=11,
                                       lighting="golden hour", style="Watercolor")
    assert np.array_equal(_pixels(loose), _pixels(direct))


def test_record_chunks_are_read_within_bounds() -> None:
    unicode_prompt = _forged(prompt="Ein See im Morgenlicht, Berge — 山と湖")
    assert record_from_png(_with_record(unicode_prompt)) is not None  # iTXt (not Latin-1)
    assert record_from_png(_with_record(_forged(), compressed=True)) is not None
    bomb = PngImagePlugin.PngInfo()
    bomb.add_itxt(RECORD_KEY, " " * 50_000_000, zip=True)  # 50 MB of spaces, 50 kB zipped
    data = _png(Image.new("RGB", (8, 8)), bomb)
    assert len(data) < 200_000 and record_from_png(data) is None
    truncated = _with_record(_forged())
    assert record_from_png(truncated[:60]) is None
    assert record_from_png(b"\x89PNG\r\n\x1a\n" + b"\xff" * 16) is None
    assert record_from_png(b"GIF89a") is None
    assert parse_record(zlib.compress(b"x")) is None


def test_progress_and_cancel(engine: Spec2Fractal, drawn: Image.Image) -> None:
    steps: list[tuple[int, int]] = []
    engine.upscale(drawn, scale=2, on_progress=lambda step, total, _p: steps.append(
        (step, total)))
    assert steps and steps[-1] == (10, 10)
    foreign = Image.new("RGB", (64, 64), (1, 2, 3))
    steps.clear()
    engine.upscale(foreign, scale=2, on_progress=lambda step, total, _p: steps.append(
        (step, total)))
    assert steps[-1] == (10, 10) and len(steps) >= 2
    stop = threading.Event()

    def cancel_after_first(step: int, total: int, _preview: object) -> None:
        stop.set()

    with pytest.raises(GenerationCancelled):
        engine.upscale(foreign, scale=2, on_progress=cancel_after_first, cancel=stop)
