"""The interface every backend offers to :class:`~fractal.Spec2Fractal`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from PIL import Image

from fractal.plan import ModelDefaults, RenderPlan

__all__ = ["PREVIEW_SIDE", "Backend", "StepCallback"]

# step, total, preview (a small picture of the work so far, or None)
StepCallback = Callable[[int, int, "Image.Image | None"], None]
PREVIEW_SIDE = 256


class Backend(Protocol):
    name: str
    defaults: ModelDefaults

    def check(self, plan: RenderPlan) -> None:
        """Raise InvalidRequestError for what this model cannot do (before any work)."""

    def capabilities(self) -> dict[str, Any]:
        """``{"style_reference": bool, "controls": [control types], "loras": bool}``: what
        ``check`` lets through beyond a prompt (fractal.references, fractal.loras)."""

    def loras(self, plan: RenderPlan) -> list[dict[str, Any]] | None:
        """The record's ``loras`` for this plan: each of ``plan.loras`` with ``name``,
        ``weight``, ``hash`` (None if not applied), ``applied`` and, when not, ``note``; None
        when the plan has none. ``check`` has refused the ones this model cannot take."""

    def sampler_label(self, plan: RenderPlan) -> str:
        """The sampler's name as the ``parameters`` record gives it."""

    def passes(self, plan: RenderPlan) -> list[dict[str, Any]] | None:
        """How ``render`` runs this plan when it takes more than one plain pass (two-pass
        high resolution, an upscale, tiled denoising or VAE), for the record; else None."""

    def render(self, plan: RenderPlan, on_step: StepCallback) -> list[Image.Image]:
        """Render ``plan.n`` images, calling ``on_step`` between steps (it may raise)."""

    def render_many(self, plans: list[RenderPlan], on_step: StepCallback
                    ) -> list[list[Image.Image]]:
        """Render compatible plans (see fractal.corender) as one batch where it pays."""
