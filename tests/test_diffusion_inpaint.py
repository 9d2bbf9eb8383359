"""Inpainting on the diffusers backend: a plan with a mask renders through diffusers'
inpainting pipeline over the loaded modules, and a dedicated 9-channel inpainting checkpoint
(tests/tiny_inpaint.py) renders every kind of request through it.

Most tests drive the backend with plans as ``Spec2Fractal`` builds them, the mask set as the
library sets it; the last ones go through ``generate_from_image(mask=...)``, the library's
crop and composite included (pixels outside the blurred mask are the input's).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from PIL import Image, ImageDraw

from fractal import (
    GenerationCancelled,
    GenerationRequest,
    Spec2Fractal,
    image_to_data_url,
    read_record,
)
from fractal.backends.inpaint import is_inpainting_model, pipeline_mask
from fractal.masks import blur_mask
from fractal.plan import RenderPlan, build_plan
from fractal.references import load_references

FAST = {"steps": 4, "seed": 7}


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


def scene(size: tuple[int, int] = (64, 64)) -> Image.Image:
    image = Image.new("RGB", size, (40, 90, 160))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, size[1] // 2, size[0], size[1]), fill=(60, 140, 50))
    draw.ellipse((8, 8, 28, 28), fill=(250, 220, 90))
    return image


def right_half(size: tuple[int, int] = (64, 64)) -> Image.Image:
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).rectangle((size[0] // 2, 0, size[0], size[1]), fill=255)
    return mask


def masked_plan(model: Spec2Fractal, image: Image.Image, mask: Image.Image | None, *,
                blur: int = 4, **fields) -> RenderPlan:
    """A plan as the library builds one for ``generate_from_image(image, mask=...)``."""
    request = GenerationRequest(**{"input_type": "hybrid", "prompt": "a red house",
                                   "strength": 1.0, **FAST, **fields})
    style_reference, controls = load_references(request)
    plan = build_plan(request, image, styles=model.styles, defaults=model.defaults,
                      style_reference=style_reference, controls=controls)
    if mask is not None:
        plan = replace(plan, mask=mask, mask_blur=blur)
    model.backend.check(plan)
    return plan


def render(model: Spec2Fractal, plan: RenderPlan, ticks: list | None = None,
           stop_at: int | None = None) -> list[Image.Image]:
    def on_step(step: int, total: int, preview: Image.Image | None) -> None:
        if stop_at is not None and step >= stop_at:
            raise GenerationCancelled(step, total)
        if ticks is not None:
            ticks.append((step, total))

    return model.backend.render(plan, on_step)


def inside(a: Image.Image, b: Image.Image, mask: Image.Image) -> float:
    keep = np.asarray(mask) > 127
    return float(np.abs(pixels(a) - pixels(b))[keep].mean())


def test_a_mask_renders_through_the_inpainting_pipeline_over_the_same_modules(
        sd_model: Spec2Fractal) -> None:
    source, mask = scene(), right_half()
    result = render(sd_model, masked_plan(sd_model, source, mask))[0]
    assert result.size == source.size
    assert inside(result, source, mask) > 5  # the masked half is repainted
    backend = sd_model.backend
    pipeline = backend.inpainting.pipeline(backend.text_pipeline)
    assert type(pipeline).__name__ == "StableDiffusionInpaintPipeline"
    for module in ("unet", "vae", "text_encoder"):
        assert getattr(pipeline, module) is getattr(backend.text_pipeline, module)
    # Built once: the next masked render reuses it.
    render(sd_model, masked_plan(sd_model, source, mask, seed=8))
    assert backend.inpainting.pipeline(backend.text_pipeline) is pipeline


def test_the_mask_decides_what_is_repainted(sd_model: Spec2Fractal) -> None:
    source = scene()
    right = render(sd_model, masked_plan(sd_model, source, right_half()))[0]
    left = render(sd_model, masked_plan(sd_model, source,
                                        right_half().transpose(Image.Transpose.FLIP_LEFT_RIGHT)))[0]
    whole = render(sd_model, masked_plan(sd_model, source, None))[0]  # plain image-to-image
    assert np.abs(pixels(right) - pixels(left)).max() > 5
    assert np.abs(pixels(right) - pixels(whole)).max() > 5
    again = render(sd_model, masked_plan(sd_model, source, right_half()))[0]
    assert np.array_equal(pixels(right), pixels(again))  # seeded


def test_strength_steps_and_progress(sd_model: Spec2Fractal) -> None:
    source, mask = scene(), right_half()
    ticks: list = []
    full = render(sd_model, masked_plan(sd_model, source, mask, steps=6), ticks)[0]
    assert ticks[-1] == (6, 6) and len(ticks) == 6  # Euler: one UNet call a step
    ticks.clear()
    half = render(sd_model, masked_plan(sd_model, source, mask, steps=6, strength=0.5),
                  ticks)[0]
    assert ticks[-1] == (3, 3)  # the last 3 of 6 steps, as image-to-image runs them
    assert inside(half, source, mask) < inside(full, source, mask)
    # Strength 0 returns the input untouched, without a step.
    ticks.clear()
    same = render(sd_model, masked_plan(sd_model, source, mask, strength=0.0), ticks)[0]
    assert np.array_equal(pixels(same), pixels(source)) and ticks == []


def test_a_masked_render_can_be_cancelled(sd_model: Spec2Fractal) -> None:
    with pytest.raises(GenerationCancelled):
        render(sd_model, masked_plan(sd_model, scene(), right_half()), stop_at=2)


def test_a_batch_takes_one_mask_per_plan(sd_model: Spec2Fractal) -> None:
    source = scene()
    first = masked_plan(sd_model, source, right_half(), n=2)
    other = masked_plan(sd_model, source, right_half().rotate(90), seed=20)
    together = sd_model.backend.render_many([first, other], lambda *_: None)
    assert [len(images) for images in together] == [2, 1]
    alone = render(sd_model, other)[0]
    assert np.abs(pixels(together[1][0]) - pixels(alone)).max() <= 1


def test_a_large_masked_plan_runs_untiled(sd_model: Spec2Fractal) -> None:
    # tiny_sd's tile budget is its native 64 px: 128×64 would denoise in tiles unmasked.
    source, mask = scene((128, 64)), right_half((128, 64))
    plain = masked_plan(sd_model, source, None, strength=0.5)
    assert sd_model.backend.passes(plain)[0]["tiles"] > 1
    plan = masked_plan(sd_model, source, mask, strength=0.5)
    described = sd_model.backend.passes(plan)
    assert described is None or described[0]["tiles"] == 1
    result = render(sd_model, plan)[0]
    assert result.size == (128, 64) and inside(result, source, mask) > 1


def test_the_pipeline_is_given_the_blurred_mask() -> None:
    mask = right_half()
    sharp, soft = pipeline_mask(mask, 0, (64, 64)), pipeline_mask(mask, 4, (64, 64))
    assert set(np.unique(np.asarray(sharp))) == {0, 255}
    assert 0 < np.asarray(soft)[10, 30] < 255 or 0 < np.asarray(soft)[10, 31] < 255
    assert pipeline_mask(mask, 0, (32, 32)).size == (32, 32)


def test_masks_and_controls_together(adapted_sd: Spec2Fractal) -> None:
    from tests.test_control import shapes

    source, mask = scene(), right_half()
    control = [{"type": "canny", "image": image_to_data_url(shapes())}]
    held = render(adapted_sd, masked_plan(adapted_sd, source, mask, control=control))[0]
    off = render(adapted_sd, masked_plan(adapted_sd, source, mask,
                                         control=[{**control[0], "scale": 0.0}]))[0]
    assert np.abs(pixels(held) - pixels(off)).max() > 1
    backend = adapted_sd.backend
    pipeline = backend.inpainting.controlled(backend.text_pipeline, backend._adapters.controlnets,
                                             ["canny"])
    assert type(pipeline).__name__ == "StableDiffusionControlNetInpaintPipeline"
    assert pipeline.unet is backend.text_pipeline.unet
    # A style reference too: the IP-Adapter's embeddings go to the inpainting pipeline.
    styled = render(adapted_sd, masked_plan(adapted_sd, source, mask, control=control,
                                            style_image=image_to_data_url(scene((48, 48))),
                                            style_strength=1.0))[0]
    assert np.abs(pixels(held) - pixels(styled)).max() > 1


def test_sdxl_inpaints_through_its_own_pipeline(tiny_sdxl) -> None:
    model = Spec2Fractal(str(tiny_sdxl))
    source, mask = scene(), right_half()
    result = render(model, masked_plan(model, source, mask, steps=2))[0]
    assert result.size == (64, 64) and inside(result, source, mask) > 5
    pipeline = model.backend.inpainting.pipeline(model.backend.text_pipeline)
    assert type(pipeline).__name__ == "StableDiffusionXLInpaintPipeline"


# -- a dedicated inpainting checkpoint ---------------------------------------------------------

def test_an_inpainting_checkpoint_is_recognised(inpaint_model: Spec2Fractal,
                                                sd_model: Spec2Fractal) -> None:
    assert is_inpainting_model(inpaint_model.backend.text_pipeline)
    assert inpaint_model.backend.inpainting.dedicated
    assert not is_inpainting_model(sd_model.backend.text_pipeline)
    assert not sd_model.backend.inpainting.dedicated


def test_an_inpainting_checkpoint_inpaints(inpaint_model: Spec2Fractal) -> None:
    source, mask = scene(), right_half()
    ticks: list = []
    result = render(inpaint_model, masked_plan(inpaint_model, source, mask), ticks)[0]
    assert inside(result, source, mask) > 5
    assert ticks[-1] == (4, 4)
    other = render(inpaint_model, masked_plan(inpaint_model, source, mask, seed=9))[0]
    assert np.abs(pixels(result) - pixels(other)).max() > 5
    with pytest.raises(GenerationCancelled):
        render(inpaint_model, masked_plan(inpaint_model, source, mask), stop_at=1)


def test_text_and_image_to_image_on_an_inpainting_checkpoint(
        inpaint_model: Spec2Fractal) -> None:
    # Its UNet cannot run a text-to-image pipeline (a 500 before): the whole canvas is masked.
    image = inpaint_model.generate_from_text("a lake", steps=3, seed=5)
    again = inpaint_model.generate_from_text("a lake", steps=3, seed=5)
    assert image.size == (64, 64) and np.array_equal(pixels(image), pixels(again))
    assert read_record(image).input_type == "text"
    varied = inpaint_model.generate_from_image(scene(), "a lake", strength=0.5, steps=4, seed=5)
    assert varied.size == (64, 64)
    assert np.abs(pixels(varied) - pixels(scene())).mean() > 1
    # Two passes (hires: text, then image-to-image), both through the inpainting pipeline.
    large = inpaint_model.generate_from_text("a lake", width=128, height=128, steps=3, seed=5)
    assert large.size == (128, 128)


# -- through the library: its crop and composite around the backend ----------------------------

def box_mask(size: tuple[int, int], box: tuple[int, int, int, int]) -> Image.Image:
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).rectangle(box, fill=255)
    return mask


@pytest.mark.parametrize("which", ["sd_model", "inpaint_model"])
def test_outside_the_blurred_mask_the_input_is_kept_exactly(
        which: str, request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(which)
    source, mask = scene(), box_mask((64, 64), (24, 16, 47, 47))
    result = model.generate_from_image(source, "a red house", mask=mask, mask_blur=4,
                                       steps=4, seed=3)
    keep = np.asarray(blur_mask(mask, 4)) == 0
    assert keep.sum() > 1000
    assert np.array_equal(pixels(result)[keep], pixels(source)[keep])
    assert inside(result, source, mask) > 5
    record = read_record(result)
    assert record.mask["blur"] == 4 and record.mask["area"] == "whole"
    assert record.strength == 0.75  # the library's inpainting default, as A1111's


@pytest.mark.parametrize("which", ["sd_model", "inpaint_model"])
def test_only_masked_renders_the_crop_and_keeps_the_rest(
        which: str, request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(which)
    source, mask = scene((128, 128)), box_mask((128, 128), (80, 80, 103, 103))
    ticks: list = []
    result = model.generate_from_image(
        source, "a red house", mask=mask, mask_blur=2, inpaint_area="masked", padding=8,
        strength=1.0, steps=3, seed=3, on_progress=lambda *step: ticks.append(step[:2]))
    assert result.size == (128, 128) and ticks[-1] == (3, 3)
    # Only the crop renders, at the working size, in one plain pass (no tiles).
    passes = read_record(result).passes
    assert [(each["kind"], each["width"], each["height"]) for each in passes] == [
        ("inpaint", 64, 64)]
    assert passes[0]["area"] == "masked" and passes[0]["crop"] is not None
    keep = np.asarray(blur_mask(mask, 2)) == 0
    assert np.array_equal(pixels(result)[keep], pixels(source)[keep])
    assert inside(result, source, mask) > 5
    assert read_record(result).mask["area"] == "masked"


def test_outpainting_on_an_inpainting_checkpoint(inpaint_model: Spec2Fractal) -> None:
    source = scene()
    result = inpaint_model.generate_from_image(source, "a red house", expand={"right": 32},
                                               steps=3, seed=3)
    assert result.size == (96, 64)
    kept = pixels(result)[:, :40]  # far from the added strip and its feathering
    assert np.array_equal(kept, pixels(source)[:, :40])
    assert read_record(result).expand == {"left": 0, "right": 32, "top": 0, "bottom": 0}
