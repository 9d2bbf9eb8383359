"""Inpainting and outpainting through the library (fractal.masks), on the built-in engine:
what is kept is kept exactly, "masked" renders the padded crop, outpaint canvases, the
all-black shortcut, records, and hostile values named by field."""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from fractal import GenerationRequest, InvalidRequestError, Spec2Fractal, read_record
from fractal.images import image_to_data_url
from fractal.masks import blur_mask, crop_box
from fractal.validation import MAX_SIDE

SIZE = (128, 96)


@pytest.fixture(scope="module")
def source(engine_model: Spec2Fractal) -> Image.Image:
    image = engine_model.generate_from_text("mountains above a lake", seed=11,
                                            width=SIZE[0], height=SIZE[1])
    return Image.fromarray(np.asarray(image))  # no record: a caller's photo


def _mask(box: tuple[int, int, int, int] = (40, 24, 80, 64), size: tuple[int, int] = SIZE
          ) -> Image.Image:
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).rectangle(box, fill=255)
    return mask


@contextmanager
def rendered_plans(model: Spec2Fractal) -> Iterator[list[Any]]:
    """The plans the backend is given (render and render_many), the real engine underneath."""
    plans: list[Any] = []
    backend = model.backend
    render, render_many = backend.render, backend.render_many

    def counted(plan, on_step):  # type: ignore[no-untyped-def]
        plans.append(plan)
        return render(plan, on_step)

    def counted_many(batch, on_step):  # type: ignore[no-untyped-def]
        plans.extend(batch)
        return render_many(batch, on_step)

    backend.render, backend.render_many = counted, counted_many  # type: ignore[method-assign]
    try:
        yield plans
    finally:
        del backend.render, backend.render_many


@pytest.mark.parametrize("blur", [0, 6])
def test_pixels_outside_the_blurred_mask_are_the_input_exactly(
        engine_model: Spec2Fractal, source: Image.Image, blur: int) -> None:
    mask = _mask()
    result = engine_model.generate_from_image(source, "a red volcano", mask=mask,
                                              mask_blur=blur, seed=4)
    kept = np.asarray(blur_mask(mask, blur)) == 0
    before, after = np.asarray(source), np.asarray(result)
    assert result.size == SIZE
    assert np.array_equal(before[kept], after[kept])
    hole = SIZE[0] * SIZE[1] - 41 * 41
    assert kept.sum() == hole if blur == 0 else kept.sum() < hole  # the blur reaches past it
    assert not np.array_equal(before[~kept], after[~kept])  # and the hole was repainted


def test_only_masked_renders_the_padded_crop_at_the_working_size_and_pastes_it(
        engine_model: Spec2Fractal, source: Image.Image) -> None:
    mask = _mask((50, 40, 70, 56))
    with rendered_plans(engine_model) as plans:
        result = engine_model.generate_from_image(source, "a lake", mask=mask, mask_blur=2,
                                                  inpaint_area="masked", padding=8, seed=4)
    (plan,) = plans
    box, working = crop_box(blur_mask(mask, 2), 8, engine_model.defaults)
    assert (plan.width, plan.height) == working == plan.init_image.size == plan.mask.size
    native = engine_model.defaults.width * engine_model.defaults.height
    assert abs(plan.width * plan.height - native) / native < 0.05  # the model's native area
    left, top, right, bottom = box
    assert left <= 50 - 8 - 2 and right >= 71 + 8 + 2 and top <= 40 - 8 - 2
    assert math.isclose((right - left) / (bottom - top), working[0] / working[1], rel_tol=0.05)
    before, after = np.asarray(source), np.asarray(result)
    outside = np.ones(SIZE[::-1], bool)
    outside[top:bottom, left:right] = False
    assert np.array_equal(before[outside], after[outside])
    kept = np.asarray(blur_mask(mask, 2)) == 0
    assert np.array_equal(before[kept], after[kept])
    assert not np.array_equal(before[~kept], after[~kept])
    passes = read_record(result).passes
    assert passes == [{"kind": "inpaint", "area": "masked", "crop": list(box),
                       "width": working[0], "height": working[1]}]


def test_outpaint_extends_the_canvas_and_keeps_the_original(
        engine_model: Spec2Fractal, source: Image.Image) -> None:
    result = engine_model.generate_from_image(source, "mountains above a lake", seed=3,
                                              expand={"left": 32, "right": 64, "top": 8})
    assert result.size == (SIZE[0] + 96, SIZE[1] + 8)
    record = read_record(result)
    assert record.expand == {"left": 32, "right": 64, "top": 8, "bottom": 0}
    assert (record.width, record.height) == result.size and record.strength == 1.0
    after = np.asarray(result)
    reach = 3 * 4  # the default blur of 4 px feathers the seam; beyond it, the original
    inner = np.asarray(source)[reach:, reach:-reach]
    assert np.array_equal(after[8 + reach:, 32 + reach:32 + SIZE[0] - reach], inner)
    assert after[:, :32].std() > 0  # the new area is filled, not flat


def test_a_mask_with_expand_repaints_both(engine_model: Spec2Fractal, source: Image.Image
                                          ) -> None:
    mask = _mask((90, 10, 120, 40))
    result = engine_model.generate_from_image(source, None, mask=mask, mask_blur=0,
                                              expand={"left": 16}, seed=2)
    before, after = np.asarray(source), np.asarray(result)[:, 16:]
    assert result.size == (SIZE[0] + 16, SIZE[1])
    kept = np.asarray(mask) == 0
    assert np.array_equal(before[kept], after[kept])
    assert not np.array_equal(before[~kept], after[~kept])


def test_an_all_black_mask_returns_the_input_without_rendering(
        engine_model: Spec2Fractal, source: Image.Image) -> None:
    black = Image.new("L", SIZE, 0)
    with rendered_plans(engine_model) as plans:
        result = engine_model.generate_from_image(source, "a castle", mask=black, seed=1)
        many = engine_model.generate_many([
            {"input_type": "hybrid", "prompt": "a castle", "image": image_to_data_url(source),
             "mask": image_to_data_url(black), "seed": 1, "n": 2}])
    assert plans == []
    assert np.array_equal(np.asarray(result), np.asarray(source))
    record = read_record(result)
    assert record.steps == 0 and record.passes == [{"kind": "inpaint", "skipped": True}]
    assert len(many[0]) == 2
    assert all(np.array_equal(np.asarray(image), np.asarray(source)) for image in many[0])


def test_a_mask_of_another_size_is_refused_naming_both(engine_model: Spec2Fractal,
                                                       source: Image.Image) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        engine_model.generate_from_image(source, "x", mask=_mask(size=(64, 64)))
    assert caught.value.argument == "mask"
    assert "64x64" in str(caught.value) and "128x96" in str(caught.value)


def test_transparent_pixels_of_an_rgba_mask_are_repainted(
        engine_model: Spec2Fractal, source: Image.Image, tmp_path: Path) -> None:
    rgba = Image.new("RGBA", SIZE, (0, 0, 0, 255))
    ImageDraw.Draw(rgba).rectangle((40, 24, 80, 64), fill=(0, 0, 0, 0))  # OpenAI's meaning
    path = tmp_path / "mask.png"
    rgba.save(path)
    buffer = io.BytesIO()
    rgba.save(buffer, format="PNG")
    grey = engine_model.generate_from_image(source, "a lake", mask=_mask(), seed=6)
    for mask in (rgba, path, buffer.getvalue(), str(path)):
        alpha = engine_model.generate_from_image(source, "a lake", mask=mask, seed=6)
        assert np.array_equal(np.asarray(alpha), np.asarray(grey))
        assert read_record(alpha).mask == read_record(grey).mask


def test_requests_carry_masks_as_data_and_render_the_same(
        engine_model: Spec2Fractal, source: Image.Image) -> None:
    direct = engine_model.generate_from_image(source, "a lake", mask=_mask(), seed=6,
                                              inpaint_area="masked", padding=4, mask_blur=3)
    (as_data,) = engine_model.generate({
        "input_type": "hybrid", "prompt": "a lake", "image": image_to_data_url(source),
        "mask": image_to_data_url(_mask()), "seed": 6, "inpaint_area": "masked",
        "padding": 4, "mask_blur": 3})
    assert np.array_equal(np.asarray(direct), np.asarray(as_data))
    record = read_record(as_data)
    assert record.mask["blur"] == 3 and record.mask["area"] == "masked"
    assert record.mask["padding"] == 4 and len(record.mask["sha256"]) == 64
    text = as_data.info["parameters"]
    assert "Mask blur: 3, Inpaint area: Only masked, Masked area padding: 4" in text
    assert "Denoising strength: 0.75" in text


def test_inpainting_is_deterministic_per_seed(engine_model: Spec2Fractal,
                                              source: Image.Image) -> None:
    first = engine_model.generate_from_image(source, "a forest", mask=_mask(), seed=9)
    again = engine_model.generate_from_image(source, "a forest", mask=_mask(), seed=9)
    other = engine_model.generate_from_image(source, "a forest", mask=_mask(), seed=10)
    assert np.array_equal(np.asarray(first), np.asarray(again))
    assert not np.array_equal(np.asarray(first), np.asarray(other))
    assert "Mask blur: 4" in first.info["parameters"]
    assert "Inpaint area" not in first.info["parameters"]


def test_generate_many_composites_masked_plans_as_generate_does(
        engine_model: Spec2Fractal, source: Image.Image) -> None:
    base = {"input_type": "image", "image": image_to_data_url(source), "seed": 5}
    requests = [{**base, "mask": image_to_data_url(_mask())},
                {**base, "mask": image_to_data_url(_mask((0, 0, 30, 30)))},
                {**base, "expand": {"right": 16}},
                {**base, "mask": image_to_data_url(_mask(size=(8, 8)))}]
    results = engine_model.generate_many(requests)
    for request, images in zip(requests[:3], results[:3], strict=True):
        (alone,) = engine_model.generate(request)
        assert np.array_equal(np.asarray(images[0]), np.asarray(alone))
    assert isinstance(results[3], InvalidRequestError) and results[3].argument == "mask"


@pytest.mark.parametrize(("changes", "field"), [
    ({"mask_blur": float("nan")}, "mask_blur"),
    ({"mask_blur": -1}, "mask_blur"),
    ({"padding": -8, "inpaint_area": "masked"}, "padding"),
    ({"padding": float("inf"), "inpaint_area": "masked"}, "padding"),
    ({"inpaint_area": "everything"}, "inpaint_area"),
    ({"mask": "data:image/png;base64,\ud800"}, "mask"),
    ({"mask": "not base64 at all!"}, "mask"),
    ({"mask": 12}, "mask"),
    ({"expand": [64, 64]}, "expand"),
    ({"expand": {"left": 10**12}}, "expand.left"),
    ({"expand": {"left": -8}}, "expand.left"),
    ({"expand": {"left": 12}}, "expand.left"),
    ({"expand": {"up": 8}}, "expand.up"),
    ({"expand": {"left": MAX_SIDE - 8, "right": 64}}, "expand"),
])
def test_hostile_values_are_refused_naming_the_field(
        engine_model: Spec2Fractal, source: Image.Image, changes: dict[str, Any],
        field: str) -> None:
    request = {"input_type": "image", "image": image_to_data_url(source),
               "mask": image_to_data_url(_mask()), **changes}
    with pytest.raises(InvalidRequestError) as caught:
        engine_model.generate(GenerationRequest.from_dict(request))
    assert caught.value.argument == field


def test_only_masked_gives_the_crop_its_part_of_a_control(engine_model: Spec2Fractal,
                                                          source: Image.Image) -> None:
    mask = _mask((50, 40, 70, 56))
    with rendered_plans(engine_model) as plans:
        engine_model.generate_from_image(source, "a lake", mask=mask, inpaint_area="masked",
                                         padding=8, seed=4,
                                         control=[{"type": "image", "image": source}])
    box, _ = crop_box(blur_mask(mask, 4), 8, engine_model.defaults)
    (unit,) = plans[0].controls
    assert np.array_equal(np.asarray(unit.image), np.asarray(source.crop(box)))
