"""The library over a real (tiny, random-weight) diffusers pipeline loaded from a folder."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fractal import (
    GenerationCancelled,
    GenerationRequest,
    InvalidRequestError,
    ModelLoadError,
    Spec2Fractal,
    image_to_data_url,
    read_record,
)

FAST = {"steps": 3, "seed": 7}


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


def test_text_to_image_uses_the_models_native_size(sd_model: Spec2Fractal) -> None:
    image = sd_model.generate_from_text("a serene lake", **FAST)
    assert isinstance(image, Image.Image)
    assert image.size == (64, 64)  # the tiny unet's sample_size 32 × vae scale 2
    assert image.mode == "RGB"


def test_explicit_size_is_honoured(sd_model: Spec2Fractal) -> None:
    image = sd_model.generate_from_text("a lake", width=96, height=64, **FAST)
    assert image.size == (96, 64)


def test_same_seed_same_pixels_and_different_seed_differs(sd_model: Spec2Fractal) -> None:
    first = sd_model.generate_from_text("a lake", steps=3, seed=11)
    again = sd_model.generate_from_text("a lake", steps=3, seed=11)
    other = sd_model.generate_from_text("a lake", steps=3, seed=12)
    assert np.array_equal(pixels(first), pixels(again))
    assert np.abs(pixels(first) - pixels(other)).mean() > 1


def test_image_k_of_a_batch_matches_its_seed_rendered_alone(sd_model: Spec2Fractal) -> None:
    batch = sd_model.generate_from_text("mountains", steps=3, seed=100, n=3)
    assert isinstance(batch, list) and len(batch) == 3
    for k, image in enumerate(batch):
        alone = sd_model.generate_from_text("mountains", steps=3, seed=100 + k)
        # Batched and single passes sum floating point in different orders.
        assert np.abs(pixels(image) - pixels(alone)).max() <= 1
        record = read_record(image)
        assert record is not None and record.seed == 100 + k and record.index == k


def test_image_to_image_shares_weights_with_text_to_image(sd_model: Spec2Fractal) -> None:
    source = sd_model.generate_from_text("a lake", **FAST)
    result = sd_model.generate_from_image(source, "a stormy lake", strength=0.5, **FAST)
    backend = sd_model.backend
    assert backend.image_pipeline.unet is backend.text_pipeline.unet
    assert backend.image_pipeline.vae is backend.text_pipeline.vae
    assert backend.image_pipeline.text_encoder is backend.text_pipeline.text_encoder
    assert result.size == source.size
    assert read_record(result).input_type == "hybrid"


def test_image_to_image_accepts_path_and_bytes(sd_model: Spec2Fractal, tmp_path: Path) -> None:
    source = Image.new("RGB", (80, 48), (200, 40, 40))
    path = tmp_path / "in.png"
    source.save(path)
    from_path = sd_model.generate_from_image(path, strength=0.5, **FAST)
    from_bytes = sd_model.generate_from_image(path.read_bytes(), strength=0.5, **FAST)
    assert np.array_equal(pixels(from_path), pixels(from_bytes))
    assert from_path.size[0] % 8 == 0 and from_path.size[1] % 8 == 0
    assert read_record(from_path).input_type == "image"


def test_strength_zero_returns_the_source(sd_model: Spec2Fractal) -> None:
    source = Image.new("RGB", (64, 64), (10, 120, 200))
    result = sd_model.generate_from_image(source, strength=0.0, **FAST)
    assert np.array_equal(pixels(result), pixels(source))


def test_generate_takes_a_plain_json_request(sd_model: Spec2Fractal) -> None:
    source = Image.new("RGB", (64, 64), (10, 120, 200))
    request = GenerationRequest(input_type="hybrid", prompt="a lake", image=image_to_data_url(
        source), strength=0.4, steps=3, seed=5, n=2)
    rebuilt = GenerationRequest.from_json(request.to_json())
    assert rebuilt == request
    images = sd_model.generate(rebuilt.to_dict())
    assert len(images) == 2


def test_schedulers_swap_and_record_their_name(sd_model: Spec2Fractal) -> None:
    euler = sd_model.generate_from_text("a lake", scheduler="euler_a", **FAST)
    dpm = sd_model.generate_from_text("a lake", scheduler="DPM++ 2M Karras", **FAST)
    default = sd_model.generate_from_text("a lake", **FAST)
    assert "Sampler: Euler a" in euler.info["parameters"]
    assert "Sampler: DPM++ 2M Karras" in dpm.info["parameters"]
    assert "Sampler: Euler," in default.info["parameters"]


def test_unknown_scheduler_lists_the_valid_ones(sd_model: Spec2Fractal) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        sd_model.generate_from_text("a lake", scheduler="warp_drive", **FAST)
    assert caught.value.argument == "scheduler"
    assert "warp_drive" in str(caught.value) and "dpmpp_2m_karras" in str(caught.value)


def test_progress_reports_every_step_with_a_preview(sd_model: Spec2Fractal) -> None:
    seen: list[tuple[int, int, Image.Image | None]] = []
    sd_model.generate_from_text("a lake", steps=4, seed=1,
                                on_progress=lambda s, t, p: seen.append((s, t, p)))
    assert [(step, total) for step, total, _ in seen] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert all(isinstance(preview, Image.Image) for _, _, preview in seen)


def test_cancel_stops_between_steps(sd_model: Spec2Fractal) -> None:
    cancel = threading.Event()
    steps: list[int] = []

    def on_progress(step: int, total: int, preview: Image.Image | None) -> None:
        steps.append(step)
        if step == 2:
            cancel.set()

    with pytest.raises(GenerationCancelled) as caught:
        sd_model.generate_from_text("a lake", steps=10, seed=1, on_progress=on_progress,
                                    cancel=cancel)
    assert steps == [1, 2]
    assert caught.value.step == 3 and caught.value.total == 10
    # The instance still works after a cancelled render.
    assert sd_model.generate_from_text("a lake", **FAST).size == (64, 64)


def test_record_holds_every_parameter(sd_model: Spec2Fractal, tmp_path: Path) -> None:
    image = sd_model.generate_from_text(
        "a lake", negative_prompt="blurry", steps=3, guidance=6.5, seed=42,
        style="Watercolor", lighting="golden hour", colors=["#ff0000", "navy"], texture=0.9,
    )
    text = image.info["parameters"]
    prompt_line, negative_line, details = text.split("\n")
    assert prompt_line.startswith("a lake, watercolor painting")
    assert "golden hour" in prompt_line and "red" in prompt_line and "navy" in prompt_line
    assert "intricate" in prompt_line
    assert negative_line.startswith("Negative prompt: blurry, ")
    for part in ("Steps: 3", "Sampler: Euler", "CFG scale: 6.5", "Seed: 42", "Size: 64x64",
                 "Model: tiny-sd", "Style: Watercolor"):
        assert part in details
    record = read_record(image)
    assert record.user_prompt == "a lake" and record.colors == ["#ff0000", "navy"]
    assert {"diffusers", "torch", "spec2fractal"} <= set(record.versions)
    # A plain save keeps both chunks.
    image.save(tmp_path / "out.png")
    reopened = Image.open(tmp_path / "out.png")
    assert reopened.info["parameters"] == text
    assert read_record(reopened) == record


def test_style_defaults_apply_but_the_request_wins(sd_model: Spec2Fractal) -> None:
    image = sd_model.generate_from_text("a city", style="cyberpunk", **FAST)
    record = read_record(image)
    assert record.style == "Cyberpunk" and record.lighting == "night"
    assert "neon" in record.prompt
    explicit = sd_model.generate_from_text("a city", style="cyberpunk", lighting="noon", **FAST)
    assert read_record(explicit).lighting == "noon"


def test_random_seed_is_drawn_and_reported(sd_model: Spec2Fractal) -> None:
    first = read_record(sd_model.generate_from_text("a lake", steps=2))
    second = read_record(sd_model.generate_from_text("a lake", steps=2))
    assert first.seed != second.seed
    assert 0 <= first.seed < 2**32


def test_request_names_the_model_as_loaded_or_as_recorded(
        sd_model: Spec2Fractal, tiny_sd: Path) -> None:
    for name in (str(tiny_sd), "tiny-sd"):
        assert sd_model.generate({"prompt": "a lake", "model": name, "steps": 2})
    with pytest.raises(InvalidRequestError, match="model"):
        sd_model.generate({"prompt": "a lake", "model": "fractal", "steps": 2})


def test_sdxl_shaped_pipeline_routes_through_the_same_path(tiny_sdxl: Path) -> None:
    model = Spec2Fractal(str(tiny_sdxl))
    assert type(model.backend.text_pipeline).__name__ == "StableDiffusionXLPipeline"
    assert model.defaults.guidance == 5.0
    image = model.generate_from_text("a lake", steps=2, seed=3)
    again = model.generate_from_image(image, strength=0.5, steps=2, seed=3)
    assert type(model.backend.image_pipeline).__name__ == "StableDiffusionXLImg2ImgPipeline"
    assert model.backend.image_pipeline.unet is model.backend.text_pipeline.unet
    assert again.size == image.size


def test_pickled_weights_are_refused(tmp_path: Path) -> None:
    from tests.tiny_models import build_pickled_sd

    folder = build_pickled_sd(tmp_path / "pickled", tmp_path)
    assert list(folder.rglob("*.bin"))
    with pytest.raises(ModelLoadError, match="safetensors"):
        Spec2Fractal(str(folder))


def test_missing_model_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        Spec2Fractal(str(tmp_path / "nope"))


def test_unknown_hub_id_fails_offline_without_a_hang() -> None:
    with pytest.raises(ModelLoadError, match="could not load"):
        Spec2Fractal("nobody/no-such-model-anywhere")
