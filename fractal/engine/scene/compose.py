"""render_scene: prompt → scene → drawing stages → lighting grade → palette → texture grain."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np

from fractal.engine.scene import abstract, curves, landscape
from fractal.engine.scene.frame import Frame, to_uint8
from fractal.engine.scene.lighting import grade, resolve
from fractal.engine.scene.palette import apply_palette, hash_tint, prompt_colours
from fractal.engine.scene.vocabulary import parse_prompt, prompt_key, stable_hash

logger = logging.getLogger(__name__)

F = np.float32
RGB = tuple[int, int, int]
Progress = Callable[[int, int, "np.ndarray | None"], None]

# What prompts that match no vocabulary become (chosen per seed).
FALLBACK_ABSTRACT = ("mandelbrot", "julia", "burning ship", "flame")


def _abstract_stage(frame: Frame, kind: str, colours: np.ndarray) -> np.ndarray:
    if kind in ("mandelbrot", "julia", "burning ship"):
        return abstract.escape_time(frame, kind, colours)
    if kind == "flame":
        return abstract.flame(frame, colours)
    if kind == "spiral":
        return abstract.spiral(frame, colours)
    if kind in ("galaxy", "nebula"):
        return abstract.galaxy(frame, colours, nebula=kind == "nebula")
    if kind == "snowflake":
        return curves.snowflake(frame, colours)
    if kind == "tree":
        return curves.fractal_tree(frame, colours)
    return curves.dragon(frame, colours)


def _abstract_stages(frame: Frame) -> list[Callable[[], None]]:
    scene = frame.scene
    rng = frame.rng("abstract")
    kinds = list(scene.abstract)
    if "galaxy" in kinds and "spiral" in kinds:  # "spiral galaxy" is one thing
        kinds.remove("spiral")
    kinds = kinds[:2]
    if not kinds:
        kinds = [FALLBACK_ABSTRACT[int(rng.integers(len(FALLBACK_ABSTRACT)))]]
    colours = prompt_colours(scene, rng)

    def main() -> None:
        frame.canvas[:] = _abstract_stage(frame, kinds[0], colours)

    def overlay() -> None:
        if len(kinds) > 1:  # a second motif is screened over the first
            top = _abstract_stage(frame, kinds[1], colours[::-1].copy())
            frame.canvas[:] = 1 - (1 - frame.canvas) * (1 - F(0.6) * top)

    return [main, overlay]


def _grain(frame: Frame) -> None:
    """Fine noise whose strength follows ``texture`` (high-frequency detail)."""
    rng = frame.rng("grain")
    amount = F(0.004 + 0.05 * frame.texture**1.5)
    for y0 in range(0, frame.height, 512):
        band = frame.canvas[y0 : y0 + 512]
        noise = rng.standard_normal(band.shape[:2], dtype=F) * amount
        band += noise[..., None]


def render_scene(
    prompt: str,
    *,
    width: int,
    height: int,
    seed: int,
    lighting: str | None = None,
    palette: Sequence[RGB] | None = None,
    texture: float = 0.5,
    progress: Progress | None = None,
) -> np.ndarray:
    """Draw ``prompt`` as a (height, width, 3) uint8 picture; deterministic per arguments."""
    scene = parse_prompt(prompt)
    light = resolve(lighting, scene)
    frame = Frame(
        canvas=np.zeros((height, width, 3), F),
        scene=scene,
        light=light,
        texture=float(texture),
        seed=int(seed),
        prompt_hash=stable_hash(prompt_key(prompt)),
    )
    logger.debug("scene %s, lighting %s, %dx%d", scene, light.name, width, height)
    stages = landscape.stages(frame) if scene.is_landscape else _abstract_stages(frame)
    total = len(stages) + 1
    for step, stage in enumerate(stages, start=1):
        stage()
        if progress is not None:
            progress(step, total, frame.preview())
    canvas = frame.canvas
    if scene.is_abstract:
        canvas *= np.array(hash_tint(scene), F)
    grade(canvas, light)
    if palette:
        apply_palette(canvas, palette)
    elif scene.colours and scene.is_landscape:
        apply_palette(canvas, scene.colours, amount=0.3)
    _grain(frame)
    out = to_uint8(canvas)
    if progress is not None:
        progress(total, total, out)
    return out
