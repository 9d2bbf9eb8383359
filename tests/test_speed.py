"""Speed options and memory modes (fractal.backends.speed) on the tiny SD pipeline, CPU.

Each option must render the pixels of the plain model: exactly for the placement and
compile (the "eager" and "aot_eager" backends run the same kernels), within a stated
tolerance where the arithmetic changes (fused QKV: one matmul instead of three; NHWC
convolutions): at most TOLERANCE levels of 255 on any channel.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from fractal import InvalidRequestError, Spec2Fractal, read_record
from fractal.backends.speed import SpeedOptions, choose_offload

FAST = {"prompt": "a lighthouse at dusk", "steps": 3, "seed": 11, "width": 64, "height": 64}
TOLERANCE = 2  # levels of 255; measured: 0-1 for fuse_qkv and channels_last


def pixels(model: Spec2Fractal, **overrides) -> np.ndarray:
    return np.asarray(model.generate_from_text(**{**FAST, **overrides})).astype(np.int16)


@pytest.fixture(scope="module")
def plain(sd_model: Spec2Fractal) -> np.ndarray:
    return pixels(sd_model)


@pytest.mark.parametrize("option", [{"channels_last": True}, {"fuse_qkv": True},
                                    {"offload": "model"}, {"offload": "auto"}])
def test_each_option_renders_the_plain_pixels(tiny_sd: Path, plain: np.ndarray,
                                              option: dict) -> None:
    model = Spec2Fractal(str(tiny_sd), speed=option)
    assert np.abs(pixels(model) - plain).max() <= TOLERANCE
    speed = model.backend.speed
    key, value = next(iter(option.items()))
    if key == "offload":  # nothing to offload to on a CPU: said, not done
        assert speed["offload"] == f"{value} -> none (cpu)"
    else:
        assert speed[key] is value
    record = read_record(model.generate_from_text(**FAST))
    assert record is not None and record.speed is not None
    assert record.speed["dtype"] == "float32"


def test_a_plain_model_records_no_speed_but_shows_its_options(sd_model: Spec2Fractal) -> None:
    assert read_record(sd_model.generate_from_text(**FAST)).speed is None
    speed = sd_model.backend.speed
    assert speed["compile"] is None and speed["offload"] == "none"
    assert json.dumps(speed)  # GET /models shows it as it is


def test_compile_same_pixels_and_no_recompilation_at_the_same_size(
        tiny_sd: Path, plain: np.ndarray) -> None:
    model = Spec2Fractal(str(tiny_sd), speed={"compile": "eager", "warmup": [[64, 64]]})
    counter = model.backend.compiler
    compiled = counter.graphs
    assert compiled > 0 and counter.after_warmup == 0  # the warm-up compiled it all
    assert np.array_equal(pixels(model), plain)
    pixels(model, seed=12)
    assert counter.graphs == compiled and counter.after_warmup == 0
    assert model.backend.speed["compile"] == "eager"
    # A new size may compile again (once: then its shapes are dynamic): counted, not hidden.
    pixels(model, width=96)
    assert counter.after_warmup == counter.graphs - compiled


def test_inductor_compiles_real_kernels_within_tolerance_and_once(
        tiny_sd: Path, plain: np.ndarray) -> None:
    """The GPU's backend, here generating C++ for the CPU: other kernels, so other rounding
    (measured: at most 1 level of 255), and no recompilation at the warmed size."""
    model = Spec2Fractal(str(tiny_sd), speed={"compile": "inductor", "warmup": [[64, 64]]})
    counter = model.backend.compiler
    compiled = counter.graphs
    assert compiled > 0
    assert np.abs(pixels(model) - plain).max() <= TOLERANCE
    pixels(model, seed=12, prompt="another prompt")
    assert counter.graphs == compiled and counter.after_warmup == 0


def test_fused_qkv_refuses_loras(tiny_sd: Path) -> None:
    model = Spec2Fractal(str(tiny_sd), speed={"fuse_qkv": True})
    with pytest.raises(InvalidRequestError) as caught:
        model.generate_from_text(**FAST, loras=[{"name": "ink", "weight": 0.5}])
    assert caught.value.argument == "loras"


def test_fused_qkv_refuses_an_ip_adapter(tiny_sd: Path, tiny_adapters: dict[str, Path]) -> None:
    # Fusing would replace the IP-Adapter's attention processors: style references would
    # silently stop working.
    from tests.tiny_adapters import adapters_config

    with pytest.raises(InvalidRequestError) as caught:
        Spec2Fractal(str(tiny_sd), adapters=adapters_config(tiny_adapters),
                     speed={"fuse_qkv": True})
    assert caught.value.argument == "fuse_qkv"


def test_step_cache_is_refused_for_a_unet(tiny_sd: Path) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        Spec2Fractal(str(tiny_sd), speed={"step_cache": "first_block"})
    assert caught.value.argument == "step_cache"


@pytest.mark.parametrize(("speed", "argument"), [
    ({"compile": "warp-drive"}, "compile"), ({"compile": 1}, "compile"),
    ({"compile": ["inductor"]}, "compile"),
    ({"channels_last": "yes"}, "channels_last"), ({"fuse_qkv": 1}, "fuse_qkv"),
    ({"fuse_qkv": None}, "fuse_qkv"),
    ({"vae": ""}, "vae"), ({"vae": 3}, "vae"), ({"vae": {"a": "b"}}, "vae"),
    ({"step_cache": "middle"}, "step_cache"), ({"step_cache": ["first_block"]}, "step_cache"),
    ({"step_cache_threshold": math.nan}, "step_cache_threshold"),
    ({"step_cache_threshold": math.inf}, "step_cache_threshold"),
    ({"step_cache_threshold": 0}, "step_cache_threshold"),
    ({"step_cache_threshold": True}, "step_cache_threshold"),
    ({"offload": "gpu"}, "offload"), ({"offload": "\ud800"}, "offload"),
    ({"offload": ["auto"]}, "offload"), ({"offload": {"x": {"y": {}}}}, "offload"),
    ({"warmup": [[64, 64]] * 17}, "warmup"), ({"warmup": [[64, math.nan]]}, "warmup"),
    ({"warmup": [[64.0, 64]]}, "warmup"), ({"warmup": "64x64"}, "warmup"),
    ({"warmup": [[4, 64]]}, "warmup"), ({"warmup": [[64, 64, 64]]}, "warmup"),
    ({"warmup": [[True, 64]]}, "warmup"),
    ({"turbo": True}, "speed"), ({"\ud800": True}, "speed"),
])
def test_bad_options_name_the_option(speed: dict, argument: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        SpeedOptions.parse(speed)
    assert caught.value.argument == argument


def test_bad_options_are_refused_before_loading(tiny_sd: Path) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        Spec2Fractal(str(tiny_sd), speed={"offload": "all"})
    assert caught.value.argument == "offload"
    with pytest.raises(InvalidRequestError) as caught:
        Spec2Fractal(str(tiny_sd), speed=["compile"])
    assert caught.value.argument == "speed"


def test_missing_vae_folder_is_a_load_error(tiny_sd: Path, tmp_path: Path) -> None:
    from fractal import ModelLoadError

    with pytest.raises(ModelLoadError):
        Spec2Fractal(str(tiny_sd), speed={"vae": str(tmp_path / "nowhere")})


def test_vae_override_loads_that_vae(tiny_sd: Path, plain: np.ndarray) -> None:
    # The model's own VAE, from its folder, as an override: the same pixels, and recorded.
    model = Spec2Fractal(str(tiny_sd), speed={"vae": str(tiny_sd / "vae")})
    assert np.array_equal(pixels(model), plain)
    assert read_record(model.generate_from_text(**FAST)).speed["vae"] == str(tiny_sd / "vae")


def test_auto_offload_choice() -> None:
    gib = 2 ** 30
    assert choose_offload(weights=7 * gib, largest=5 * gib, free=80 * gib) == "none"
    assert choose_offload(weights=7 * gib, largest=5 * gib, free=10 * gib) == "model"
    assert choose_offload(weights=7 * gib, largest=5 * gib, free=6 * gib) == "sequential"


def test_offloaded_weights_the_memory_guard_counts(sd_model: Spec2Fractal) -> None:
    # Offloaded (on a GPU), a pipeline holds one component, or one layer, on the device at a
    # time: the memory guard counts that, not every weight (fractal.guards).
    from fractal.backends.speed import resident_weight_bytes
    from fractal.memory import profile_of

    pipeline = sd_model.backend.text_pipeline
    everything = profile_of(pipeline).weight_bytes
    component = resident_weight_bytes(pipeline, "model")
    layer = resident_weight_bytes(pipeline, "sequential")
    assert 0 < layer < component < everything
    assert component == max(sum(t.numel() * t.element_size() for t in m.state_dict().values())
                            for m in (pipeline.unet, pipeline.vae, pipeline.text_encoder))
    assert resident_weight_bytes(pipeline, "none") is None
