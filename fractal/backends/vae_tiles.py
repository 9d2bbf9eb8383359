"""VAE encode and decode, one image at a time, in blended tiles when the image is large.

The tiles are a :class:`~fractal.backends.tiling.TileGrid` over the latent, so their weights
sum to one: decoded tiles are blended straight into one float32 picture, and encoded tiles'
distributions (mean and log-variance) into one latent distribution, sampled once with the
image's generator. Only the VAE's public ``encode``/``decode`` run, one tile at a time, and
nothing of the image's size stays on the device. Pipelines whose VAE we do not drive
ourselves (transformers' packed latents) get diffusers' own tiling: :func:`vae_tiling`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from PIL import Image

from fractal.backends.tiling import TileGrid

__all__ = ["decode", "encode", "vae_tile_size", "vae_tiling"]


def vae_tile_size(vae: Any) -> int | None:
    """The side, in pixels, the VAE was trained at: its tile (None: it cannot tile)."""
    side = getattr(vae.config, "sample_size", None)
    if isinstance(side, (tuple, list)):
        side = side[0]
    return int(side) if side and hasattr(vae, "enable_tiling") else None


@contextlib.contextmanager
def vae_tiling(vae: Any, enabled: bool) -> Iterator[None]:
    """diffusers' own tiled VAE for the duration, through its public switch."""
    was = bool(getattr(vae, "use_tiling", False))
    if enabled and not was:
        vae.enable_tiling()
    try:
        yield
    finally:
        if enabled and not was:
            vae.disable_tiling()


@contextlib.contextmanager
def _precision(vae: Any) -> Iterator[torch.dtype]:
    """A float16 VAE that asks for it runs in float32 (SDXL's overflows), as the pipelines do."""
    dtype = vae.dtype
    upcast = dtype == torch.float16 and getattr(vae.config, "force_upcast", False)
    if upcast:
        vae.to(dtype=torch.float32)
    try:
        yield vae.dtype
    finally:
        if upcast:
            vae.to(dtype=dtype)


def _latent_stats(vae: Any, device: torch.device) -> tuple[Any, Any]:
    mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
    if mean is None or std is None:
        return None, None
    shape = (1, len(mean), 1, 1)
    return (torch.tensor(mean).view(shape).to(device), torch.tensor(std).view(shape).to(device))


def _grid(pipeline: Any, height: int, width: int, tile: int | None) -> TileGrid:
    """Latent tiles of ``tile`` pixels overlapping by a quarter; one tile when None."""
    scale = int(pipeline.vae_scale_factor)
    if tile is None:
        return TileGrid(height, width, max(height, width), 0)
    cells = max(1, tile // scale)
    return TileGrid(height, width, cells, cells // 4)


def encode(pipeline: Any, images: list[Image.Image], generators: list[torch.Generator],
           device: torch.device, tile: int | None) -> torch.Tensor:
    """Scaled latents of each image, sampled with its own generator."""
    from diffusers.utils.torch_utils import randn_tensor

    vae = pipeline.vae
    scale = int(pipeline.vae_scale_factor)
    mean, std = _latent_stats(vae, device)
    latents = []
    with _precision(vae) as dtype:
        for image, generator in zip(images, generators, strict=True):
            grid = _grid(pipeline, image.height // scale, image.width // scale, tile)
            moments: torch.Tensor | None = None
            for cell, weight in zip(grid.tiles, grid.weights, strict=True):
                crop = image.crop((cell.left * scale, cell.top * scale,
                                   (cell.left + cell.width) * scale,
                                   (cell.top + cell.height) * scale))
                pixels = pipeline.image_processor.preprocess(crop).to(device, dtype=dtype)
                part = vae.encode(pixels).latent_dist
                both = torch.cat([part.mean, part.logvar], dim=1).float()
                if moments is None:
                    moments = both.new_zeros((1, both.shape[1], grid.height, grid.width))
                moments[..., cell.rows, cell.cols] += both * weight.to(device)
            # DiagonalGaussianDistribution.sample, in place: the moments are the largest
            # tensor here, and a 4096² image's are 128 MiB.
            assert moments is not None, "a grid has at least one tile"
            latent, spread = moments.chunk(2, dim=1)
            spread.clamp_(-30.0, 20.0).mul_(0.5).exp_()  # log-variance → standard deviation
            noise = randn_tensor(latent.shape, generator=generator, device=latent.device,
                                 dtype=latent.dtype)
            latent = noise.mul_(spread).add_(latent)
            del moments, spread
            if mean is not None:
                latent = (latent - mean) * vae.config.scaling_factor / std
            else:
                latent = latent * vae.config.scaling_factor
            latents.append(latent)
    return torch.cat(latents)


def decode(pipeline: Any, latents: torch.Tensor, tile: int | None) -> list[Image.Image]:
    """Pictures of scaled latents, each blended from its decoded tiles on the CPU."""
    vae = pipeline.vae
    scale = int(pipeline.vae_scale_factor)
    mean, std = _latent_stats(vae, latents.device)
    images: list[Image.Image] = []
    with _precision(vae) as dtype:
        for latent in latents.split(1):
            latent = latent.float()
            if mean is not None:
                latent = latent * std / vae.config.scaling_factor + mean
            else:
                latent = latent / vae.config.scaling_factor
            grid = _grid(pipeline, latent.shape[-2], latent.shape[-1], tile)
            images.append(_decode_tiles(vae, latent.to(dtype), grid, scale))
    return images


def _decode_tiles(vae: Any, latent: torch.Tensor, grid: TileGrid, scale: int) -> Image.Image:
    """Decode tile by tile, row of tiles by row, blending into a float32 band no taller than
    a tile: rows above the next row of tiles are final, and go to the 8-bit picture."""
    picture = np.zeros((grid.height * scale, grid.width * scale, 3), np.uint8)
    band = np.zeros((0, picture.shape[1], 3), np.float32)
    band_top = 0  # the picture row band[0] is

    def flush(until: int) -> None:
        nonlocal band, band_top
        done = until - band_top
        if done > 0:  # as the image processor rounds: [0, 1] → 0…255
            picture[band_top:until] = np.round(band[:done] * 255).astype(np.uint8)
            band, band_top = band[done:], until

    for cell, weight in zip(grid.tiles, grid.weights, strict=True):
        top, bottom = cell.top * scale, (cell.top + cell.height) * scale
        flush(top)  # tiles come row by row: nothing later reaches above this one
        if band_top + band.shape[0] < bottom:
            grow = bottom - band_top - band.shape[0]
            band = np.concatenate([band, np.zeros((grow, *band.shape[1:]), np.float32)])
        pixels = vae.decode(latent[..., cell.rows, cell.cols]).sample[0]
        pixels = (pixels.float() / 2 + 0.5).clamp(0, 1)
        weight = weight.repeat_interleave(scale, 0).repeat_interleave(scale, 1)
        band[top - band_top:bottom - band_top, cell.left * scale:(cell.left + cell.width) * scale] \
            += (pixels * weight.to(pixels.device)).permute(1, 2, 0).cpu().numpy()
    flush(picture.shape[0])
    return Image.fromarray(picture)
