"""The default model: the built-in engine behind Spec2Fractal, as the product README uses it."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fractal import GenerationCancelled, GenerationRequest, Spec2Fractal, read_record

SMALL = {"width": 96, "height": 64}


def test_the_product_readme_snippet_runs_as_written(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (120, 80), (30, 90, 160)).save("input.jpg")
    from spec2fractal import Spec2Fractal as Facade

    model = Facade()
    image = model.generate_from_text("A serene lake surrounded by mountains during sunrise")
    image.save("output.png")
    transformed = model.generate_from_image(Image.open("input.jpg"), style="Impressionist")
    assert Image.open("output.png").size == (1024, 768)
    assert "A serene lake" in Image.open("output.png").info["parameters"]
    assert transformed.size == (120, 80)
    assert read_record(transformed).style == "Impressionist"


def test_both_imports_are_the_same_class() -> None:
    import fractal
    import spec2fractal

    # The library's class, subclassed only to take `server=` (renders through a service).
    assert issubclass(spec2fractal.Spec2Fractal, fractal.Spec2Fractal)
    assert isinstance(spec2fractal.Spec2Fractal(), fractal.Spec2Fractal)
    assert set(fractal.__all__) <= set(dir(spec2fractal))


def test_engine_is_deterministic_and_seed_dependent(engine_model: Spec2Fractal) -> None:
    first = engine_model.generate_from_text("a volcano", seed=3, **SMALL)
    again = engine_model.generate_from_text("a volcano", seed=3, **SMALL)
    other = engine_model.generate_from_text("a volcano", seed=4, **SMALL)
    assert np.array_equal(np.asarray(first), np.asarray(again))
    assert not np.array_equal(np.asarray(first), np.asarray(other))


def test_engine_batch_image_k_is_seed_plus_k(engine_model: Spec2Fractal) -> None:
    batch = engine_model.generate_from_text("a forest", seed=50, n=3, **SMALL)
    for k, image in enumerate(batch):
        alone = engine_model.generate_from_text("a forest", seed=50 + k, **SMALL)
        assert np.array_equal(np.asarray(image), np.asarray(alone))


def test_engine_honours_size_and_palette(engine_model: Spec2Fractal) -> None:
    plain = engine_model.generate_from_text("mandelbrot", seed=1, width=200, height=120)
    palette = [(255, 0, 0), (0, 0, 255)]
    coloured = engine_model.generate_from_text("mandelbrot", seed=1, width=200, height=120,
                                               colors=["red", "#0000ff"])
    assert coloured.size == (200, 120)

    def distance_to_palette(image: Image.Image) -> float:
        pixels = np.asarray(image).reshape(-1, 1, 3).astype(np.float32)
        centres = np.array(palette, dtype=np.float32).reshape(1, -1, 3)
        return float(np.linalg.norm(pixels - centres, axis=2).min(axis=1).mean())

    assert distance_to_palette(coloured) < 0.6 * distance_to_palette(plain)


def test_engine_progress_is_monotonic_and_cancellable(engine_model: Spec2Fractal) -> None:
    seen: list[tuple[int, int]] = []
    engine_model.generate_from_text("a lake", seed=1, n=2, on_progress=lambda s, t, p:
                                    seen.append((s, t)), **SMALL)
    assert seen and seen[-1] == (20, 20)
    assert [s for s, _ in seen] == sorted(s for s, _ in seen)

    cancel = threading.Event()

    def stop_after_first(step: int, total: int, preview: Image.Image | None) -> None:
        cancel.set()

    with pytest.raises(GenerationCancelled):
        engine_model.generate_from_text("a lake", seed=1, n=2, on_progress=stop_after_first,
                                        cancel=cancel, **SMALL)
    with pytest.raises(GenerationCancelled):
        engine_model.generate_from_text("a lake", seed=1, cancel=lambda: True, **SMALL)


def test_engine_image_to_image_strength_and_styles(engine_model: Spec2Fractal) -> None:
    rng = np.random.default_rng(0)
    source = Image.fromarray(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8))
    kept = engine_model.generate_from_image(source, style="Watercolor", strength=0.0, seed=1)
    assert np.abs(np.asarray(kept).astype(int) - np.asarray(source).astype(int)).max() <= 1
    painted = engine_model.generate_from_image(source, style="Pixel art", strength=1.0, seed=1)
    assert painted.size == source.size
    assert not np.array_equal(np.asarray(painted), np.asarray(source))
    hybrid = engine_model.generate_from_image(source, "a sunset sea", strength=0.5, seed=1)
    assert read_record(hybrid).input_type == "hybrid"


def test_engine_records_are_json_and_parameters(engine_model: Spec2Fractal) -> None:
    image = engine_model.generate_from_text("a lake", seed=9, lighting="night", texture=0.2,
                                            **SMALL)
    record = json.loads(image.info["spec2fractal"])
    assert record["seed"] == 9 and record["model"] == "fractal"
    assert record["lighting"] == "night" and record["texture"] == 0.2
    assert "Sampler: Fractal" in image.info["parameters"]


def test_generate_with_a_dict_request(engine_model: Spec2Fractal) -> None:
    images = engine_model.generate({"input_type": "text", "prompt": "dragon curve", "n": 2,
                                    "seed": 1, **SMALL})
    assert len(images) == 2
    request = GenerationRequest(prompt="julia", seed=2, **SMALL)
    assert json.loads(request.to_json())["prompt"] == "julia"
