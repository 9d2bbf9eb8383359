"""The built-in fractal engine as a backend: offline, no weights, any size."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np
from PIL import Image

from fractal.backends.base import PREVIEW_SIDE, StepCallback
from fractal.errors import InvalidRequestError
from fractal.plan import ModelDefaults, RenderPlan

__all__ = ["ENGINE_NAME", "EngineBackend"]

ENGINE_NAME = "fractal"
STEPS_PER_IMAGE = 10  # the progress bar's resolution for one engine render
# Hybrid input: how much of the prompt's scene shows through the repainted image.
HYBRID_SCENE_SHARE = 0.35


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


class EngineBackend:
    name = ENGINE_NAME
    defaults = ModelDefaults(width=1024, height=768, steps=STEPS_PER_IMAGE, guidance=0.0,
                             controls_in_prompt=False)

    def check(self, plan: RenderPlan) -> None:
        if plan.style is not None and plan.style.effect not in (None, *_engine().EFFECTS):
            raise InvalidRequestError("style", plan.style.name,
                                      f"names an unknown engine effect {plan.style.effect!r}",
                                      choices=_engine().EFFECTS)

    def sampler_label(self, plan: RenderPlan) -> str:
        return "Fractal"

    def passes(self, plan: RenderPlan) -> list[dict[str, Any]] | None:
        return None

    def render(self, plan: RenderPlan, on_step: StepCallback) -> list[Image.Image]:
        engine = _engine()
        total = plan.n * STEPS_PER_IMAGE
        effect = plan.style.effect if plan.style else None
        source = np.asarray(plan.init_image) if plan.init_image is not None else None
        images = []
        for index, seed in enumerate(plan.seeds):
            offset = index * STEPS_PER_IMAGE

            def progress(step: int, stage_total: int, canvas: np.ndarray | None,
                         offset: int = offset) -> None:
                done = offset + round(step * STEPS_PER_IMAGE / max(stage_total, 1))
                on_step(min(done, total), total, _preview(canvas))

            if source is None:
                pixels = engine.render(
                    plan.prompt, width=plan.width, height=plan.height, seed=seed,
                    lighting=plan.lighting, palette=plan.palette, texture=plan.texture,
                    effect=effect, progress=progress,
                )
            else:
                pixels = engine.stylise(
                    self._hybrid_source(plan, source, seed), seed=seed, effect=effect,
                    strength=plan.strength if plan.strength is not None else 0.6,
                    palette=plan.palette, texture=plan.texture, progress=progress,
                )
            images.append(Image.fromarray(pixels))
        return images

    def render_many(self, plans: list[RenderPlan], on_step: StepCallback
                    ) -> list[list[Image.Image]]:
        # numpy already uses the CPU fully for one picture: a batch would gain nothing.
        return [self.render(plan, on_step) for plan in plans]

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
