"""Overlapping tiles over a latent, and blending weights that sum to one everywhere.

MultiDiffusion (Bar-Tal et al. 2023) and Mixture of Diffusers (Jiménez 2023): every step, each
tile's noise prediction is computed on its own and the predictions are blended with weights
that sum to one at every position, so the blended prediction has no seam by construction and
one denoiser call only ever sees one tile. Pure geometry and torch; no model here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["Tile", "TileGrid", "tile_starts"]


@dataclass(frozen=True)
class Tile:
    """A window of the latent: rows ``top:top+height``, columns ``left:left+width``."""

    top: int
    left: int
    height: int
    width: int

    @property
    def rows(self) -> slice:
        return slice(self.top, self.top + self.height)

    @property
    def cols(self) -> slice:
        return slice(self.left, self.left + self.width)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Starts of windows of ``tile`` covering ``0…length``, first at 0, last at the end, each
    overlapping the next by at least ``overlap`` (evenly spread, so no sliver tile)."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    count = math.ceil((length - tile) / stride) + 1
    return [round(k * (length - tile) / (count - 1)) for k in range(count)]


def _ramp(size: int, fade: int, fade_start: bool, fade_end: bool) -> torch.Tensor:
    """1 inside, rising linearly over ``fade`` cells at an edge shared with another tile;
    never 0, so every cell has weight somewhere."""
    position = torch.arange(size, dtype=torch.float32)
    ramp = torch.ones(size)
    if fade > 0:
        if fade_start:
            ramp = torch.minimum(ramp, (position + 1) / (fade + 1))
        if fade_end:
            ramp = torch.minimum(ramp, (size - position) / (fade + 1))
    return ramp


class TileGrid:
    """Tiles of at most ``tile``×``tile`` cells over a ``height``×``width`` latent, with
    per-tile weights already divided by their sum over all tiles (so they sum to one)."""

    def __init__(self, height: int, width: int, tile: int, overlap: int) -> None:
        if tile < 1 or not 0 <= overlap < tile:
            raise ValueError(f"a tile of {tile} with overlap {overlap} cannot tile anything")
        self.height, self.width = height, width
        tile_height, tile_width = min(tile, height), min(tile, width)
        rows = tile_starts(height, tile_height, overlap)
        cols = tile_starts(width, tile_width, overlap)
        self.tiles = [Tile(top, left, tile_height, tile_width) for top in rows for left in cols]
        raw = [torch.outer(_ramp(tile_height, overlap, t.top > 0, t.top + tile_height < height),
                           _ramp(tile_width, overlap, t.left > 0, t.left + tile_width < width))
               for t in self.tiles]
        total = torch.zeros(height, width)
        for t, weight in zip(self.tiles, raw, strict=True):
            total[t.rows, t.cols] += weight
        self.weights = [weight / total[t.rows, t.cols] for t, weight in zip(self.tiles, raw,
                                                                             strict=True)]

    def __len__(self) -> int:
        return len(self.tiles)

    @property
    def tile_size(self) -> tuple[int, int]:
        """(width, height) of every tile, in latent cells."""
        return self.tiles[0].width, self.tiles[0].height

    def blend(self, denoise: Callable[[Tile], torch.Tensor]) -> torch.Tensor:
        """Σ weight × ``denoise(tile)`` over the tiles: ``denoise`` returns a tensor whose last
        two dimensions are the tile's; the result has the whole latent's."""
        out: torch.Tensor | None = None
        for tile, weight in zip(self.tiles, self.weights, strict=True):
            prediction = denoise(tile)
            if out is None:  # float32 sums, whatever the model's dtype
                out = torch.zeros((*prediction.shape[:-2], self.height, self.width),
                                  dtype=torch.float32, device=prediction.device)
            out[..., tile.rows, tile.cols] += prediction.float() * weight.to(prediction.device)
        assert out is not None, "a grid has at least one tile"
        return out
