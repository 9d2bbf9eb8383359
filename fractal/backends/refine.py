"""Image-to-image over a UNet pipeline's public parts, tile by tile when the latent is large.

The loop is diffusers' own (encode the prompt, encode the image, noise it to the start
timestep, denoise with classifier-free guidance, decode), as StableDiffusionPanoramaPipeline
writes it for MultiDiffusion; only the noise prediction is computed per tile of a
:class:`~fractal.backends.tiling.TileGrid` and blended, so one UNet call sees one tile, and
the scheduler steps the whole latent once per step (multistep samplers keep one history).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from fractal.backends.deepcache import step_cache
from fractal.backends.tiling import Tile, TileGrid
from fractal.backends.vae_tiles import decode, encode

if TYPE_CHECKING:
    from fractal.backends.controlnet import TiledControl

__all__ = ["can_tile", "iterations", "refine"]

# Called after each tile: the tile-steps done in this pass so far, and the whole latent
# when a step has just finished (None between the tiles of a step).
TileCallback = Callable[[int, "torch.Tensor | None"], None]


def can_tile(pipeline: Any) -> bool:
    """Whether :func:`refine` knows this pipeline's denoiser: an SD 1.x/2.x or SDXL UNet
    (SDXL's size conditioning given per tile); not transformers, refiners, LCM or inpainting."""
    from diffusers import UNet2DConditionModel

    unet = getattr(pipeline, "unet", None)
    vae = getattr(pipeline, "vae", None)
    if not isinstance(unet, UNet2DConditionModel) or vae is None:
        return False
    config = unet.config
    return (config.time_cond_proj_dim is None
            and config.in_channels == vae.config.latent_channels
            and config.addition_embed_type in (None, "text_time")
            and not getattr(pipeline.config, "requires_aesthetics_score", False)
            and hasattr(pipeline, "encode_prompt") and hasattr(pipeline, "image_processor"))


def _prompt_embeds(pipeline: Any, prompts: list[str], negatives: list[str] | None,
                   guided: bool, device: torch.device) -> tuple[torch.Tensor, Any]:
    """(text embeddings, pooled embeddings or None), negatives first when guided."""
    encoded = pipeline.encode_prompt(prompt=prompts, device=device, num_images_per_prompt=1,
                                     do_classifier_free_guidance=guided,
                                     negative_prompt=negatives)
    if len(encoded) == 4:  # SDXL: two encoders, and pooled embeddings for its conditioning
        embeds, negative, pooled, negative_pooled = encoded
        if guided:
            return torch.cat([negative, embeds]), torch.cat([negative_pooled, pooled])
        return embeds, pooled
    embeds, negative = encoded
    return (torch.cat([negative, embeds]) if guided else embeds), None


def iterations(scheduler: Any, total: int, run: int) -> int:
    """Denoiser calls for the last ``run`` of ``total`` steps (second-order samplers call
    twice per step but the first); sets the scheduler's timesteps."""
    scheduler.set_timesteps(total)
    return len(scheduler.timesteps[(total - run) * scheduler.order:])


def refine(pipeline: Any, images: list[Image.Image], *, prompts: list[str],
           negatives: list[str] | None, generators: list[torch.Generator], guidance: float,
           total: int, run: int, grid: TileGrid, vae_tile: int | None,
           on_tile: TileCallback, image_embeds: list[torch.Tensor] | None = None,
           control: TiledControl | None = None) -> list[Image.Image]:
    """Image-to-image of ``images`` (already at the output size): the last ``run`` steps of
    a ``total``-step schedule, the noise prediction blended over ``grid``'s tiles, the VAE
    run in tiles of ``vae_tile`` pixels (None: whole). ``image_embeds``: a UNet with an
    IP-Adapter's image embeddings, as its ``added_cond_kwargs`` take them (the whole call's,
    unconditional first when guided; the same for every tile). ``control``: ControlNets,
    run on each tile's window of their control images."""
    unet, scheduler = pipeline.unet, pipeline.scheduler
    device, dtype = unet.device, unet.dtype
    scale = pipeline.vae_scale_factor
    guided = guidance > 1.0

    # 1. Prompts, once for all tiles.
    embeds, pooled = _prompt_embeds(pipeline, prompts, negatives, guided, device)
    embeds = embeds.to(dtype)

    # 2. Timesteps: the last `run` of `total`, as diffusers' img2img pipelines slice them.
    scheduler.set_timesteps(total, device=device)
    start = (total - run) * scheduler.order
    timesteps = scheduler.timesteps[start:]
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(start)

    # 3. The images' latents, noised to the first timestep, each with its own generator.
    from diffusers.utils.torch_utils import randn_tensor

    latents = encode(pipeline, images, generators, device, vae_tile)
    noise = randn_tensor(latents.shape, generator=generators, device=device,
                         dtype=latents.dtype)
    latents = scheduler.add_noise(latents, noise, timesteps[:1].repeat(len(images)))
    latents = latents.to(dtype)
    del noise  # a large image's latents are tens of MiB: keep few alive
    extra = {"generator": generators} \
        if "generator" in inspect.signature(scheduler.step).parameters else {}

    def denoise(model_input: torch.Tensor, timestep: torch.Tensor, tile: Tile,
                index: int) -> torch.Tensor:
        window = model_input[..., tile.rows, tile.cols]
        window = torch.cat([window, window]) if guided else window
        conditions: dict[str, Any] | None = None
        if image_embeds is not None:
            conditions = {"image_embeds": image_embeds}
        if pooled is not None:  # SDXL: whole size, where this tile sits, the tile's size
            size_ids = [grid.height * scale, grid.width * scale, tile.top * scale,
                        tile.left * scale, tile.height * scale, tile.width * scale]
            ids = torch.tensor([size_ids], device=device, dtype=dtype).repeat(len(window), 1)
            conditions = {**(conditions or {}), "text_embeds": pooled.to(dtype),
                          "time_ids": ids}
        down = mid = None
        if control is not None:
            down, mid = control.residuals(window, timestep, embeds, conditions, tile, index,
                                          len(timesteps))
        prediction = unet(window, timestep, encoder_hidden_states=embeds,
                          added_cond_kwargs=conditions, down_block_additional_residuals=down,
                          mid_block_additional_residual=mid, return_dict=False)[0]
        if guided:
            unconditional, conditional = prediction.chunk(2)
            prediction = unconditional + guidance * (conditional - unconditional)
        return prediction

    # 4. Denoise: each step, every tile's prediction, blended; one scheduler step. A deep
    # cache (fractal.backends.deepcache) counts UNet calls as steps, which per-tile calls are
    # not: with tiles, every call runs in full; with one, it is a step and the cache applies.
    done = 0
    with step_cache(pipeline, bypass=len(grid) > 1):
        for index, timestep in enumerate(timesteps):
            model_input = scheduler.scale_model_input(latents, timestep)

            def one_tile(tile: Tile, timestep: torch.Tensor = timestep,
                         model_input: torch.Tensor = model_input, index: int = index
                         ) -> torch.Tensor:
                nonlocal done
                prediction = denoise(model_input, timestep, tile, index)
                done += 1
                if tile is not grid.tiles[-1]:
                    on_tile(done, None)  # may raise GenerationCancelled: between tiles
                return prediction

            prediction = grid.blend(one_tile).to(dtype)
            del one_tile, model_input  # free the scaled input before the step makes more
            latents = scheduler.step(prediction, timestep, latents, **extra,
                                     return_dict=False)[0]
            on_tile(done, latents)

    # 5. Decode, one image at a time.
    return decode(pipeline, latents, vae_tile)
