"""Run an expensive effect at a capped working resolution and bring it back to full size."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fractal.engine.paint.common import WORK_LONG_SIDE, Progress, resize, working_copy


def at_working_size(
    rgb: np.ndarray,
    run: Callable[[np.ndarray, Progress | None], np.ndarray],
    progress: Progress | None,
    long_side: int = WORK_LONG_SIDE,
) -> np.ndarray:
    """Apply ``run`` to ``rgb`` downscaled to at most ``long_side``, then resize back.

    Previews passed to ``progress`` are at the working size (smaller than the output for
    inputs larger than ``long_side``).
    """
    h, w = rgb.shape[:2]
    work = working_copy(rgb, long_side)
    out = run(work, progress)
    if out.shape[:2] != (h, w):
        out = resize(out, w, h)
    return out
