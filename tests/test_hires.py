"""Two-pass high resolution, tiled refinement and upscale plans on the diffusers backend.

The tiny pipelines' native size is 64×64; tiles of 48 px with 8 px overlap (24 and 4 latent
cells) make every size here past 48 a tiled one. Few steps: attention grows with the square
of the latent area.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fractal import (
    GenerationCancelled,
    InvalidRequestError,
    Spec2Fractal,
    image_to_data_url,
    read_record,
)

TILES = {"tile_size": 48, "tile_overlap": 8}


@pytest.fixture(scope="module")
def tiled(tiny_sd: Path) -> Spec2Fractal:
    return Spec2Fractal(str(tiny_sd), **TILES)


def kinds(image: Image.Image) -> list[str]:
    return [entry["kind"] for entry in read_record(image).passes or []]


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


def test_two_pass_exactly_when_the_size_calls_for_it(tiled: Spec2Fractal) -> None:
    # 64² native, factor 1.5: 6144 px². 72×80 = 5760 renders once; 80×80 = 6400 twice.
    once = tiled.generate({"prompt": "a lake", "width": 72, "height": 80, "steps": 2,
                           "seed": 1})[0]
    assert once.size == (72, 80) and kinds(once) == ["base"]  # one pass, its VAE tiled
    assert read_record(once).passes[0]["vae_tile"] == 64
    twice = tiled.generate({"prompt": "a lake", "width": 80, "height": 80, "steps": 2,
                            "seed": 1})[0]
    assert twice.size == (80, 80)
    base, refine = read_record(twice).passes
    assert (base["kind"], base["width"], base["height"], base["steps"]) == ("base", 64, 64, 2)
    assert (refine["kind"], refine["width"], refine["height"]) == ("refine", 80, 80)
    assert refine["strength"] == 0.35 and refine["steps"] == 1  # ceil(2 × 0.35)
    assert refine["upscaler"] == "Lanczos" and refine["tile"] == [48, 48]
    assert refine["tiles"] == 4  # 40 latent cells: tiles of 24 at 0 and 16
    assert "Hires upscale: 1.25" in twice.info["parameters"]
    assert "Hires steps: 1" in twice.info["parameters"]


def test_hires_off_renders_one_pass_at_the_size(sd_model: Spec2Fractal) -> None:
    image = sd_model.generate({"prompt": "a lake", "width": 96, "height": 96, "steps": 2,
                               "seed": 1, "hires": "off"})[0]
    assert image.size == (96, 96)
    assert kinds(image) == ["base"]  # one pass; over the 64 px tile, so its VAE tiles
    small = sd_model.generate({"prompt": "a lake", "steps": 2, "seed": 1})[0]
    assert read_record(small).passes is None  # a plain pass says nothing


def test_forced_refine_settings_are_used_and_progress_covers_every_tile(
        tiled: Spec2Fractal) -> None:
    seen: list[tuple[int, int, bool]] = []
    image = tiled.generate({"prompt": "a lake", "width": 72, "height": 64, "steps": 2,
                            "seed": 4, "hires": {"strength": 0.5, "steps": 2}},
                           on_progress=lambda s, t, p: seen.append((s, t, p is not None)))[0]
    assert image.size == (72, 64)  # 4608 px²: over native, so a forced refine applies
    _, refine = read_record(image).passes
    assert (refine["strength"], refine["steps"]) == (0.5, 2)
    total = 2 + 2 * refine["tiles"]  # base steps, then every refine step on every tile
    steps = [step for step, _, _ in seen]
    assert steps == list(range(1, total + 1)) and {t for _, t, _ in seen} == {total}
    # A preview whenever a step ends: each base step, and after the last tile of a step.
    assert [step for step, _, preview in seen if preview] == [1, 2, 2 + refine["tiles"], total]


def test_image_k_of_a_two_pass_batch_equals_its_seed_alone(tiled: Spec2Fractal) -> None:
    request = {"prompt": "hills", "width": 80, "height": 80, "steps": 2, "seed": 30}
    batch = tiled.generate({**request, "n": 2})
    for k, image in enumerate(batch):
        alone = tiled.generate({**request, "seed": 30 + k})[0]
        assert np.abs(pixels(image) - pixels(alone)).max() <= 2
        assert read_record(image).passes == read_record(alone).passes


def test_cancel_stops_between_tiles(tiled: Spec2Fractal) -> None:
    cancel = threading.Event()
    steps: list[int] = []

    def on_progress(step: int, total: int, preview: Image.Image | None) -> None:
        steps.append(step)
        if step == 2 + 2:  # the base pass's 2 steps, then 2 of the refine step's 4 tiles
            cancel.set()

    with pytest.raises(GenerationCancelled) as caught:
        tiled.generate({"prompt": "a lake", "width": 80, "height": 80, "steps": 2, "seed": 1},
                       on_progress=on_progress, cancel=cancel)
    assert steps == [1, 2, 3, 4]
    assert (caught.value.step, caught.value.total) == (5, 2 + 4)
    assert tiled.generate({"prompt": "a lake", "steps": 1, "seed": 1})[0].size == (64, 64)


@pytest.mark.parametrize(("source_size", "scale"), [((40, 32), 2), ((24, 16), 4)])
def test_upscale_returns_scale_times_the_size(tiled: Spec2Fractal, source_size: tuple[int, int],
                                              scale: int) -> None:
    source = Image.new("RGB", source_size, (200, 60, 30))
    image = tiled.generate({"input_type": "upscale", "image": image_to_data_url(source),
                            "scale": scale, "steps": 4, "seed": 2})[0]
    assert image.size == (source_size[0] * scale, source_size[1] * scale)
    (entry,) = read_record(image).passes
    assert entry["kind"] == "upscale" and entry["upscaler"] == "Lanczos"
    assert (entry["width"], entry["height"]) == image.size
    assert entry["strength"] == 0.3 and entry["steps"] == 2  # ceil(4 × 0.3)
    assert entry["tiles"] > 1 and read_record(image).scale == scale


def test_upscale_at_strength_zero_is_the_resampler_alone(sd_model: Spec2Fractal) -> None:
    source = Image.fromarray(np.random.default_rng(1).integers(0, 255, (24, 32, 3), np.uint8))
    image = sd_model.generate({"input_type": "upscale", "image": image_to_data_url(source),
                               "scale": 2, "strength": 0, "steps": 3})[0]
    expected = source.resize((64, 48), Image.Resampling.LANCZOS)
    assert np.array_equal(pixels(image), pixels(expected))
    assert read_record(image).passes[0]["steps"] == 0


def test_large_image_to_image_denoises_in_tiles(tiled: Spec2Fractal,
                                                sd_model: Spec2Fractal) -> None:
    source = Image.new("RGB", (96, 64), (20, 90, 160))
    large = tiled.generate_from_image(source, "a lake", strength=0.5, steps=2, seed=3)
    (entry,) = read_record(large).passes
    assert entry["kind"] == "refine" and entry["tiles"] == 6 and entry["steps"] == 1
    assert large.size == (96, 64)
    small = sd_model.generate_from_image(source.resize((64, 48)), strength=0.5, steps=2, seed=3)
    assert read_record(small).passes is None  # under the tile: diffusers' pipeline, as before


def test_sdxl_refines_in_tiles_with_per_tile_size_conditioning(tiny_sdxl: Path) -> None:
    model = Spec2Fractal(str(tiny_sdxl), **TILES)
    image = model.generate({"prompt": "a lake", "width": 80, "height": 80, "steps": 2,
                            "seed": 3})[0]
    assert image.size == (80, 80)
    assert kinds(image) == ["base", "refine"] and read_record(image).passes[1]["tiles"] == 4


def test_tile_settings_are_checked_and_reach_workers(tiny_sd: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from workers.model_cache import ModelCache
    from workers.settings import Settings

    for options, argument in (({"tile_size": 20}, "tile_size"),
                              ({"tile_size": 8}, "tile_size"),
                              ({"tile_size": True}, "tile_size"),
                              ({"tile_size": 64, "tile_overlap": 40}, "tile_overlap"),
                              ({"tile_overlap": -8}, "tile_overlap")):
        with pytest.raises(InvalidRequestError) as caught:
            Spec2Fractal(**options)
        assert caught.value.argument == argument
    with pytest.raises(InvalidRequestError) as caught:  # over half the model's 64 px tile
        Spec2Fractal(str(tiny_sd), tile_overlap=40)
    assert caught.value.argument == "tile_overlap"

    monkeypatch.setenv("SPEC2FRACTAL_TILE_SIZE", "32")
    monkeypatch.setenv("SPEC2FRACTAL_TILE_OVERLAP", "8")
    monkeypatch.setenv("SPEC2FRACTAL_HIRES_FACTOR", "2")
    settings = Settings()
    assert settings.model_options == {"hires_factor": 2.0, "tile_size": 32, "tile_overlap": 8,
                                       "memory_limit": None, "adapters": None, "lora_dir": None,
                                       "lora_hub": False, "dtype": None,
                                       "speed": settings.speed_options}
    for bad, named in (({"tile_size": 30}, "tile_size"), ({"hires_factor": 0.5}, "hires_factor"),
                       ({"tile_size": 512, "tile_overlap": 512}, "tile_overlap")):
        with pytest.raises(ValidationError, match=named):
            Settings(**bad)
    model = ModelCache(1, options=settings.model_options).get(str(tiny_sd))
    assert (model.backend.tile_size, model.backend.tile_overlap) == (32, 8)
    assert model.hires_factor == 2.0
