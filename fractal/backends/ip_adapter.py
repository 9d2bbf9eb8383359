"""A style reference on a diffusers UNet pipeline: an IP-Adapter, loaded once with the model.

The IP-Adapter's weights go into the UNet through diffusers' public ``load_ip_adapter``; its
CLIP image encoder is loaded here (safetensors only, the pipeline's dtype and device) and
given to the pipeline with ``register_modules``, so every pipeline built from it with
``from_pipe`` (image-to-image, ControlNet) shares both.

Once loaded, the UNet's cross-attention layers expect image embeddings on every call. A
render without a reference passes neutral embeddings at scale 0, which diffusers' IP-Adapter
attention skips outright: the render equals one of the same model without the adapter.

A reference's embeddings (the image's and the unconditional ones classifier-free guidance
needs) are computed once per image, through the pipeline's public
``prepare_ip_adapter_image_embeds``, and kept in a small LRU keyed by the image's pixel hash.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from fractal.adapters import IPAdapterSource
from fractal.errors import ModelLoadError
from fractal.naming import looks_like_path
from fractal.references import StyleReference

__all__ = ["EMBEDDING_CACHE", "SDXL_COMPOSITION", "SDXL_STYLE", "StyleAdapter", "block_scales"]

logger = logging.getLogger(__name__)

EMBEDDING_CACHE = 32  # references kept; one entry is a few KiB (plain) to ~1 MiB (Plus)

# InstantStyle's published SDXL maps (and diffusers' docs): the style lives in the second
# attention of up_blocks.0, the layout in the second of down_blocks.2; 1.0 stands for s.
SDXL_STYLE = {"up": {"block_0": [0.0, 1.0, 0.0]}}
SDXL_COMPOSITION = {"down": {"block_2": [0.0, 1.0]}}


def _source(where: str) -> str:
    return str(Path(where).expanduser()) if looks_like_path(where) else where


def _scaled(layout: dict[str, dict[str, list[float]]], strength: float) -> dict:
    return {side: {block: [value * strength for value in values]
                   for block, values in blocks.items()} for side, blocks in layout.items()}


def block_scales(mode: str, strength: float, family: str | None, unet_config: Any
                 ) -> float | dict[str, Any]:
    """``set_ip_adapter_scale``'s argument for a style reference.

    "both": ``strength`` on every IP-Adapter layer. "style" / "composition" (InstantStyle):
    ``strength`` only where the UNet takes the reference's style / its layout, 0 elsewhere
    (diffusers skips those layers).

    SDXL: InstantStyle's published maps, when the UNet has SDXL's layout (three attentions
    in each up block, two in each down block). SD 1.x/2.x, and UNets of other layouts (the
    tests' tiny ones), derive the same places from the config: style is the first up block
    that has attention (SDXL's up_blocks.0; SD 1.5's up_blocks.1, which InstantStyle's own
    SD 1.5 example targets whole), composition the deepest down block that has attention
    (SDXL's down_blocks.2; SD 1.5's down_blocks.2). SDXL's maps pick one attention inside
    those blocks, the middle of the up block's and the last of the down block's; on SDXL
    layouts that are not the published one the same rule applies, and on SD 1.x/2.x the
    whole block is scaled, as InstantStyle does there.
    """
    if mode == "both":
        return strength
    down = [index for index, kind in enumerate(unet_config.down_block_types) if "CrossAttn" in kind]
    up = [index for index, kind in enumerate(unet_config.up_block_types) if "CrossAttn" in kind]
    if not down or not up:  # no attention blocks to choose from: the whole adapter
        return strength
    layers = unet_config.layers_per_block
    if family == "sdxl":
        if layers == 2 and down[-1] == 2 and up[0] == 0:
            return _scaled(SDXL_STYLE if mode == "style" else SDXL_COMPOSITION, strength)
        if isinstance(layers, int):
            if mode == "style":
                values = [0.0] * (layers + 1)
                values[(layers + 1) // 2] = strength
                return {"up": {f"block_{up[0]}": values}}
            values = [0.0] * layers
            values[-1] = strength
            return {"down": {f"block_{down[-1]}": values}}
    if mode == "style":
        return {"up": {f"block_{up[0]}": strength}}
    return {"down": {f"block_{down[-1]}": strength}}


class StyleAdapter:
    """An IP-Adapter in ``pipeline``'s UNet, its encoder, and the references' embeddings."""

    def __init__(self, pipeline: Any, source: IPAdapterSource, family: str) -> None:
        self.family = family
        self.source = source
        self._cache: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        what = (f"the IP-Adapter {source.weight_name!r} from {source.model!r} for family "
                f"{family}")
        if not source.weight_name.endswith(".safetensors"):
            raise ModelLoadError(f"could not load {what}: only .safetensors weights are "
                                 "loaded (a pickled checkpoint can run code when loaded)")
        encoder_root = source.image_encoder or source.model
        subfolder = source.image_encoder_subfolder
        if subfolder is None and source.image_encoder is None:  # diffusers' default place
            subfolder = f"{source.subfolder}/image_encoder" if source.subfolder \
                else "image_encoder"
        try:
            self._load_encoder(pipeline, _source(encoder_root), subfolder or "")
        except Exception as exc:  # any failure to load is the operator's: name the adapter
            raise ModelLoadError(
                f"could not load the image encoder of {what} from {encoder_root!r}"
                f"{f' (subfolder {subfolder!r})' if subfolder else ''}: {exc}") from exc
        try:
            pipeline.load_ip_adapter(_source(source.model), subfolder=source.subfolder or "",
                                     weight_name=source.weight_name, image_encoder_folder=None)
            # Neutral embeddings: the unconditional ones of a blank image. At scale 0 their
            # values are never read; their shape is the adapter's.
            blank = Image.new("RGB", (8, 8))
            negative, _ = self._encode(pipeline, blank)
            self._neutral = torch.zeros_like(negative)
        except Exception as exc:
            raise ModelLoadError(f"could not load {what}: {exc}") from exc
        logger.info("loaded %s", what)

    @staticmethod
    def _load_encoder(pipeline: Any, root: str, subfolder: str) -> None:
        from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

        encoder = CLIPVisionModelWithProjection.from_pretrained(
            root, subfolder=subfolder, dtype=pipeline.dtype, use_safetensors=True,
        ).to(pipeline.device)
        encoder.eval()
        modules: dict[str, Any] = {"image_encoder": encoder}
        try:
            modules["feature_extractor"] = CLIPImageProcessor.from_pretrained(
                root, subfolder=subfolder)
        except (OSError, ValueError):
            # No processor beside the encoder: diffusers' default, sized to the encoder,
            # unless the pipeline has one (SD's safety checker's, a CLIP processor too).
            if getattr(pipeline, "feature_extractor", None) is None:
                size = encoder.config.image_size
                modules["feature_extractor"] = CLIPImageProcessor(size=size, crop_size=size)
        pipeline.register_modules(**modules)

    @staticmethod
    def _encode(pipeline: Any, image: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        """(unconditional, image) embeddings of one image, each with a batch of 1."""
        with torch.inference_mode():
            embeds = pipeline.prepare_ip_adapter_image_embeds(
                ip_adapter_image=[image.convert("RGB")], ip_adapter_image_embeds=None,
                device=pipeline.device, num_images_per_prompt=1,
                do_classifier_free_guidance=True)[0]
        negative, positive = embeds.chunk(2)
        return negative, positive

    def scales(self, reference: StyleReference | None, unet_config: Any) -> float | dict:
        if reference is None:
            return 0.0
        return block_scales(reference.mode, reference.strength, self.family, unet_config)

    def prepare(self, pipeline: Any, reference: StyleReference | None) -> None:
        """Set the UNet's IP-Adapter scales for a render with ``reference`` (None: off)."""
        pipeline.set_ip_adapter_scale(self.scales(reference, pipeline.unet.config))

    def embeds(self, pipeline: Any, reference: StyleReference | None, count: int,
               guided: bool) -> list[torch.Tensor]:
        """``ip_adapter_image_embeds`` for a call of ``count`` images (all with the same
        reference), unconditional ones first when ``guided``, as diffusers' pipelines and
        the UNet's ``added_cond_kwargs["image_embeds"]`` take them."""
        if reference is None:
            negative = positive = self._neutral
        else:
            negative, positive = self._embeds_of(pipeline, reference)
        parts = ([negative] * count if guided else []) + [positive] * count
        return [torch.cat(parts).to(device=pipeline.device, dtype=pipeline.unet.dtype)]

    def _embeds_of(self, pipeline: Any, reference: StyleReference
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        cached = self._cache.get(reference.sha256)
        if cached is not None:
            self._cache.move_to_end(reference.sha256)
            return cached
        logger.info("encoding style reference %s", reference.sha256[:12])
        cached = self._encode(pipeline, reference.image)
        self._cache[reference.sha256] = cached
        while len(self._cache) > EMBEDDING_CACHE:
            self._cache.popitem(last=False)
        return cached
