"""Painterly effects and palette recolouring for the built-in offline engine.

:func:`apply_effect` repaints an (H, W, 3) uint8 picture in one of :data:`EFFECTS`;
:func:`recolour` pulls a picture's colours toward a palette. Pure numpy/scipy/Pillow,
deterministic per seed, bounded memory for inputs up to 4096×4096.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from fractal.engine.paint.common import RGB, Progress, log
from fractal.engine.paint.facets import lowpoly
from fractal.engine.paint.flat import art_deco, cel, pixel, posterize, ukiyoe
from fractal.engine.paint.painterly import oil, pencil, pointillism, watercolor
from fractal.engine.paint.palette_map import recolour
from fractal.engine.paint.strokes import impressionist
from fractal.engine.paint.tone import cinematic, glow
from fractal.engine.paint.working import at_working_size

__all__ = ["EFFECTS", "apply_effect", "recolour"]

_Effect = Callable[..., np.ndarray]

# name -> (function, takes palette, runs at a capped working resolution)
_REGISTRY: dict[str, tuple[_Effect, bool, bool]] = {
    "impressionist": (impressionist, False, True),
    "watercolor": (watercolor, False, True),
    "oil": (oil, False, True),
    "pointillism": (pointillism, False, True),
    "pencil": (pencil, False, True),
    "pixel": (pixel, True, False),
    "ukiyoe": (ukiyoe, True, True),
    "posterize": (posterize, True, True),
    "cel": (cel, True, True),
    "lowpoly": (lowpoly, False, True),
    "cinematic": (cinematic, False, False),
    "art_deco": (art_deco, True, True),
    "glow": (glow, False, False),
}


EFFECTS: tuple[str, ...] = tuple(_REGISTRY)


def apply_effect(
    rgb: np.ndarray,
    effect: str,
    *,
    seed: int,
    texture: float,
    palette: Sequence[RGB] | None,
    progress: Progress | None,
) -> np.ndarray:
    """Repaint ``rgb`` (H, W, 3) uint8 with ``effect``; returns the same shape and dtype.

    ``texture`` 0..1 sets stroke fineness / detail (high = smaller strokes, more detail).
    ``palette`` is the colour set of the quantising effects (posterize, ukiyoe, pixel, cel,
    art_deco). ``progress(step, total, preview)`` is called after each stage; exceptions it
    raises (cancellation) propagate.
    """
    if effect not in _REGISTRY:
        raise ValueError(f"unknown effect {effect!r}; valid effects: {', '.join(EFFECTS)}")
    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    func, uses_palette, capped = _REGISTRY[effect]
    texture = float(np.clip(texture, 0.0, 1.0))
    pal = list(palette) if (palette and uses_palette) else None
    kwargs: dict[str, object] = {"seed": int(seed), "texture": texture}
    if uses_palette:
        kwargs["palette"] = pal
    log.debug("effect %s on %dx%d (texture %.2f)", effect, arr.shape[1], arr.shape[0], texture)
    if capped:
        return at_working_size(arr, lambda img, prog: func(img, progress=prog, **kwargs), progress)
    return func(arr, progress=progress, **kwargs)
