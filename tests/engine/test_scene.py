"""The built-in engine's text-to-image (fractal.engine.scene): vocabulary, determinism,
sizes and the measurable effect of each control."""

from __future__ import annotations

import numpy as np
import pytest

from fractal.engine.scene import LIGHTING_PRESETS, Scene, parse_prompt, render_scene
from fractal.engine.scene.vocabulary import (
    ABSTRACT,
    SKY,
    TERRAIN,
    TIME_OF_DAY,
    VEGETATION,
    WATER,
)

LAKE = "A serene lake surrounded by mountains during sunrise"
ISLAND = "A tropical island with crystal-clear water"


def render(
    prompt: str,
    *,
    width: int = 160,
    height: int = 96,
    seed: int = 1,
    lighting: str | None = None,
    palette=None,
    texture: float = 0.5,
    progress=None,
) -> np.ndarray:
    return render_scene(
        prompt,
        width=width,
        height=height,
        seed=seed,
        lighting=lighting,
        palette=palette,
        texture=texture,
        progress=progress,
    )


def luminance(img: np.ndarray) -> np.ndarray:
    return img.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def test_presets_are_the_documented_names() -> None:
    assert LIGHTING_PRESETS == (
        "sunrise",
        "morning",
        "noon",
        "afternoon",
        "golden hour",
        "sunset",
        "dusk",
        "night",
        "moonlight",
        "overcast",
        "studio",
        "dramatic",
        "soft",
    )


def test_readme_prompts_parse_to_their_elements() -> None:
    lake = parse_prompt(LAKE)
    assert isinstance(lake, Scene)
    assert lake.terrain == ("mountains",)
    assert lake.water == ("lake",)
    assert lake.time_of_day == "sunrise"
    assert lake.is_landscape
    island = parse_prompt(ISLAND)
    assert "island" in island.terrain
    assert "palms" in island.vegetation
    assert island.wants_water
    assert "clear" in island.sky
    assert not island.abstract


def test_synonyms_plurals_phrases_and_colours() -> None:
    scene = parse_prompt(
        "Snow-capped peaks, pine trees and wildflowers at golden hour, #ff8800 teal"
    )
    assert scene.terrain == ("snow", "mountains")
    assert set(scene.vegetation) == {"pines", "flowers"}
    assert scene.time_of_day == "golden hour"
    assert scene.colours == ((255, 136, 0), (0, 128, 128))
    assert parse_prompt("a fractal tree").abstract == ("tree",)
    assert parse_prompt("trees by a lake").vegetation == ("forest",)
    assert parse_prompt("burning ship").abstract == ("burning ship",)
    assert parse_prompt("galaxies and nebulae").abstract == ("galaxy", "nebula")
    assert parse_prompt("zorblax quantum").is_abstract


def test_deterministic_and_seed_dependent() -> None:
    a = render(LAKE, seed=7)
    assert np.array_equal(a, render(LAKE, seed=7))
    assert not np.array_equal(a, render(LAKE, seed=8))


@pytest.mark.parametrize("size", [(64, 64), (200, 104), (96, 256), (8, 8)])
def test_size_is_honoured(size: tuple[int, int]) -> None:
    w, h = size
    for prompt in (LAKE, ISLAND, "mandelbrot"):
        img = render(prompt, width=w, height=h)
        assert img.shape == (h, w, 3)
        assert img.dtype == np.uint8


def test_wide_render() -> None:
    img = render(LAKE, width=4096, height=512)
    assert img.shape == (512, 4096, 3)
    assert img.std() > 10


def _words(table: dict[str, tuple[str, ...]]) -> list[str]:
    return sorted({word for words in table.values() for word in words})


@pytest.mark.parametrize(
    "word", _words(TERRAIN) + _words(WATER) + _words(VEGETATION) + _words(SKY) + _words(TIME_OF_DAY)
)
def test_every_landscape_word_is_recognised_and_changes_the_picture(word: str) -> None:
    scene = parse_prompt(f"hills {word}")
    found = (*scene.terrain, *scene.water, *scene.vegetation, *scene.sky, scene.time_of_day)
    assert len([f for f in found if f]) >= 2 or word in TERRAIN["hills"], scene
    baseline = render("hills", width=64, height=48)
    assert not np.array_equal(render(f"hills {word}", width=64, height=48), baseline)


@pytest.mark.parametrize("word", [*_words(ABSTRACT), "burning ship", "fractal tree"])
def test_every_abstract_word_is_recognised_and_changes_the_picture(word: str) -> None:
    assert parse_prompt(word).abstract, word
    baseline = render("abstract art", width=64, height=48)
    img = render(word, width=64, height=48)
    assert not np.array_equal(img, baseline)
    assert img.std() > 5


def test_unknown_words_give_varied_seed_dependent_art() -> None:
    pictures = [render("zorblax quantum reverie", seed=s) for s in range(4)]
    for img in pictures:
        assert img.std() > 10  # not a flat colour
    assert len({img.tobytes() for img in pictures}) == 4


def test_palette_is_followed() -> None:
    palette = [(200, 30, 30), (20, 20, 120), (240, 220, 90)]
    colours = np.array(palette, dtype=np.float64)

    def distance(img: np.ndarray) -> float:
        px = img.reshape(-1, 1, 3).astype(np.float64)
        return float(np.sqrt(((px - colours[None]) ** 2).sum(-1)).min(1).mean())

    for prompt in (LAKE, ISLAND, "julia"):
        free, tinted = render(prompt), render(prompt, palette=palette)
        assert distance(tinted) < 0.5 * distance(free), prompt


def test_lighting_brightness_and_warmth() -> None:
    def warmth(img: np.ndarray) -> float:
        return float(img[..., 0].astype(np.float64).mean() - img[..., 2].astype(np.float64).mean())

    for prompt in (LAKE, ISLAND, "mandelbrot"):
        noon, night = render(prompt, lighting="noon"), render(prompt, lighting="night")
        sunset = render(prompt, lighting="sunset")
        assert luminance(noon).mean() > luminance(night).mean() + 20, prompt
        assert warmth(sunset) > warmth(noon) + 10, prompt


def test_every_preset_renders_differently() -> None:
    pictures = {name: render(ISLAND, lighting=name).tobytes() for name in LIGHTING_PRESETS}
    assert len(set(pictures.values())) == len(LIGHTING_PRESETS)


def test_time_words_pick_the_lighting() -> None:
    assert luminance(render("a lake at noon")).mean() > luminance(render("a lake at night")).mean()


def test_texture_raises_high_frequency_energy() -> None:
    def energy(img: np.ndarray) -> float:
        lum = luminance(img)
        lap = 4 * lum[1:-1, 1:-1] - lum[:-2, 1:-1] - lum[2:, 1:-1] - lum[1:-1, :-2] - lum[1:-1, 2:]
        return float(np.abs(lap).mean())

    for prompt in (LAKE, ISLAND, "nebula"):
        smooth = render(prompt, width=256, height=160, texture=0.1)
        rough = render(prompt, width=256, height=160, texture=0.9)
        assert energy(rough) > 1.3 * energy(smooth), prompt


def test_progress_is_reported() -> None:
    calls: list[tuple[int, int, tuple[int, ...] | None]] = []
    render(LAKE, progress=lambda s, t, p: calls.append((s, t, None if p is None else p.shape)))
    assert calls, "progress never called"
    steps = [s for s, _, _ in calls]
    assert steps == sorted(steps) and steps[-1] == calls[-1][1]
    assert all(shape in (None, (96, 160, 3)) for _, _, shape in calls)


def test_progress_exception_cancels() -> None:
    class Cancelled(Exception):
        pass

    def cancel(step: int, total: int, preview: np.ndarray | None) -> None:
        if step == 2:
            raise Cancelled

    with pytest.raises(Cancelled):
        render(ISLAND, progress=cancel)
    with pytest.raises(Cancelled):
        render("fractal flame", progress=cancel)


def _warm(img: np.ndarray) -> np.ndarray:
    rgb = img.astype(np.int32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return (r > 170) & (r > b + 90) & (r > g + 40)


@pytest.mark.parametrize("prompt", [LAKE, "a volcano at night", "desert dunes"])
def test_night_is_moonlit_and_readable(prompt: str) -> None:
    for seed in (1, 2):
        img = render(prompt, width=240, height=160, seed=seed, lighting="night")
        lum = luminance(img)
        assert lum.mean() > 15, (prompt, seed)  # not a black picture
        # The sky pales toward the horizon, so dark land reads as a silhouette against it.
        assert lum[48:64].mean() > lum[:10].mean() + 5, (prompt, seed)
        noon = render(prompt, width=240, height=160, seed=seed, lighting="noon")
        assert luminance(noon).mean() > lum.mean() + 20, (prompt, seed)


@pytest.mark.parametrize("lighting", ["night", "noon"])
def test_volcano_glows_warm_and_bright_at_the_top(lighting: str) -> None:
    for seed in (1, 2, 3):
        img = render("a volcano", width=384, height=256, seed=seed, lighting=lighting)
        warm = _warm(img)
        assert warm[:128].sum() >= 15, (lighting, seed)  # crater and lava near the summit
        assert warm[160:].sum() == 0, (lighting, seed)  # not on the plain below


def test_dunes_have_crests_with_light_and_shadow_sides() -> None:
    for seed in (1, 2, 3):
        dunes = luminance(render("desert dunes", width=240, height=160, seed=seed))[110:]
        hills = luminance(render("hills", width=240, height=160, seed=seed))[110:]
        assert dunes.std() > 1.5 * hills.std(), seed


def test_waterfall_is_a_bright_column_above_the_pool() -> None:
    for seed in (1, 2, 3):
        lum = luminance(render("a waterfall", width=240, height=160, seed=seed))
        columns = lum[40:85].mean(axis=0)
        assert columns.max() > np.median(columns) + 12, seed


def test_flame_fades_out_inside_the_frame() -> None:
    for seed in (1, 2, 3, 5):
        lum = luminance(render("a fractal flame", width=240, height=160, seed=seed))
        border = np.concatenate([lum[:3].ravel(), lum[-3:].ravel(), lum[:, :3].ravel()])
        border = np.concatenate([border, lum[:, -3:].ravel()])
        assert border.mean() < 0.6 * lum[40:120, 60:180].mean(), seed
        assert border.mean() < 10, seed
