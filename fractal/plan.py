"""Turning a request into a render plan: styles, controls and model defaults resolved."""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from PIL import Image

from fractal.controls import normalise_lighting, parse_colors, prompt_fragments
from fractal.loras import PlannedLora, check_loras, merge_loras, parse_prompt_loras
from fractal.masks import default_strength as edit_strength
from fractal.masks import edit_inputs
from fractal.masks_check import DEFAULT_MASK_BLUR, DEFAULT_PADDING
from fractal.references import ControlUnit, StyleReference
from fractal.request import GenerationRequest
from fractal.schedulers import check_scheduler
from fractal.styles import Style, StyleLibrary
from fractal.validation import MAX_SEED, MAX_SIDE, check_request, check_upscale

__all__ = ["HIRES_FACTOR", "HiresPass", "ModelDefaults", "RenderPlan", "build_plan"]

RGB = tuple[int, int, int]
DEFAULT_STRENGTH = 0.6
UPSCALE_STRENGTH = 0.3  # an upscale adds detail; it should not repaint
HIRES_STRENGTH = 0.35  # AUTOMATIC1111's hires fix is commonly run at 0.3-0.4
# Text-to-image renders in two passes when the target area exceeds the model's native area
# by more than this (Spec2Fractal(hires_factor=...)).
HIRES_FACTOR = 1.5


@dataclass(frozen=True)
class ModelDefaults:
    """What a model renders best when the request does not say."""

    width: int
    height: int
    steps: int
    guidance: float
    # Text encoders understand words; the built-in engine reads the controls directly.
    controls_in_prompt: bool = True
    # Sides the model can render are multiples of this (its latent's scale, times its
    # patch size for a transformer that packs latent patches).
    size_multiple: int = 8
    # Whether a size far beyond the native one is rendered in two passes (diffusion models
    # compose badly there); the built-in engine renders any size natively.
    two_pass: bool = True


@dataclass(frozen=True)
class HiresPass:
    """Two-pass high resolution: render at ``width``×``height`` (the model's native area in
    the target's aspect), upscale to the plan's size, then refine with image-to-image at
    ``strength`` for ``steps`` denoising steps (steps actually run, not nominal)."""

    width: int
    height: int
    strength: float
    steps: int


@dataclass(frozen=True)
class RenderPlan:
    input_type: str
    user_prompt: str | None
    prompt: str
    negative_prompt: str
    width: int
    height: int
    steps: int
    guidance: float
    seeds: tuple[int, ...]
    scheduler: str | None
    strength: float | None
    init_image: Image.Image | None
    lighting: str | None
    palette: tuple[RGB, ...] | None
    colors: tuple[str, ...] | None
    texture: float | None
    style: Style | None
    hires: HiresPass | None = None
    # input_type "upscale": the result is ``scale`` × the source (``init_image``, kept at its
    # own size; ``width``×``height`` is the result's), and ``source_record`` is the source's
    # GenerationRecord as a dict when this library made it (the engine re-renders from it).
    scale: int | None = None
    source_record: dict[str, Any] | None = None
    # Reference images (fractal.references), decoded: render in the style of
    # ``style_reference`` (on every pass), keeping each control's structure.
    style_reference: StyleReference | None = None
    controls: tuple[ControlUnit, ...] = ()
    # Inpainting and outpainting (fractal.masks_check). ``mask``: "L" at the plan's size
    # (255 repaints, 0 keeps), before blurring; for outpainting, ``init_image`` is already
    # the expanded canvas and ``mask`` covers the added area. The library composites the
    # render over the input with the mask blurred by ``mask_blur``, so pixels outside it are
    # exactly the input's; with ``inpaint_area`` "masked" a backend is given the padded crop.
    mask: Image.Image | None = None
    mask_blur: int = 0
    inpaint_area: str = "whole"
    padding: int = 0
    expand: tuple[int, int, int, int] | None = None  # left, right, top, bottom
    # LoRAs to apply (fractal.loras): the style's, the prompt's tags and the request's, merged
    # by name; the prompt above has its tags taken out.
    loras: tuple[PlannedLora, ...] = ()

    @property
    def n(self) -> int:
        return len(self.seeds)


def _snap(value: float, multiple: int = 8) -> int:
    """The nearest multiple of ``multiple`` to ``value``, within 1 … MAX_SIDE multiples."""
    top = MAX_SIDE // multiple * multiple
    return min(top, max(multiple, math.floor(value / multiple + 0.5) * multiple))


def _size(
    request: GenerationRequest, init: Image.Image | None, defaults: ModelDefaults
) -> tuple[int, int]:
    if request.input_type == "upscale" and init is not None:
        width, height = check_upscale(init.size, request.scale or 2)
        return _snap(width, defaults.size_multiple), _snap(height, defaults.size_multiple)
    if request.width and request.height:
        return request.width, request.height
    if init is not None:
        # Image-to-image keeps the input's size (as AUTOMATIC1111, ComfyUI, diffusers and
        # OpenAI's edits do), rounded to what the model renders, and its aspect ratio when
        # one side is given; no side over MAX_SIDE.
        multiple = defaults.size_multiple
        if request.width:
            return request.width, _snap(request.width * init.height / init.width, multiple)
        if request.height:
            return _snap(request.height * init.width / init.height, multiple), request.height
        scale = min(1.0, MAX_SIDE / max(init.size))
        return _snap(init.width * scale, multiple), _snap(init.height * scale, multiple)
    return request.width or defaults.width, request.height or defaults.height


def hires_pass(request: GenerationRequest, width: int, height: int, steps: int,
               defaults: ModelDefaults, factor: float = HIRES_FACTOR) -> HiresPass | None:
    """The first pass of a two-pass render, or None for one pass: text-to-image only, when
    ``hires`` is not "off" and the target's area exceeds the native area by more than
    ``factor`` ("auto") or at all (an object of refine settings)."""
    mode = request.hires if request.hires is not None else "auto"
    if request.input_type != "text" or mode == "off" or not defaults.two_pass:
        return None
    native = defaults.width * defaults.height
    if width * height <= native * (factor if mode == "auto" else 1.0):
        return None
    shrink = math.sqrt(native / (width * height))
    first_width = _snap(width * shrink, defaults.size_multiple)
    first_height = _snap(height * shrink, defaults.size_multiple)
    settings = mode if isinstance(mode, dict) else {}
    strength = settings.get("strength") or HIRES_STRENGTH
    refine_steps = settings.get("steps") or max(1, math.ceil(steps * strength))
    return HiresPass(first_width, first_height, float(strength), int(refine_steps))


def build_plan(
    request: GenerationRequest,
    init_image: Image.Image | None,
    *,
    styles: StyleLibrary,
    defaults: ModelDefaults,
    hires_factor: float = HIRES_FACTOR,
    source_record: dict[str, Any] | None = None,
    style_reference: StyleReference | None = None,
    controls: tuple[ControlUnit, ...] = (),
) -> RenderPlan:
    style = styles.resolve(request.style) if request.style is not None else None
    tagless, tags = parse_prompt_loras(request.prompt)
    loras = merge_loras(check_loras(request.loras), tags, style.loras if style else ())
    lighting = normalise_lighting(request.lighting or (style.lighting if style else None))
    user_colors = tuple(request.colors) if request.colors else None
    # A style's palette is for the engine; its prompt template already names its colours.
    colors = user_colors or (style.palette if style and not defaults.controls_in_prompt else None)
    palette = tuple(parse_colors(list(colors))) if colors else None

    user_prompt = (tagless or "").strip()
    prompt = user_prompt
    negatives: Sequence[str] = [request.negative_prompt or ""]
    if defaults.controls_in_prompt:
        prompt = style.apply(user_prompt) if style else user_prompt
        fragments = prompt_fragments(
            lighting=lighting, colors=parse_colors(list(user_colors)) if user_colors else None,
            texture=request.texture,
        )
        prompt = ", ".join(part for part in (prompt, *fragments) if part)
        negatives = [*negatives, style.negative_prompt if style else ""]

    image_input = request.input_type != "text"
    width, height = _size(request, init_image, defaults)
    upscale = request.input_type == "upscale"
    seed = request.seed if request.seed is not None else secrets.randbelow(MAX_SEED + 1)
    mask, expand = None, None
    editing = init_image is not None and (request.mask is not None or request.expand is not None)
    if editing:  # inpainting or outpainting (fractal.masks): an outpaint's size is its canvas'
        assert init_image is not None
        init_image, mask, expand = edit_inputs(request, init_image, (width, height), seed)
        width, height = init_image.size
    elif init_image is not None and init_image.size != (width, height) and not upscale:
        init_image = init_image.resize((width, height), Image.Resampling.LANCZOS)

    steps = request.steps or (style.steps if style and style.steps else defaults.steps)
    default_strength = UPSCALE_STRENGTH if upscale else \
        edit_strength(request) if editing else DEFAULT_STRENGTH
    plan = RenderPlan(
        input_type=request.input_type,
        user_prompt=request.prompt,
        prompt=prompt,
        negative_prompt=", ".join(part for part in negatives if part),
        width=width,
        height=height,
        steps=steps,
        guidance=_first(request.guidance, style.guidance if style else None, defaults.guidance),
        seeds=tuple((seed + k) % (MAX_SEED + 1) for k in range(request.n)),
        scheduler=check_scheduler(request.scheduler),
        strength=_first(request.strength, None if upscale or not style else style.strength,
                        default_strength) if image_input else None,
        init_image=init_image,
        lighting=lighting,
        palette=palette,
        colors=colors,
        texture=request.texture,
        style=style,
        hires=hires_pass(request, width, height, steps, defaults, hires_factor),
        scale=(request.scale or 2) if upscale else None,
        source_record=source_record if upscale else None,
        style_reference=style_reference,
        controls=tuple(controls),
        mask=mask,
        mask_blur=request.mask_blur if request.mask_blur is not None else DEFAULT_MASK_BLUR,
        inpaint_area=request.inpaint_area or "whole",
        padding=request.padding if request.padding is not None else DEFAULT_PADDING,
        expand=expand,
        loras=loras,
    )
    # Style files are user data too: their defaults go through the same checks.
    check_request(
        replace(request, steps=plan.steps, guidance=plan.guidance, strength=plan.strength,
                width=None if upscale else plan.width, height=None if upscale else plan.height),
        has_image=init_image is not None,
    )
    return plan


def _first(*values: float | None) -> float:
    return next(value for value in values if value is not None)
