"""The engine's style transfer from a reference image, measured: the output's colour
histogram moves toward the reference's as style_strength rises; strength 0 is no reference."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
from PIL import Image

from fractal import Spec2Fractal, read_record
from fractal.engine import StyleSource, render, stylise
from fractal.engine.scene import render_scene
from fractal.engine.transfer import transfer_style

SMALL = {"width": 96, "height": 64}
STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)


def histogram_distance(image: np.ndarray, reference: np.ndarray) -> float:
    """Earth mover's distance between the two pictures' histograms, summed over R, G, B."""
    total = 0.0
    for channel in range(3):
        ours = np.bincount(image[..., channel].ravel(), minlength=256) / image[..., 0].size
        theirs = np.bincount(reference[..., channel].ravel(), minlength=256) \
            / reference[..., 0].size
        total += float(np.abs(np.cumsum(ours) - np.cumsum(theirs)).sum())
    return total


def decreasing(values: list[float]) -> bool:
    return all(a > b for a, b in itertools.pairwise(values))


def _warm_stripes() -> np.ndarray:
    rows, cols = np.mgrid[0:120, 0:180] / 120.0
    rgb = np.stack([200 + 50 * np.sin(cols * 9), 80 + 60 * rows, 30 + 20 * np.cos(rows * 7)], -1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


REFERENCES = {
    "warm stripes": _warm_stripes,
    "volcano at night": lambda: render_scene("a volcano at night", width=180, height=120,
                                             seed=2),
    "teal grain": lambda: np.clip(np.random.default_rng(7).normal(0, 25, (90, 150, 3))
                                  + np.array([20, 130, 140]), 0, 255).astype(np.uint8),
}


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("prompt", ["a lake below snowy mountains", "mandelbrot",
                                    "a tropical island"])
@pytest.mark.parametrize("reference", sorted(REFERENCES))
def test_histogram_moves_toward_the_reference_as_strength_rises(prompt: str,
                                                                reference: str) -> None:
    ref = REFERENCES[reference]()
    distances = [histogram_distance(render(prompt, seed=1, style=StyleSource(ref, s), **SMALL),
                                    ref) for s in STRENGTHS]
    assert decreasing(distances), distances
    assert distances[-1] < 0.5 * distances[0], distances


def test_the_library_api_moves_the_histogram_and_records_the_reference(
        engine_model: Spec2Fractal) -> None:
    ref = REFERENCES["warm stripes"]()
    outputs = [engine_model.generate_from_text("a lake below snowy mountains", seed=4,
                                               style_image=_png(ref), style_strength=s,
                                               **SMALL) for s in STRENGTHS]
    distances = [histogram_distance(np.asarray(out), ref) for out in outputs]
    assert decreasing(distances), distances
    record = read_record(outputs[-1])
    assert record.style_reference["strength"] == 1.0 and record.style_reference["mode"] == "style"


def test_strength_zero_is_exactly_the_render_without_a_reference(
        engine_model: Spec2Fractal) -> None:
    plain = engine_model.generate_from_text("a volcano", seed=3, **SMALL)
    for mode in ("style", "composition", "both"):
        zero = engine_model.generate_from_text("a volcano", seed=3, style_strength=0.0,
                                               style_image=_png(_warm_stripes()),
                                               style_mode=mode, **SMALL)
        assert np.array_equal(np.asarray(plain), np.asarray(zero)), mode
    source = Image.fromarray(render_scene("a lake", width=96, height=64, seed=1))
    plain_image = engine_model.generate_from_image(source, seed=2)
    zero_image = engine_model.generate_from_image(source, seed=2, style_strength=0.0,
                                                  style_image=_png(_warm_stripes()))
    assert np.array_equal(np.asarray(plain_image), np.asarray(zero_image))


def test_deterministic_for_a_seed_and_the_grain_depends_on_it() -> None:
    ref = REFERENCES["teal grain"]()
    first = render("a lake", seed=5, style=StyleSource(ref, 0.8), **SMALL)
    assert np.array_equal(first, render("a lake", seed=5, style=StyleSource(ref, 0.8), **SMALL))
    # A smooth picture lacks the reference's grain: it is added as noise drawn from the seed.
    picture = np.repeat(np.linspace(40, 200, 96, dtype=np.uint8)[None, :, None], 64, 0)
    picture = np.repeat(picture, 3, 2)
    assert not np.array_equal(transfer_style(picture, StyleSource(ref, 0.8), seed=5),
                              transfer_style(picture, StyleSource(ref, 0.8), seed=6))


def _fine_contrast(image: np.ndarray) -> float:
    """The finest octave's share of the picture's contrast (so the palette's own change of
    overall contrast does not count)."""
    from fractal.engine.structure import bands, octave_count, to_lab

    lightness = to_lab(image)[..., 0]
    return float(bands(lightness, octave_count(*lightness.shape))[-1].std() / lightness.std())


def test_texture_follows_the_reference_grain_and_smoothness() -> None:
    picture = render_scene("a lake below snowy mountains", seed=1, width=192, height=128)
    grainy = transfer_style(picture, StyleSource(REFERENCES["teal grain"](), 1.0), seed=1)
    smooth = transfer_style(picture, StyleSource(_warm_stripes(), 1.0), seed=1)
    assert _fine_contrast(grainy) > _fine_contrast(picture) > _fine_contrast(smooth)


def test_palette_takes_the_reference_colour_statistics() -> None:
    from fractal.engine.structure import to_lab

    ref = REFERENCES["volcano at night"]()
    picture = render_scene("a tropical island", seed=1, **SMALL)
    out = transfer_style(picture, StyleSource(ref, 1.0), seed=1)
    ref_mean = to_lab(ref).reshape(-1, 3).mean(axis=0)
    before = np.abs(to_lab(picture).reshape(-1, 3).mean(axis=0) - ref_mean)
    after = np.abs(to_lab(out).reshape(-1, 3).mean(axis=0) - ref_mean)
    assert (after < before).all() and after.max() < 8, (before, after)


def test_composition_mode_follows_the_reference_layout() -> None:
    # A reference bright on the left, dark on the right: the picture's layout follows it.
    ref = np.zeros((64, 96, 3), np.uint8)
    ref[:, :48] = 230
    plain = render("a lake below snowy mountains", seed=1, **SMALL).astype(np.float32)
    styled = render("a lake below snowy mountains", seed=1,
                    style=StyleSource(ref, 1.0, mode="composition"), **SMALL).astype(np.float32)

    def left_minus_right(image: np.ndarray) -> float:
        return float(image[:, :48].mean() - image[:, 48:].mean())

    assert left_minus_right(styled) > left_minus_right(plain) + 20
    # Composition only: the colours stay the scene's own (no palette transfer) …
    assert abs(styled[..., 2].mean() - plain[..., 2].mean()) < 25
    # … and "both" adds the palette on top.
    both = render("a lake below snowy mountains", seed=1,
                  style=StyleSource(ref, 1.0, mode="both"), **SMALL)
    assert histogram_distance(both, ref) < histogram_distance(styled.astype(np.uint8), ref)


def test_image_and_hybrid_renders_take_the_reference(engine_model: Spec2Fractal) -> None:
    ref = REFERENCES["volcano at night"]()
    source = render_scene("a meadow with flowers", width=96, height=64, seed=1)
    distances = [histogram_distance(stylise(source, seed=1, style=StyleSource(ref, s)), ref)
                 for s in STRENGTHS]
    assert decreasing(distances), distances
    hybrid = [engine_model.generate_from_image(Image.fromarray(source), prompt="a lake",
                                               seed=1, style_image=_png(ref), style_strength=s)
              for s in (0.0, 1.0)]
    assert histogram_distance(np.asarray(hybrid[1]), ref) \
        < histogram_distance(np.asarray(hybrid[0]), ref)


def test_progress_reaches_the_end_with_a_reference(engine_model: Spec2Fractal) -> None:
    steps: list[tuple[int, int]] = []
    engine_model.generate_from_text(
        "a lake", seed=1, style_image=_png(_warm_stripes()), style="Impressionist",
        on_progress=lambda step, total, *_: steps.append((step, total)), **SMALL)
    assert steps and steps[-1][0] == steps[-1][1]
    assert [s for s, _ in steps] == sorted(s for s, _ in steps)
