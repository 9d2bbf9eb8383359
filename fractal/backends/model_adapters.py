"""A loaded diffusion model's adapters, as ``DiffusionBackend`` uses them: its family's
IP-Adapter (fractal.backends.ip_adapter) and ControlNets (fractal.backends.controlnet),
loaded once with the model; what they let through ``check``; what each call adds.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from fractal.adapters import FamilyAdapters
from fractal.backends.controlnet import ControlNets, TiledControl
from fractal.backends.ip_adapter import StyleAdapter
from fractal.errors import InvalidRequestError
from fractal.plan import RenderPlan

__all__ = ["UNSUPPORTED_FAMILIES", "ModelAdapters"]

logger = logging.getLogger(__name__)

# diffusers' SD3 and FLUX adapters are other classes (SD3ControlNetModel, FluxControlNetModel,
# FLUX's IP-Adapter on its transformer) taking other arguments: not run here.
UNSUPPORTED_FAMILIES = ("sd3", "flux")


class ModelAdapters:
    """``config``'s adapters, loaded into ``pipeline`` (the model's text-to-image pipeline)."""

    def __init__(self, pipeline: Any, family: str | None, config: FamilyAdapters, name: str,
                 device: torch.device, dtype: torch.dtype) -> None:
        self.family, self.config, self.name = family, config, name
        self.style: StyleAdapter | None = None
        self.controlnets: ControlNets | None = None
        self.unsupported = family in UNSUPPORTED_FAMILIES and bool(
            config.ip_adapter or config.controlnets)
        if self.unsupported:
            logger.warning("adapters are configured for family %s, which this service runs "
                           "without them; %s takes no style reference or controls", family,
                           name)
            return
        if config.ip_adapter is not None:
            self.style = StyleAdapter(pipeline, config.ip_adapter, family or "unknown")
        if config.controlnets:
            self.controlnets = ControlNets(config.controlnets, family or "unknown", device,
                                           dtype)

    def capabilities(self) -> dict[str, Any]:
        if self.unsupported:
            return {"style_reference": False, "controls": []}
        return self.config.describe()

    def check(self, plan: RenderPlan, text_pipeline: Any) -> None:
        """Refuse a style reference or a control this model cannot take, naming the field."""
        family = self.family or "unknown"
        if self.unsupported and (plan.style_reference is not None or plan.controls):
            field = "style_image" if plan.style_reference is not None else "control"
            raise InvalidRequestError(
                field, "<image>" if field == "style_image" else "<controls>",
                f"is not supported for {family} models (model {self.name!r}): this service "
                "runs IP-Adapters and ControlNets on SD 1.x/2.x and SDXL only")
        if plan.style_reference is not None and self.style is None:
            raise InvalidRequestError(
                "style_image", "<image>", f"needs an IP-Adapter, and none is configured for "
                f"model {self.name!r} (family {family})")
        for index, unit in enumerate(plan.controls):
            if self.controlnets is None or unit.type not in self.controlnets.models:
                configured = sorted(self.config.controlnets)
                raise InvalidRequestError(
                    f"control[{index}].type", unit.type,
                    f"has no ControlNet configured for model {self.name!r} (family {family}); "
                    f"configured: {', '.join(configured) or 'none'}", choices=configured)
        if plan.controls and self.controlnets is not None:
            kinds = [unit.type for unit in plan.controls]
            # The passes' kinds: text-to-image, image-to-image (an input, or hires' refine).
            needed = {plan.init_image is not None,
                      plan.init_image is None and plan.hires is not None}
            for image_to_image in sorted(needed):
                try:
                    self.controlnets.pipeline(text_pipeline, kinds, image_to_image)
                except ValueError as exc:
                    raise InvalidRequestError(
                        "control", "<controls>", f"is not supported by model {self.name!r}"
                        f"{' in image-to-image' if image_to_image else ''}: {exc}") from None

    def prepare(self, pipeline: Any, plan: RenderPlan) -> None:
        """Before a call: the IP-Adapter's scales on the shared UNet (0 without a reference)."""
        if self.style is not None:
            self.style.prepare(pipeline, plan.style_reference)

    def image_embeds(self, pipeline: Any, plan: RenderPlan, count: int
                     ) -> list[torch.Tensor] | None:
        """The IP-Adapter's embeddings for a call of ``count`` images (neutral ones without
        a reference: a UNet with an IP-Adapter needs some); None without an IP-Adapter."""
        if self.style is None:
            return None
        # diffusers' pipelines guide, and so take the embeddings in two halves, exactly when:
        guided = plan.guidance > 1 and pipeline.unet.config.time_cond_proj_dim is None
        return self.style.embeds(pipeline, plan.style_reference, count, guided)

    def pipeline_for(self, text_pipeline: Any, pipeline: Any, plan: RenderPlan,
                     width: int, height: int, image_to_image: bool,
                     image_embeds: list[torch.Tensor] | None) -> tuple[Any, dict[str, Any]]:
        """The pipeline a pass at ``width``×``height`` runs through (the ControlNet one when
        the plan has controls, with this render's sampler) and the arguments it adds."""
        extra: dict[str, Any] = {}
        if image_embeds is not None:
            extra["ip_adapter_image_embeds"] = image_embeds
        if plan.controls and self.controlnets is not None:
            pipeline = self.controlnets.pipeline(
                text_pipeline, [unit.type for unit in plan.controls], image_to_image)
            pipeline.scheduler = text_pipeline.scheduler
            extra.update(self.controlnets.arguments(plan.controls, width, height,
                                                    image_to_image))
        return pipeline, extra

    def tiled_control(self, pipeline: Any, plan: RenderPlan, width: int, height: int
                      ) -> TiledControl | None:
        """The plan's controls for a pass at ``width``×``height`` that denoises in tiles."""
        if not plan.controls or self.controlnets is None:
            return None
        nets = [self.controlnets.models[unit.type] for unit in plan.controls]
        return TiledControl(nets, plan.controls, width, height,
                            int(pipeline.vae_scale_factor), pipeline.unet.device,
                            pipeline.unet.dtype)
