"""The painterly effects and recolouring: shape, determinism, measurable looks, progress."""

from __future__ import annotations

import numpy as np
import pytest

from fractal.engine.paint import EFFECTS, apply_effect, recolour
from fractal.engine.scene import render_scene

REQUIRED = {"impressionist", "watercolor", "oil", "pointillism", "pencil", "pixel", "ukiyoe",
            "posterize", "cel", "lowpoly", "cinematic", "art_deco", "glow"}


@pytest.fixture(scope="module")
def picture() -> np.ndarray:
    return render_scene("a lake below snowy mountains with a forest", width=192, height=128,
                        seed=3, lighting=None, palette=None, texture=0.5, progress=None)


def effect(picture: np.ndarray, name: str, **options: object) -> np.ndarray:
    settings = {"seed": 1, "texture": 0.5, "palette": None, "progress": None, **options}
    return apply_effect(picture, name, **settings)


def high_frequency(image: np.ndarray) -> float:
    grey = image.astype(np.float32).mean(axis=2)
    return float(np.abs(np.diff(grey, axis=0)).mean() + np.abs(np.diff(grey, axis=1)).mean())


def test_every_required_effect_exists() -> None:
    assert set(EFFECTS) >= REQUIRED


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_effect_keeps_size_changes_the_picture_and_is_deterministic(
        picture: np.ndarray, name: str) -> None:
    first = effect(picture, name)
    assert first.shape == picture.shape and first.dtype == np.uint8
    assert np.abs(first.astype(int) - picture.astype(int)).mean() > 3
    assert np.array_equal(first, effect(picture, name))


@pytest.mark.parametrize("name", ["impressionist", "watercolor", "pointillism", "lowpoly"])
def test_randomised_effects_depend_on_the_seed(picture: np.ndarray, name: str) -> None:
    assert not np.array_equal(effect(picture, name, seed=1), effect(picture, name, seed=2))


def test_unknown_effect_names_itself(picture: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"'smudge'.*impressionist"):
        effect(picture, "smudge")


@pytest.mark.parametrize("name", ["pixel", "posterize", "ukiyoe", "cel"])
def test_quantising_effects_use_the_palette(picture: np.ndarray, name: str) -> None:
    palette = [(200, 30, 30), (20, 20, 90), (240, 220, 120)]
    out = effect(picture, name, palette=palette).reshape(-1, 1, 3).astype(np.float32)
    distance = np.linalg.norm(out - np.asarray(palette, np.float32)[None], axis=2).min(axis=1)
    # Outlines darken some pixels; the areas themselves are palette colours.
    assert np.median(distance) < 40


def test_recolour_follows_the_palette(picture: np.ndarray) -> None:
    palette = [(255, 0, 0), (0, 0, 128), (255, 255, 0)]
    centres = np.asarray(palette, np.float32)[None]

    def mean_distance(image: np.ndarray) -> float:
        pixels = image.reshape(-1, 1, 3).astype(np.float32)
        return float(np.linalg.norm(pixels - centres, axis=2).min(axis=1).mean())

    assert np.array_equal(recolour(picture, palette, 0.0), picture)
    assert mean_distance(recolour(picture, palette, 1.0)) < 0.25 * mean_distance(picture)
    half = mean_distance(recolour(picture, palette, 0.5))
    assert mean_distance(recolour(picture, palette, 1.0)) < half < mean_distance(picture)


@pytest.mark.parametrize("name", ["impressionist", "pixel", "pointillism", "lowpoly"])
def test_texture_makes_strokes_finer(name: str) -> None:
    # Large enough that the finest brush is not already at its smallest size.
    picture = render_scene("a lake below snowy mountains with a forest", width=384, height=256,
                           seed=3, lighting=None, palette=None, texture=0.5, progress=None)
    coarse = high_frequency(effect(picture, name, texture=0.0))
    fine = high_frequency(effect(picture, name, texture=1.0))
    assert fine > coarse * 1.1


def test_progress_is_reported_and_a_raise_inside_it_cancels(picture: np.ndarray) -> None:
    calls: list[tuple[int, int]] = []
    effect(picture, "watercolor", progress=lambda step, total, preview: calls.append(
        (step, total)))
    assert calls and calls[-1][0] == calls[-1][1]

    class Stop(Exception):
        pass

    def stop(step: int, total: int, preview: np.ndarray | None) -> None:
        raise Stop

    for name in ("impressionist", "oil", "cinematic"):
        with pytest.raises(Stop):
            effect(picture, name, progress=stop)


@pytest.mark.parametrize("name", ["impressionist", "pixel", "oil"])
def test_a_4096_square_picture_works(name: str) -> None:
    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    big = np.kron(small, np.ones((64, 64, 1), dtype=np.uint8))  # 4096×4096
    out = effect(big, name)
    assert out.shape == (4096, 4096, 3)
