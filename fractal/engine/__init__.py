"""The built-in offline fractal engine: no weights, no GPU — numpy, SciPy and OpenCV only.

Three entry points, pure functions of their arguments (deterministic per seed):

* :func:`render` draws a picture from a prompt (text-to-image).
* :func:`stylise` repaints an input picture (the engine's image-to-image).
* :func:`upscale` enlarges a picture it did not draw (one it drew, it renders again larger).
* :func:`inpaint` fills a masked area (or an outpaint's new canvas) in the light and palette
  around it (:mod:`fractal.engine.inpaint`).

:func:`render` and :func:`stylise` also take structural ``guides``
(:mod:`fractal.engine.structure`: a control image's edges or layout) and a ``style`` reference
(:mod:`fractal.engine.transfer`: its palette and texture, or its composition).

Scenes live in :mod:`fractal.engine.scene` (prompt vocabulary, terrain, water, sky, plants,
abstract fractals); painterly effects and palette recolouring in :mod:`fractal.engine.paint`.
This module only composes them, so the two halves stay independent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from fractal.engine.inpaint import inpaint
from fractal.engine.paint import EFFECTS, apply_effect, recolour
from fractal.engine.paint.detail import enlarge, sharpen
from fractal.engine.scene import LIGHTING_PRESETS, render_scene
from fractal.engine.structure import Guide, apply_guides
from fractal.engine.transfer import StyleSource, composition_guide, transfer_style

RGB = tuple[int, int, int]
# progress(step, total, preview): preview is the current canvas (H, W, 3) uint8, or None.
Progress = Callable[[int, int, "np.ndarray | None"], None]

__all__ = ["EFFECTS", "LIGHTING_PRESETS", "Guide", "Progress", "StyleSource", "inpaint", "render",
           "stylise", "upscale"]

_DEFAULT_IMAGE_EFFECT = "impressionist"


def _slice(progress: Progress | None, start: int, stop: int, total: int) -> Progress | None:
    """Map a stage's own step count onto steps ``start..stop`` of the whole job's ``total``."""
    if progress is None:
        return None

    def forward(step: int, stage_total: int, preview: np.ndarray | None) -> None:
        progress(start + round(step * (stop - start) / max(stage_total, 1)), total, preview)

    return forward


def render(
    prompt: str,
    *,
    width: int,
    height: int,
    seed: int,
    lighting: str | None = None,
    palette: Sequence[RGB] | None = None,
    texture: float | None = None,
    effect: str | None = None,
    guides: Sequence[Guide] = (),
    style: StyleSource | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """Render ``prompt`` as an (height, width, 3) uint8 array.

    ``effect`` (one of :data:`EFFECTS`) is a style's post-process, applied in full. The scene
    is drawn on the ``guides``' structure before the effect paints it; ``style`` transfers a
    reference's palette and texture last (its composition is one more guide).
    """
    texture = 0.5 if texture is None else texture
    guides = _all_guides(guides, style, width, height)
    restyle = style is not None and style.transfers_style
    if effect is None and not guides and not restyle:
        return render_scene(
            prompt, width=width, height=height, seed=seed, lighting=lighting,
            palette=palette, texture=texture, progress=progress,
        )
    # The scene is most of the work; the effect and the style share the last fifth.
    scene_end = 8 if effect is not None or restyle else 10
    rgb = render_scene(
        prompt, width=width, height=height, seed=seed, lighting=lighting, palette=palette,
        texture=texture, progress=_slice(progress, 0, scene_end, 10),
    )
    rgb = apply_guides(rgb, guides)
    if effect is not None:
        rgb = apply_effect(
            rgb, effect, seed=seed, texture=texture, palette=palette,
            progress=_slice(progress, 8, 9 if restyle else 10, 10),
        )
    return _restyle(rgb, style, seed, progress)


def _all_guides(guides: Sequence[Guide], style: StyleSource | None, width: int,
                height: int) -> list[Guide]:
    """The active guides, the style reference's composition among them."""
    active = [guide for guide in guides if guide.scale > 0]
    if style is not None and style.guides_composition:
        active.append(composition_guide(style, width, height))
    return active


def _restyle(rgb: np.ndarray, style: StyleSource | None, seed: int,
             progress: Progress | None) -> np.ndarray:
    if style is None or not style.transfers_style:
        return rgb
    out = transfer_style(rgb, style, seed)
    if progress is not None:
        progress(10, 10, out)
    return out


def stylise(
    image: np.ndarray,
    *,
    seed: int,
    effect: str | None = None,
    strength: float = 0.6,
    palette: Sequence[RGB] | None = None,
    texture: float | None = None,
    guides: Sequence[Guide] = (),
    style: StyleSource | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """Repaint ``image`` (H, W, 3) uint8 with ``effect``.

    ``strength`` blends the source (0) with the fully stylised result (1); ``palette``
    pulls the colours toward the given ones. The input is drawn on the ``guides``' structure
    before it is repainted; ``style`` transfers a reference's palette and texture last.
    """
    texture = 0.5 if texture is None else texture
    image = apply_guides(image, _all_guides(guides, style, image.shape[1], image.shape[0]))
    restyle = style is not None and style.transfers_style
    painted = apply_effect(
        image, effect or _DEFAULT_IMAGE_EFFECT, seed=seed, texture=texture, palette=palette,
        progress=_slice(progress, 0, 9, 10) if restyle else progress,
    )
    if palette:
        painted = recolour(painted, palette, amount=0.7)
    mixed = image.astype(np.float32) * (1.0 - strength) + painted.astype(np.float32) * strength
    return _restyle(np.clip(mixed + 0.5, 0, 255).astype(np.uint8), style, seed, progress)


def upscale(
    image: np.ndarray,
    *,
    width: int,
    height: int,
    strength: float = 0.3,
    progress: Progress | None = None,
) -> np.ndarray:
    """``image`` (H, W, 3) uint8 enlarged to ``width``×``height``: Lanczos, then a detail pass
    whose strength follows ``strength`` (0 is plain Lanczos)."""
    scale = max(width / image.shape[1], height / image.shape[0])
    large = enlarge(image, width, height)
    if progress is not None:
        progress(1, 2, large)
    # The blur an enlargement adds is about the scale wide: sharpen over that radius.
    detailed = sharpen(large, strength, radius=max(1.0, 0.75 * scale))
    if progress is not None:
        progress(2, 2, detailed)
    return detailed
