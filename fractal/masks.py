"""Inpainting and outpainting around any backend: the mask's feathering, the "only masked"
crop, the outpaint canvas, and the final composite.

A backend only ever renders a plan with an ``init_image`` and a ``mask``; this module decides
what that plan is (the whole picture, or the padded crop around the mask at the model's
working size, as AUTOMATIC1111's "Only masked" does) and pastes the render back with
``input × (1 − m) + render × m``, ``m`` the mask blurred by ``mask_blur`` pixels. The blend is
integer arithmetic, so every pixel where the blurred mask is 0 is exactly the input's.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageFilter

from fractal.errors import InvalidRequestError
from fractal.images import load_mask
from fractal.masks_check import EXPAND_SIDES
from fractal.preprocess import fit
from fractal.references import pixel_hash
from fractal.validation import MAX_SIDE

if TYPE_CHECKING:
    from fractal.plan import ModelDefaults, RenderPlan
    from fractal.record import GenerationRecord
    from fractal.request import GenerationRequest

__all__ = ["InpaintJob", "blur_mask", "composite", "crop_box", "default_strength", "edit_inputs",
           "edit_record", "inpaint_jobs", "outpaint_canvas", "prepare_inpaint", "working_size"]

logger = logging.getLogger(__name__)

INPAINT_STRENGTH = 0.75  # A1111's default denoising strength for inpainting
OUTPAINT_STRENGTH = 1.0  # new area has nothing to keep
FILL_NOISE = 12.0  # grey levels of noise over an outpaint's pre-fill: texture to denoise


def blur_mask(mask: Image.Image, radius: int) -> Image.Image:
    """``mask`` ("L") feathered by a Gaussian of ``radius`` pixels, as A1111's mask blur. Pixels
    beyond the kernel's reach stay exactly 0 (8-bit rounding), so they keep the input."""
    if radius <= 0:
        return mask.copy()
    return mask.filter(ImageFilter.GaussianBlur(radius))


def composite(base: Image.Image, render: Image.Image, blurred: Image.Image) -> Image.Image:
    """``base × (1 − m) + render × m`` in integers (m = blurred / 255): where ``blurred`` is 0
    the result is ``base``'s pixel exactly, where it is 255 ``render``'s."""
    m = np.asarray(blurred, dtype=np.uint32)[..., None]
    a = np.asarray(base.convert("RGB"), dtype=np.uint32)
    b = np.asarray(render.convert("RGB"), dtype=np.uint32)
    mixed = (a * (255 - m) + b * m + 127) // 255
    return Image.fromarray(mixed.astype(np.uint8))


def working_size(width: int, height: int, defaults: ModelDefaults) -> tuple[int, int]:
    """The model's native area in a ``width``×``height`` crop's aspect, sides multiples of its
    size multiple (and within MAX_SIDE)."""
    multiple = defaults.size_multiple
    area = defaults.width * defaults.height
    aspect = width / height
    top = MAX_SIDE // multiple * multiple

    def snap(value: float) -> int:
        return min(top, max(multiple, round(value / multiple) * multiple))

    return snap(math.sqrt(area * aspect)), snap(math.sqrt(area / aspect))


def _grow(low: int, high: int, length: int, limit: int) -> tuple[int, int]:
    """[low, high) grown evenly to ``length`` (at most ``limit``), shifted to stay inside."""
    length = min(limit, max(length, high - low))
    low = max(0, min(low - (length - (high - low)) // 2, limit - length))
    return low, low + length


def crop_box(blurred: Image.Image, padding: int, defaults: ModelDefaults
             ) -> tuple[tuple[int, int, int, int], tuple[int, int]]:
    """The box (left, top, right, bottom) around the blurred mask grown by ``padding``, kept in
    the image and grown to the aspect of the size it renders at; and that working size."""
    width, height = blurred.size
    left, top, right, bottom = blurred.getbbox() or (0, 0, width, height)
    left, top = max(0, left - padding), max(0, top - padding)
    right, bottom = min(width, right + padding), min(height, bottom + padding)
    work_w, work_h = working_size(right - left, bottom - top, defaults)
    # Grow the short side so the crop has the working size's aspect (no distortion), as far
    # as the image allows.
    box_w, box_h = right - left, bottom - top
    if box_w / box_h < work_w / work_h:
        left, right = _grow(left, right, round(box_h * work_w / work_h), width)
    else:
        top, bottom = _grow(top, bottom, round(box_w * work_h / work_w), height)
    return (left, top, right, bottom), (work_w, work_h)


def outpaint_canvas(image: Image.Image, expand: tuple[int, int, int, int], seed: int
                    ) -> tuple[Image.Image, Image.Image]:
    """``image`` placed in a canvas larger by ``expand`` (left, right, top, bottom), and the
    mask of the added area. The new area is pre-filled with the edge extended, pulled toward
    the image's mean colour with distance, plus seeded noise: something for a diffusion model
    to denoise (a flat fill gives it nothing)."""
    left, right, top, bottom = expand
    source = np.asarray(image.convert("RGB"), dtype=np.float32)
    padded = np.pad(source, ((top, bottom), (left, right), (0, 0)), mode="edge")
    height, width = padded.shape[:2]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    dy = np.maximum(top - ys, ys - (top + image.height - 1)).clip(0)
    dx = np.maximum(left - xs, xs - (left + image.width - 1)).clip(0)
    reach = max(1.0, max(expand) / 2)
    pull = np.clip(np.hypot(dx, dy) / reach, 0, 1)[..., None]
    filled = padded * (1 - pull) + source.mean(axis=(0, 1)) * pull
    noise = np.random.default_rng(seed).normal(0, FILL_NOISE, filled.shape).astype(np.float32)
    filled += noise * (pull > 0)
    canvas = np.clip(filled + 0.5, 0, 255).astype(np.uint8)
    canvas[top:top + image.height, left:left + image.width] = np.asarray(image.convert("RGB"))
    mask = np.full((height, width), 255, np.uint8)
    mask[top:top + image.height, left:left + image.width] = 0
    return Image.fromarray(canvas), Image.fromarray(mask)


def edit_inputs(request: GenerationRequest, image: Image.Image, size: tuple[int, int],
                seed: int) -> tuple[Image.Image, Image.Image, tuple[int, int, int, int] | None]:
    """A request's input fitted to ``size``, its mask there, and for an outpaint the canvas:
    ``(init_image, mask, expand)``. The mask must be the input image's size."""
    mask: Image.Image | None = None
    if request.mask is not None:
        mask = load_mask(request.mask, "mask")
        if mask.size != image.size:
            raise InvalidRequestError(
                "mask", f"{mask.width}x{mask.height}",
                f"must be the input image's size ({image.width}x{image.height})")
    if image.size != size:
        image = image.resize(size, Image.Resampling.LANCZOS)
    if mask is None:
        mask = Image.new("L", size, 0)
    elif mask.size != size:
        mask = mask.resize(size, Image.Resampling.BILINEAR)
    if request.expand is None:
        return image, mask, None
    sides = _expand_sides(request.expand)
    width, height = size[0] + sides[0] + sides[1], size[1] + sides[2] + sides[3]
    if max(width, height) > MAX_SIDE:
        raise InvalidRequestError("expand", dict(request.expand),
                                  f"makes the canvas {width}x{height}; no side may exceed "
                                  f"{MAX_SIDE}")
    canvas, added = outpaint_canvas(image, sides, seed)
    added.paste(mask, (sides[0], sides[2]))  # the caller's mask on the original, if any
    return canvas, added, sides


def _expand_sides(expand: Mapping[str, Any]) -> tuple[int, int, int, int]:
    left, right, top, bottom = (int(expand.get(side) or 0) for side in EXPAND_SIDES)
    return left, right, top, bottom


def default_strength(request: GenerationRequest) -> float:
    """Inpainting repaints at 0.75 as A1111 does; a pure outpaint fills at 1."""
    return INPAINT_STRENGTH if request.mask is not None else OUTPAINT_STRENGTH


@dataclass(frozen=True)
class InpaintJob:
    """What a masked plan renders: ``render_plan`` for the backend (None: the mask repaints
    nothing, so nothing renders), the crop ``box`` for "masked", and the blurred mask the
    composite uses (at the plan's size)."""

    plan: RenderPlan
    render_plan: RenderPlan | None
    blurred: Image.Image
    box: tuple[int, int, int, int] | None = None

    @property
    def skipped(self) -> bool:
        return self.render_plan is None

    def unchanged(self) -> list[Image.Image]:
        """The input, once per image: an all-black mask repaints nothing."""
        assert self.plan.init_image is not None
        return [self.plan.init_image.convert("RGB") for _ in self.plan.seeds]

    def finish(self, images: list[Image.Image]) -> list[Image.Image]:
        """The backend's renders pasted back (for "masked", resized into the crop) and
        composited over the input through the blurred mask."""
        base = self.plan.init_image
        assert base is not None
        results = []
        for image in images:
            render = image.convert("RGB")
            if self.box is not None:
                left, top, right, bottom = self.box
                whole = base.convert("RGB")
                whole.paste(render.resize((right - left, bottom - top),
                                          Image.Resampling.LANCZOS), (left, top))
                render = whole
            elif render.size != base.size:
                render = render.resize(base.size, Image.Resampling.LANCZOS)
            results.append(composite(base, render, self.blurred))
        return results

    def describe(self) -> dict[str, Any]:
        """The record's pass for this step."""
        if self.render_plan is None:
            return {"kind": "inpaint", "skipped": True}
        return {"kind": "inpaint", "area": self.plan.inpaint_area,
                "crop": list(self.box) if self.box else None,
                "width": self.render_plan.width, "height": self.render_plan.height}


def prepare_inpaint(plan: RenderPlan, defaults: ModelDefaults) -> InpaintJob:
    """The job of a plan with a mask: the whole plan for "whole", the crop plan for "masked"."""
    assert plan.mask is not None and plan.init_image is not None
    blurred = blur_mask(plan.mask, plan.mask_blur)
    if plan.mask.getextrema()[1] == 0:
        return InpaintJob(plan, None, blurred)
    if plan.inpaint_area != "masked":
        return InpaintJob(plan, plan, blurred)
    box, (work_w, work_h) = crop_box(blurred, plan.padding, defaults)
    crop = plan.init_image.crop(box).resize((work_w, work_h), Image.Resampling.LANCZOS)
    crop_mask = plan.mask.crop(box).resize((work_w, work_h), Image.Resampling.BILINEAR)
    logger.info("inpainting the crop %s of %dx%d at %dx%d", box, plan.width, plan.height,
                work_w, work_h)
    # A control's structure is the whole picture's: the crop renders with its part of it.
    controls = tuple(replace(unit, image=fit(unit.image.convert("RGB"), plan.width,
                                             plan.height).crop(box)) for unit in plan.controls)
    return InpaintJob(plan, replace(plan, init_image=crop, mask=crop_mask, width=work_w,
                                    height=work_h, hires=None, controls=controls), blurred, box)


def edit_record(record: GenerationRecord, job: InpaintJob | None,
                passes: Callable[[RenderPlan], list[dict[str, Any]] | None] | None = None
                ) -> GenerationRecord:
    """A record with its mask ({"sha256" of the plan's mask pixels, "blur", "area",
    "padding"}), its expand, and the inpaint pass after the passes the backend ran (its
    ``passes`` of the crop, for "masked"); one that rendered nothing says so (steps 0, the
    pass ``skipped``)."""
    if job is None:
        return record
    plan = job.plan
    if passes is not None and job.render_plan is not None and job.render_plan is not plan:
        record = replace(record, passes=passes(job.render_plan))
    elif job.render_plan is None:
        record = replace(record, passes=None)
    assert plan.mask is not None
    left, right, top, bottom = plan.expand or (0, 0, 0, 0)
    return replace(
        record,
        mask={"sha256": pixel_hash(plan.mask), "blur": plan.mask_blur,
              "area": plan.inpaint_area,
              "padding": plan.padding if plan.inpaint_area == "masked" else None},
        expand={"left": left, "right": right, "top": top, "bottom": bottom}
        if plan.expand else None,
        steps=0 if job.skipped else record.steps,
        passes=[*(record.passes or []), job.describe()],
    )


def inpaint_jobs(plans: Mapping[int, RenderPlan], defaults: ModelDefaults
                 ) -> dict[int, InpaintJob]:
    """The jobs of the plans that have a mask, by index."""
    return {index: prepare_inpaint(plan, defaults) for index, plan in plans.items()
            if plan.mask is not None}
