"""The canvas being painted plus everything the drawing stages share."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fractal.engine.scene.lighting import Light
from fractal.engine.scene.noise import generator, grid
from fractal.engine.scene.vocabulary import Scene


@dataclass
class Frame:
    """A float32 (H, W, 3) canvas in 0..1 and the composition decided for it."""

    canvas: np.ndarray
    scene: Scene
    light: Light
    texture: float
    seed: int
    prompt_hash: int
    horizon: int = 0  # row of the horizon / waterline
    sun: tuple[float, float] = (0.0, 0.0)  # (x, y) pixels of the sun or moon
    skyline: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))

    @property
    def height(self) -> int:
        return int(self.canvas.shape[0])

    @property
    def width(self) -> int:
        return int(self.canvas.shape[1])

    @property
    def unit(self) -> float:
        """Pixels per 1/1000 of the picture width: sizes scale with the picture."""
        return self.width / 1000.0

    def rng(self, *names: str) -> np.random.Generator:
        return generator(self.seed, self.prompt_hash, *names)

    def grid(self) -> tuple[np.ndarray, np.ndarray]:
        return grid(self.height, self.width)

    def octaves(self, base: int) -> int:
        """Octave count: ``texture`` adds up to four octaves of detail."""
        return base + round(self.texture * 4)

    @property
    def roughness(self) -> float:
        """fBm gain per octave: rougher surfaces with more texture."""
        return 0.42 + 0.2 * self.texture

    def blend(self, y0: int, colour: np.ndarray, alpha: np.ndarray) -> None:
        """Alpha-blend a band of rows starting at ``y0`` (colour (h, W, 3), alpha (h, W))."""
        band = self.canvas[y0 : y0 + colour.shape[0]]
        a = alpha[..., None]
        band *= 1.0 - a
        band += colour * a

    def preview(self) -> np.ndarray:
        return to_uint8(self.canvas)


def to_uint8(canvas: np.ndarray) -> np.ndarray:
    out = np.clip(canvas, 0.0, 1.0) * np.float32(255.0)
    out += np.float32(0.5)
    return out.astype(np.uint8)
