"""Structural control on a diffusers UNet pipeline: one ControlNet per configured control type,
loaded once with the model, and ControlNet pipelines built over the model's own modules.

A render with controls goes through ``AutoPipelineFor{Text2Image,Image2Image}.from_pipe(
text_pipeline, controlnet=...)`` (diffusers' ControlNet pipelines: SD 1.x/2.x and SDXL), one
ControlNet or a ``MultiControlNetModel`` of several; those pipelines share every weight with
the loaded model and are cached per tuple of control types and input kind. A pass that
denoises in tiles runs the same ControlNets per tile (:class:`TiledControl`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from fractal.errors import ModelLoadError
from fractal.naming import looks_like_path
from fractal.preprocess import prepare_control
from fractal.references import ControlUnit

__all__ = ["ControlNets", "TiledControl"]

logger = logging.getLogger(__name__)


def _load(kind: str, where: str, family: str, device: torch.device, dtype: torch.dtype) -> Any:
    from diffusers import ControlNetModel

    if looks_like_path(where) and not Path(where).expanduser().is_dir():
        raise ModelLoadError(f"could not load the ControlNet for {kind!r} from {where!r} "
                             f"(family {family}): the folder does not exist")
    source = str(Path(where).expanduser()) if looks_like_path(where) else where
    try:
        model = ControlNetModel.from_pretrained(source, torch_dtype=dtype,
                                                use_safetensors=True)
    except Exception as exc:  # any failure to load is the operator's: name the adapter
        raise ModelLoadError(f"could not load the ControlNet for {kind!r} from {where!r} "
                             f"(family {family}): {exc}") from exc
    logger.info("loaded the ControlNet for %r from %r", kind, where)
    return model.to(device)


class ControlNets:
    """The ControlNets of one model, by control type, and the pipelines that run them."""

    def __init__(self, sources: Mapping[str, str], family: str, device: torch.device,
                 dtype: torch.dtype) -> None:
        self.models = {kind: _load(kind, where, family, device, dtype)
                       for kind, where in sources.items()}
        self._pipelines: dict[tuple[tuple[str, ...], bool], Any] = {}

    def pipeline(self, text_pipeline: Any, types: Sequence[str], image_to_image: bool) -> Any:
        """The ControlNet pipeline over ``text_pipeline``'s modules for these control types
        (in the units' order), text- or image-to-image; built once per key."""
        key = (tuple(types), image_to_image)
        if key not in self._pipelines:
            from diffusers import (
                AutoPipelineForImage2Image,
                AutoPipelineForText2Image,
                MultiControlNetModel,
            )

            nets = [self.models[kind] for kind in key[0]]
            controlnet = nets[0] if len(nets) == 1 else MultiControlNetModel(nets)
            auto = AutoPipelineForImage2Image if image_to_image else AutoPipelineForText2Image
            pipeline = auto.from_pipe(text_pipeline, controlnet=controlnet)
            pipeline.set_progress_bar_config(disable=True)
            self._pipelines[key] = pipeline
        return self._pipelines[key]

    @staticmethod
    def arguments(units: Sequence[ControlUnit], width: int, height: int,
                  image_to_image: bool) -> dict[str, Any]:
        """The ControlNet pipeline's arguments for ``units`` at ``width``×``height``: one
        control image per unit (the same for every image of the call), its scale and the
        fraction of the steps it acts in; lists for several units."""
        images = [prepare_control(unit, width, height) for unit in units]
        several = len(units) > 1
        arguments = {
            "controlnet_conditioning_scale": [unit.scale for unit in units] if several
            else units[0].scale,
            "control_guidance_start": [unit.start for unit in units] if several
            else units[0].start,
            "control_guidance_end": [unit.end for unit in units] if several else units[0].end,
        }
        # Text-to-image ControlNet pipelines take the control as `image`; image-to-image ones
        # take the source as `image` and the control as `control_image`.
        arguments["control_image" if image_to_image else "image"] = images if several \
            else images[0]
        return arguments


class TiledControl:
    """The controls of a pass that denoises in tiles (fractal.backends.refine): each tile's
    ControlNet residuals, from the tile's window of each full-size control image, summed
    over units as diffusers' MultiControlNetModel sums them, and the same step window
    (``start``/``end``) as its pipelines keep."""

    def __init__(self, nets: Sequence[Any], units: Sequence[ControlUnit], width: int,
                 height: int, scale_factor: int, device: torch.device,
                 dtype: torch.dtype) -> None:
        from diffusers.image_processor import VaeImageProcessor

        # As the ControlNet pipelines prepare control images: RGB in 0..1, not normalised.
        processor = VaeImageProcessor(vae_scale_factor=scale_factor, do_convert_rgb=True,
                                      do_normalize=False)
        self.nets, self.units, self.scale_factor = list(nets), list(units), scale_factor
        self.images = [processor.preprocess(prepare_control(unit, width, height),
                                            height=height, width=width).to(device, dtype)
                       for unit in units]

    def residuals(self, window: torch.Tensor, timestep: torch.Tensor,
                  embeds: torch.Tensor, conditions: dict[str, Any] | None, tile: Any,
                  index: int, steps: int) -> tuple[list[torch.Tensor] | None,
                                                   torch.Tensor | None]:
        """(down-block residuals, mid-block residual) for ``tile`` at step ``index`` of
        ``steps``; (None, None) when no unit acts then."""
        down: list[torch.Tensor] | None = None
        mid: torch.Tensor | None = None
        scale = self.scale_factor
        rows = slice(tile.top * scale, (tile.top + tile.height) * scale)
        cols = slice(tile.left * scale, (tile.left + tile.width) * scale)
        # The ControlNet takes the text and SDXL's size conditioning, not IP-Adapter images.
        extra = {key: value for key, value in (conditions or {}).items()
                 if key != "image_embeds"} or None
        for net, unit, image in zip(self.nets, self.units, self.images, strict=True):
            keep = not (index / steps < unit.start or (index + 1) / steps > unit.end)
            if not keep or unit.scale == 0:
                continue  # zero residuals: the same as adding them
            cond = image[..., rows, cols].repeat(len(window), 1, 1, 1)
            blocks, middle = net(window, timestep, encoder_hidden_states=embeds,
                                 controlnet_cond=cond, conditioning_scale=unit.scale,
                                 added_cond_kwargs=extra, return_dict=False)
            down = list(blocks) if down is None else [a + b for a, b in zip(down, blocks,
                                                                             strict=True)]
            mid = middle if mid is None else mid + middle
        return down, mid
