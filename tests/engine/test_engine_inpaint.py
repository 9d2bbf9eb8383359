"""The engine's inpainting (fractal.engine.inpaint): its fill takes the surroundings' light and
palette, continues them without a prompt, and is deterministic per seed."""

from __future__ import annotations

import numpy as np

from fractal.engine import inpaint, render
from fractal.engine.structure import to_lab

H, W = 96, 128


def _hole() -> np.ndarray:
    mask = np.zeros((H, W), np.uint8)
    mask[24:72, 32:96] = 255
    return mask


def test_strength_zero_is_the_image_and_the_fill_is_seeded() -> None:
    image = render("a forest", width=W, height=H, seed=1)
    assert np.array_equal(inpaint(image, _hole(), seed=3, prompt="a lake", strength=0.0), image)
    first = inpaint(image, _hole(), seed=3, prompt="a lake")
    assert first.shape == image.shape and first.dtype == np.uint8
    assert np.array_equal(first, inpaint(image, _hole(), seed=3, prompt="a lake"))
    assert not np.array_equal(first, inpaint(image, _hole(), seed=4, prompt="a lake"))


def test_the_prompt_scene_takes_the_surroundings_light_and_palette() -> None:
    dusk = np.zeros((H, W, 3), np.uint8)
    dusk[:] = (40, 30, 90)  # a dark violet picture
    dusk += np.random.default_rng(0).integers(0, 12, dusk.shape, dtype=np.uint8)
    hole = _hole() > 0
    scene = render("a sunny desert at noon", width=W, height=H, seed=2)
    filled = inpaint(dusk, _hole(), seed=2, prompt="a sunny desert at noon")
    ring = to_lab(dusk)[~hole].mean(axis=0)
    raw = np.abs(to_lab(scene)[hole].mean(axis=0) - ring)
    matched = np.abs(to_lab(filled)[hole].mean(axis=0) - ring)
    assert (matched < raw).all() and matched[0] < 3  # lightness within 3 of its surroundings
    assert filled[hole].std() > 2  # with detail of its own, not a flat patch


def test_without_a_prompt_the_surroundings_continue() -> None:
    image = np.zeros((H, W, 3), np.uint8)
    image[:, :, 0] = np.linspace(0, 255, W, dtype=np.uint8)  # red rises left to right
    filled = inpaint(image, _hole(), seed=1).astype(float)
    hole = _hole() > 0
    assert filled[hole][:, 1:].max() < 40  # no colour the picture lacks
    left, right = filled[24:72, 34, 0].mean(), filled[24:72, 93, 0].mean()
    assert abs(left - image[0, 31, 0]) < 25 and abs(right - image[0, 96, 0]) < 25


def test_an_outpaint_continues_the_edge_colour_at_the_seam() -> None:
    canvas = np.zeros((H, W, 3), np.uint8)
    canvas[: H // 2] = (120, 160, 220)  # sky over
    canvas[H // 2:] = (40, 90, 50)  # land
    mask = np.zeros((H, W), np.uint8)
    mask[:, 96:] = 255  # the added right side
    filled = inpaint(canvas, mask, seed=5, prompt="hills under a blue sky").astype(float)
    seam = filled[:, 97]
    assert np.abs(seam[: H // 2 - 8] - canvas[0, 0]).mean() < 25  # sky beside sky
    assert np.abs(seam[H // 2 + 8:] - canvas[-1, 0]).mean() < 25  # land beside land


def test_a_mask_over_everything_takes_the_picture_own_light() -> None:
    image = np.full((H, W, 3), (10, 200, 30), np.uint8)
    everything = np.full((H, W), 255, np.uint8)
    continued = inpaint(image, everything, seed=1).astype(float)
    assert np.abs(continued.mean(axis=(0, 1)) - (10, 200, 30)).max() < 3
    scene = inpaint(image, everything, seed=1, prompt="a lake").astype(float)
    assert np.abs(scene.mean(axis=(0, 1)) - (10, 200, 30)).max() < 20
