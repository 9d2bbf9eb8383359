"""Inpainting on a diffusers model: a plan with a mask renders through
``AutoPipelineForInpainting.from_pipe`` over the model's own modules (no second load).

Two kinds of model inpaint:
- an ordinary one (a 4-channel UNet or a transformer): diffusers' inpainting pipeline noises
  the input, denoises, and keeps the input's latents outside the mask at every step;
- a dedicated inpainting checkpoint (a UNet taking 2 × latent channels + 1: the noisy latent,
  the mask and the masked image's latent; model_index ``StableDiffusion(XL)InpaintPipeline``).
  ``AutoPipelineForText2Image`` loads it as a text-to-image pipeline whose UNet cannot run
  there, so every pass of such a model goes through the inpainting pipeline: without a mask,
  with the whole picture masked, as AUTOMATIC1111 does (text-to-image on a gray canvas at
  strength 1, image-to-image on the input at the plan's strength).

The library composites the result over the input with the blurred mask (pixels outside it are
exactly the input's); the pipeline is given the same blurred mask, as AUTOMATIC1111 gives it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from PIL import Image

from fractal.errors import InvalidRequestError
from fractal.masks import blur_mask
from fractal.plan import RenderPlan

if TYPE_CHECKING:
    import torch

    from fractal.backends.controlnet import ControlNets

__all__ = ["Inpainting", "is_inpainting_model", "pipeline_mask"]

logger = logging.getLogger(__name__)

# The canvas a dedicated inpainting model's text-to-image pass starts from: mid-gray, which the
# VAE's [-1, 1] normalisation maps to 0, the "nothing here" of its masked-image input.
_BLANK = (127, 127, 127)


def is_inpainting_model(pipeline: Any) -> bool:
    """Whether the pipeline's UNet takes the mask and the masked image besides the latent."""
    unet, vae = getattr(pipeline, "unet", None), getattr(pipeline, "vae", None)
    channels = getattr(getattr(unet, "config", None), "in_channels", None)
    latent = getattr(getattr(vae, "config", None), "latent_channels", None)
    return channels is not None and latent is not None and channels == 2 * latent + 1


def pipeline_mask(mask: Image.Image, blur: int, size: tuple[int, int]) -> Image.Image:
    """The mask a pass at ``size`` is given: the plan's, at that size, blurred by ``blur``."""
    if mask.size != size:
        mask = mask.resize(size, Image.Resampling.BILINEAR)
    return blur_mask(mask, blur)  # the library composites through the same


class Inpainting:
    """The inpainting pipelines of one loaded model, built on first use and kept."""

    def __init__(self, text_pipeline: Any, name: str) -> None:
        self.name = name
        self.dedicated = is_inpainting_model(text_pipeline)
        if self.dedicated:
            logger.info("%s is an inpainting model: every pass runs through its inpainting "
                        "pipeline", name)
        self._pipeline: Any = None
        self._controlled: dict[tuple[str, ...], Any] = {}

    def applies(self, plan: RenderPlan) -> bool:
        """Whether ``plan``'s passes run through the inpainting pipeline."""
        return plan.mask is not None or self.dedicated

    @staticmethod
    def _field(plan: RenderPlan | None) -> tuple[str, Any]:
        if plan is None or plan.mask is not None:
            return "mask", "<mask>"
        return "input_type", plan.input_type

    def pipeline(self, text_pipeline: Any, plan: RenderPlan | None = None) -> Any:
        """The inpainting pipeline over ``text_pipeline``'s modules; a model without one is
        refused naming the field of ``plan`` that asked for it."""
        if self._pipeline is None:
            from diffusers import AutoPipelineForInpainting

            try:
                self._pipeline = AutoPipelineForInpainting.from_pipe(text_pipeline)
            except ValueError as exc:  # no inpainting pipeline for this model's class
                field, value = self._field(plan)
                raise InvalidRequestError(
                    field, value, f"is not supported by model {self.name!r}: it has no "
                    f"inpainting pipeline ({exc})") from None
            self._pipeline.set_progress_bar_config(disable=True)
        return self._pipeline

    def controlled(self, text_pipeline: Any, controlnets: ControlNets,
                   types: Sequence[str]) -> Any:
        """diffusers' ControlNet inpainting pipeline over the model's modules, per types."""
        key = tuple(types)
        if key not in self._controlled:
            from diffusers import AutoPipelineForInpainting, MultiControlNetModel

            nets = [controlnets.models[kind] for kind in key]
            controlnet = nets[0] if len(nets) == 1 else MultiControlNetModel(nets)
            pipeline = AutoPipelineForInpainting.from_pipe(text_pipeline, controlnet=controlnet)
            pipeline.set_progress_bar_config(disable=True)
            self._controlled[key] = pipeline
        return self._controlled[key]

    def check(self, plan: RenderPlan, text_pipeline: Any,
              controlnets: ControlNets | None) -> None:
        """Refuse, naming the field, a plan this model cannot inpaint."""
        if not self.applies(plan):
            return
        self.pipeline(text_pipeline, plan)
        if plan.controls and controlnets is not None:
            try:
                self.controlled(text_pipeline, controlnets,
                                [unit.type for unit in plan.controls])
            except ValueError as exc:
                field, _ = self._field(plan)
                raise InvalidRequestError(
                    "control", "<controls>", f"cannot be combined with {field} on model "
                    f"{self.name!r}: {exc}") from None

    def pipeline_for(self, text_pipeline: Any, controlnets: ControlNets | None,
                     plan: RenderPlan, width: int, height: int,
                     images: list[Image.Image] | None, masks: list[Image.Image | None],
                     image_embeds: list[torch.Tensor] | None) -> tuple[Any, dict[str, Any]]:
        """The inpainting pipeline a pass at ``width``×``height`` runs through (with this
        render's sampler) and the arguments it adds: the masks (the whole picture where a
        plan has none), and for a text pass a blank canvas denoised from pure noise."""
        pipeline = self.pipeline(text_pipeline, plan)
        extra: dict[str, Any] = {}
        if plan.controls and controlnets is not None:
            pipeline = self.controlled(text_pipeline, controlnets,
                                       [unit.type for unit in plan.controls])
            extra.update(controlnets.arguments(plan.controls, width, height, True))
        pipeline.scheduler = text_pipeline.scheduler
        if image_embeds is not None:
            extra["ip_adapter_image_embeds"] = image_embeds
        size = (width, height)
        extra["mask_image"] = [
            Image.new("L", size, 255) if mask is None
            else pipeline_mask(mask, plan.mask_blur, size) for mask in masks]
        if images is None:
            extra.update(image=[Image.new("RGB", size, _BLANK) for _ in masks], strength=1.0)
        return pipeline, extra
