"""The built-in fractal engine as a backend: offline, no weights, any size."""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
from PIL import Image

from fractal.backends.base import PREVIEW_SIDE, StepCallback
from fractal.controls import normalise_lighting, parse_colors
from fractal.errors import InvalidRequestError
from fractal.plan import ModelDefaults, RenderPlan
from fractal.preprocess import prepare_control
from fractal.request import GenerationRequest
from fractal.styles import Style, StyleLibrary
from fractal.validation import check_request

__all__ = ["ENGINE_NAME", "EngineBackend"]

ENGINE_NAME = "fractal"
STEPS_PER_IMAGE = 10  # the progress bar's resolution for one engine render
# Hybrid input: how much of the prompt's scene shows through the repainted image.
HYBRID_SCENE_SHARE = 0.35
RERENDER, RESAMPLE = "engine re-render", "Lanczos + detail"  # how an upscale is done
# The engine draws its scene on a control image's structure for these types; the others
# need a trained model to read them (a pose skeleton, a depth map).
ENGINE_CONTROLS = ("canny", "image")


def _engine() -> ModuleType:
    # Imported on first use: a process serving a diffusers model never pays for scipy.
    from fractal import engine

    return engine


def _preview(canvas: np.ndarray | None) -> Image.Image | None:
    if canvas is None:
        return None
    preview = Image.fromarray(canvas)
    preview.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
    return preview


def _guides(plan: RenderPlan, width: int, height: int) -> list[Any]:
    """The plan's control units as the engine's structural guides (scale 0: none at all).

    canny → its edge map (fitted and preprocessed as every backend does) becomes ridgelines;
    image → its luminance is the layout. start/end pick the band of detail octaves shaped."""
    guides = []
    for unit in plan.controls:
        if unit.scale <= 0:
            continue
        image = np.asarray(prepare_control(unit, width, height).convert("RGB"))
        guides.append(_engine().Guide("edges" if unit.type == "canny" else "layout", image,
                                      scale=unit.scale, start=unit.start, end=unit.end))
    return guides


def _style_source(plan: RenderPlan) -> Any:
    """The plan's style reference for the engine, or None (none, or strength 0)."""
    reference = plan.style_reference
    if reference is None or reference.strength <= 0:
        return None
    return _engine().StyleSource(np.asarray(reference.image.convert("RGB")),
                                 strength=reference.strength, mode=reference.mode)


@dataclass(frozen=True)
class _Scene:
    """What a text render of the engine drew, read back from its record."""

    prompt: str
    seed: int
    lighting: str | None
    palette: tuple[tuple[int, int, int], ...] | None
    texture: float | None
    effect: str | None


class EngineBackend:
    """``styles``: the library that resolves the style an upscaled image's record names."""

    name = ENGINE_NAME
    defaults = ModelDefaults(width=1024, height=768, steps=STEPS_PER_IMAGE, guidance=0.0,
                             controls_in_prompt=False, two_pass=False)

    def __init__(self, styles: StyleLibrary | None = None) -> None:
        self.styles = styles if styles is not None else StyleLibrary()

    def capabilities(self) -> dict[str, Any]:
        return {"style_reference": True, "controls": list(ENGINE_CONTROLS), "loras": False}

    def check(self, plan: RenderPlan) -> None:
        # A style's LoRAs are skipped here (its prompt and painterly parts apply: see
        # loras()); LoRAs asked for by name are refused, as a model that cannot take them.
        for lora in plan.loras:
            if lora.origin != "style":
                raise InvalidRequestError(lora.field, lora.name, "is a LoRA, and the built-in "
                                          "engine takes none: choose a diffusion model")
        for index, unit in enumerate(plan.controls):
            if unit.type not in ENGINE_CONTROLS:
                raise InvalidRequestError(
                    f"control[{index}].type", unit.type,
                    "is not a control the built-in engine takes (it draws its scene on "
                    "canny edges or an image's structure)", choices=ENGINE_CONTROLS)
        if plan.style is not None and plan.style.effect not in (None, *_engine().EFFECTS):
            raise InvalidRequestError("style", plan.style.name,
                                      f"names an unknown engine effect {plan.style.effect!r}",
                                      choices=_engine().EFFECTS)

    def sampler_label(self, plan: RenderPlan) -> str:
        return "Fractal"

    def loras(self, plan: RenderPlan) -> list[dict[str, Any]] | None:
        return [{"name": lora.name, "weight": lora.weight, "hash": None, "applied": False,
                 "note": "skipped: the built-in engine takes no LoRA"}
                for lora in plan.loras] or None

    def passes(self, plan: RenderPlan) -> list[dict[str, Any]] | None:
        if plan.input_type != "upscale":
            return None  # any size renders natively, in one pass
        rerender = self._scene(plan) is not None
        return [{"kind": "upscale", "width": plan.width, "height": plan.height,
                 "steps": STEPS_PER_IMAGE, "strength": None if rerender else plan.strength,
                 "upscaler": RERENDER if rerender else RESAMPLE, "tiles": 1, "tile": None,
                 "vae_tile": None}]

    def render(self, plan: RenderPlan, on_step: StepCallback) -> list[Image.Image]:
        engine = _engine()
        total = plan.n * STEPS_PER_IMAGE
        effect = plan.style.effect if plan.style else None
        source = np.asarray(plan.init_image) if plan.init_image is not None else None
        if source is not None:
            height, width = source.shape[:2]
        else:
            width, height = plan.width, plan.height
        guides, style = _guides(plan, width, height), _style_source(plan)
        images = []
        for index, seed in enumerate(plan.seeds):
            offset = index * STEPS_PER_IMAGE

            def progress(step: int, stage_total: int, canvas: np.ndarray | None,
                         offset: int = offset) -> None:
                done = offset + round(step * STEPS_PER_IMAGE / max(stage_total, 1))
                on_step(min(done, total), total, _preview(canvas))

            scene = self._scene(plan) if plan.input_type == "upscale" else None
            if scene is not None:  # the same scene, drawn again at the new size
                pixels = engine.render(
                    scene.prompt, width=plan.width, height=plan.height, seed=scene.seed,
                    lighting=scene.lighting, palette=scene.palette, texture=scene.texture,
                    effect=scene.effect, progress=progress,
                )
            elif source is not None and plan.input_type == "upscale":
                pixels = engine.upscale(
                    source, width=plan.width, height=plan.height,
                    strength=plan.strength if plan.strength is not None else 0.3,
                    progress=progress,
                )
            elif source is not None and plan.mask is not None:  # inpainting, outpainting
                pixels = engine.inpaint(
                    source, np.asarray(plan.mask.convert("L")), seed=seed,
                    prompt=plan.prompt if plan.input_type == "hybrid" else None,
                    strength=plan.strength if plan.strength is not None else 1.0,
                    lighting=plan.lighting, palette=plan.palette, texture=plan.texture,
                    effect=effect, progress=progress,
                )
            elif source is None:
                pixels = engine.render(
                    plan.prompt, width=plan.width, height=plan.height, seed=seed,
                    lighting=plan.lighting, palette=plan.palette, texture=plan.texture,
                    effect=effect, guides=guides, style=style, progress=progress,
                )
            else:
                pixels = engine.stylise(
                    self._hybrid_source(plan, source, seed), seed=seed, effect=effect,
                    strength=plan.strength if plan.strength is not None else 0.6,
                    palette=plan.palette, texture=plan.texture, guides=guides, style=style,
                    progress=progress,
                )
            images.append(Image.fromarray(pixels))
        return images

    def render_many(self, plans: list[RenderPlan], on_step: StepCallback
                    ) -> list[list[Image.Image]]:
        # numpy already uses the CPU fully for one picture: a batch would gain nothing.
        return [self.render(plan, on_step) for plan in plans]

    def _scene(self, plan: RenderPlan) -> _Scene | None:
        """The scene of an upscale's source when this engine drew it from a prompt and the
        result is exactly ``scale`` times its size; else None (the source is resampled).

        The record came with the image, so it is checked as the request it stands for would
        be: a forged one can ask for nothing a text request could not."""
        record = plan.source_record
        if not record or plan.scale is None or record.get("model") != ENGINE_NAME \
                or record.get("input_type") != "text" \
                or record.get("style_reference") or record.get("controls") \
                or (plan.width, plan.height) != (record.get("width", 0) * plan.scale,
                                                 record.get("height", 0) * plan.scale):
            return None
        try:
            check_request(GenerationRequest(
                input_type="text", prompt=record.get("prompt"), seed=record.get("seed"),
                lighting=record.get("lighting"), colors=record.get("colors"),
                texture=record.get("texture")))
            style: Style | None = None
            if record.get("style") is not None:
                style = self.styles.get(record["style"])
            palette = parse_colors(list(record["colors"])) if record.get("colors") else None
            lighting = normalise_lighting(record.get("lighting"))  # "Golden_Hour" as well
        except (InvalidRequestError, TypeError, ValueError):
            return None
        effect = style.effect if style else None
        if effect is not None and effect not in _engine().EFFECTS:
            return None
        return _Scene(prompt=record["prompt"], seed=record["seed"], lighting=lighting,
                      palette=tuple(palette) if palette else None,
                      texture=record.get("texture"), effect=effect)

    @staticmethod
    def _hybrid_source(plan: RenderPlan, source: np.ndarray, seed: int) -> np.ndarray:
        """For text + image, the prompt's scene is glazed over the input before repainting."""
        if plan.input_type != "hybrid" or not plan.prompt:
            return source
        scene = _engine().render(
            plan.prompt, width=plan.width, height=plan.height, seed=seed,
            lighting=plan.lighting, palette=plan.palette, texture=plan.texture,
        )
        mixed = source * (1 - HYBRID_SCENE_SHARE) + scene * HYBRID_SCENE_SHARE
        return np.clip(mixed + 0.5, 0, 255).astype(np.uint8)
