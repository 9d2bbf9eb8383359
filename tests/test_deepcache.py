"""DeepCache (fractal.backends.deepcache) on the tiny SD pipeline, CPU.

Which blocks compute is counted with torch forward pre-hooks on the first resnet inside each
block (a skipped block's resnets never run), and the UNet's calls with one on the UNet.

Quality: the tiny UNet has random weights, so "close to the uncached render" is a weak check.
It shows the reused features are the same render's, a few steps old; it says nothing of a
trained model's pictures (the paper's CLIP scores are for that: docs/deploy.md). Measured at
8 steps, interval 3: 1.3 levels of 255 mean and 9 max from the plain render, where two seeds
differ by 42 mean; allowed: at most MEAN_TOLERANCE mean, and more than 0 (it is a cache).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from fractal import InvalidRequestError, Spec2Fractal, image_to_data_url, read_record
from fractal.backends.deepcache import DeepCache
from fractal.backends.speed import SpeedOptions, apply_speed, describe, step_cache_of

FAST = {"prompt": "a lighthouse at dusk", "steps": 8, "seed": 11, "width": 64, "height": 64}
DEEP = {"step_cache": "deep", "step_cache_interval": 3}
MEAN_TOLERANCE = 3.0  # levels of 255, mean over the image; measured 1.3
TILES = {"tile_size": 48, "tile_overlap": 8}  # 72×64 refines in 4 tiles (tests/test_hires.py)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


def render(model: Spec2Fractal, **overrides: object) -> np.ndarray:
    return pixels(model.generate_from_text(**{**FAST, **overrides}))  # type: ignore[arg-type]


@contextmanager
def counting(model: Spec2Fractal) -> Iterator[dict[str, list[int]]]:
    """For each block, the UNet calls (0-based) in which it computed."""
    unet = model.backend.text_pipeline.unet
    blocks = {"down_blocks[0]": unet.down_blocks[0], "down_blocks[1]": unet.down_blocks[1],
              "mid_block": unet.mid_block, "up_blocks[0]": unet.up_blocks[0],
              "up_blocks[1]": unet.up_blocks[1]}
    seen: dict[str, list[int]] = {name: [] for name in blocks}
    calls = [-1]

    def on_call(*_: object) -> None:
        calls[0] += 1

    handles = [unet.register_forward_pre_hook(on_call)]
    for name, block in blocks.items():
        handles.append(block.resnets[0].register_forward_pre_hook(
            lambda *_, name=name: seen[name].append(calls[0])))
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


DEEP_BLOCKS = ("down_blocks[1]", "mid_block", "up_blocks[0]")
SHALLOW_BLOCKS = ("down_blocks[0]", "up_blocks[1]")


@pytest.fixture(scope="module")
def cached(tiny_sd: Path) -> Spec2Fractal:
    return Spec2Fractal(str(tiny_sd), speed=DEEP)


@pytest.fixture(scope="module")
def plain(sd_model: Spec2Fractal) -> np.ndarray:
    return render(sd_model)


def test_deep_blocks_run_on_full_steps_only(cached: Spec2Fractal) -> None:
    with counting(cached) as seen:
        render(cached)
    for name in DEEP_BLOCKS:  # 8 steps, interval 3: full steps 0, 3 and 6
        assert seen[name] == [0, 3, 6], name
    for name in SHALLOW_BLOCKS:
        assert seen[name] == list(range(8)), name


def test_the_cache_changes_the_render_a_little(cached: Spec2Fractal,
                                               plain: np.ndarray) -> None:
    difference = np.abs(render(cached) - plain)
    assert difference.max() > 0  # reused features: not the plain pixels
    assert difference.mean() <= MEAN_TOLERANCE


def test_without_a_reused_step_the_pixels_are_the_plain_ones(
        cached: Spec2Fractal, sd_model: Spec2Fractal, plain: np.ndarray) -> None:
    # One step: the first call of a render is always full.
    assert np.array_equal(render(cached, steps=1), render(sd_model, steps=1))
    # Disabled (as the tiled refine runs it): every call full, the plain pixels.
    cache = DeepCache.of(cached.backend.text_pipeline.unet)
    with cache.disabled(), counting(cached) as seen:
        assert np.array_equal(render(cached), plain)
    assert seen["mid_block"] == list(range(8))


def test_each_render_starts_fresh(cached: Spec2Fractal) -> None:
    first = render(cached)
    assert np.array_equal(render(cached), first)  # nothing kept from the render before
    with counting(cached) as seen:  # another size: full at its own first step
        small = cached.generate_from_text(**{**FAST, "width": 48, "height": 40})
    assert small.size == (48, 40) and seen["mid_block"] == [0, 3, 6]
    assert np.array_equal(render(cached), first)
    batch = cached.generate_from_text(**{**FAST, "n": 2})  # another batch: works too
    assert np.abs(pixels(batch[0]) - first).max() <= 2


def test_auto_and_the_warm_up(tiny_sd: Path, cached: Spec2Fractal) -> None:
    # "auto" takes DeepCache on a UNet, at the default interval (3); the warm-up's render at
    # the same size leaves nothing behind: the first request equals a cold model's.
    warmed = Spec2Fractal(str(tiny_sd), speed={"step_cache": "auto", "warmup": [[64, 64]]})
    assert warmed.backend.speed["step_cache"] == "auto -> deep"
    assert warmed.backend.speed["step_cache_interval"] == 3
    assert np.array_equal(render(warmed), render(cached))


def test_the_record_and_the_model_show_the_cache(cached: Spec2Fractal) -> None:
    record = read_record(cached.generate_from_text(**{**FAST, "steps": 2}))
    assert record is not None and record.speed is not None
    for speed in (record.speed, cached.backend.speed):
        assert speed["step_cache"] == "deep" and speed["step_cache_interval"] == 3
        assert speed["step_cache_threshold"] is None  # First Block Cache's, not this one's


@pytest.mark.parametrize("interval", [True, 1, 11, 3.0, "3", None, -2])
def test_bad_intervals_name_the_option(interval: object) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        SpeedOptions.parse({"step_cache": "deep", "step_cache_interval": interval})
    assert caught.value.argument == "step_cache_interval"


@pytest.mark.parametrize("step_cache", ["middle", True, ["deep"], "DEEP"])
def test_bad_step_caches_name_the_option(step_cache: object) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        SpeedOptions.parse({"step_cache": step_cache})
    assert caught.value.argument == "step_cache"


def test_first_block_is_refused_on_a_unet(tiny_sd: Path) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        Spec2Fractal(str(tiny_sd), speed={"step_cache": "first_block"})
    assert caught.value.argument == "step_cache" and "step_cache=deep" in str(caught.value)


def test_deep_is_refused_on_a_transformer_which_auto_gives_first_block() -> None:
    from diffusers import FluxTransformer2DModel

    def flux() -> SimpleNamespace:  # apply_speed reads only the pipeline's denoiser here
        return SimpleNamespace(transformer=FluxTransformer2DModel(
            patch_size=1, in_channels=4, num_layers=1, num_single_layers=1,
            attention_head_dim=8, num_attention_heads=2, joint_attention_dim=16,
            pooled_projection_dim=16, axes_dims_rope=(2, 2, 4)))

    with pytest.raises(InvalidRequestError) as caught:
        apply_speed(flux(), SpeedOptions.parse({"step_cache": "deep"}), "tiny-flux")
    assert caught.value.argument == "step_cache" and "first_block" in str(caught.value)
    pipeline, options = flux(), SpeedOptions.parse({"step_cache": "auto"})
    apply_speed(pipeline, options, "tiny-flux")
    assert step_cache_of(pipeline) == "first_block"
    shown = describe(options, "none", pipeline.transformer.dtype, pipeline)
    assert shown["step_cache"] == "auto -> first_block"
    assert (shown["step_cache_threshold"], shown["step_cache_interval"]) == (0.05, None)


def test_a_unet_takes_one_deep_cache_and_loses_it_whole(cached: Spec2Fractal,
                                                        plain: np.ndarray) -> None:
    unet = cached.backend.text_pipeline.unet
    with pytest.raises(ValueError, match="already"):
        DeepCache.apply(unet, 3)
    with pytest.raises(ValueError, match="interval"):
        DeepCache.apply(unet, 1)
    cache = DeepCache.of(unet)
    cache.remove()
    try:
        assert DeepCache.of(unet) is None and np.array_equal(render(cached), plain)
    finally:
        DeepCache.apply(unet, cache.interval)  # the module's other tests use it


def test_tiled_refine_bypasses_the_cache(tiny_sd: Path) -> None:
    # The tiled loop calls the UNet once per tile per step: there the cache must not count
    # calls as steps. With it on, every call is full and the pixels are those without it.
    source = Image.new("RGB", (72, 64), (20, 90, 160))
    arguments = {"strength": 0.5, "steps": 8, "seed": 3}
    without = Spec2Fractal(str(tiny_sd), **TILES).generate_from_image(source, "a lake",
                                                                       **arguments)
    model = Spec2Fractal(str(tiny_sd), **TILES, speed=DEEP)
    with counting(model) as seen:
        image = model.generate_from_image(source, "a lake", **arguments)
    (entry,) = read_record(image).passes
    assert entry["tiles"] == 4 and entry["steps"] == 4
    assert seen["mid_block"] == list(range(4 * 4))  # every tile of every step, in full
    assert np.array_equal(pixels(image), pixels(without))
    with counting(model) as seen:  # and the cache still works on the next plain render
        render(model)
    assert seen["mid_block"] == [0, 3, 6]


def test_a_one_tile_refine_uses_the_cache(cached: Spec2Fractal) -> None:
    # An upscale runs the tile loop even as one tile (64 px, the default tile): one UNet
    # call per step, so the cache applies.
    source = Image.new("RGB", (24, 32), (200, 60, 30))
    with counting(cached) as seen:
        image = cached.generate({"input_type": "upscale", "image": image_to_data_url(source),
                                 "scale": 2, "steps": 10, "strength": 0.6, "seed": 2})[0]
    (entry,) = read_record(image).passes
    assert (entry["kind"], entry["tiles"], entry["steps"]) == ("upscale", 1, 6)
    assert seen["mid_block"] == [0, 3] and seen["up_blocks[1]"] == list(range(6))


def test_image_to_image_with_the_cache(cached: Spec2Fractal, sd_model: Spec2Fractal) -> None:
    source = Image.new("RGB", (64, 64), (200, 120, 40))
    arguments = {"strength": 0.75, "steps": 8, "seed": 5}
    with counting(cached) as seen:
        image = cached.generate_from_image(source, "a lake", **arguments)
    assert seen["mid_block"] == [0, 3] and seen["up_blocks[1]"] == list(range(6))
    difference = np.abs(pixels(image) - pixels(sd_model.generate_from_image(
        source, "a lake", **arguments)))
    assert difference.max() > 0 and difference.mean() <= MEAN_TOLERANCE


def test_inpainting_with_the_cache(cached: Spec2Fractal) -> None:
    # diffusers' inpainting pipeline over the same UNet: cached, and outside the mask the
    # input is still kept exactly (the library pastes it back).
    source = Image.new("RGB", (64, 64), (30, 120, 200))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    with counting(cached) as seen:
        image = cached.generate_from_image(source, "a red house", mask=mask, mask_blur=0,
                                           strength=1.0, steps=8, seed=3)
    assert seen["mid_block"] == [0, 3, 6]
    assert np.array_equal(pixels(image)[:8], pixels(source)[:8])


def test_sdxl_with_the_cache(tiny_sdxl: Path) -> None:
    # SDXL's size conditioning and pooled embeddings ride on the time embedding, which the
    # UNet's own forward computes every call: the tiny SDXL UNet's deep blocks are skipped
    # as SD's are.
    model = Spec2Fractal(str(tiny_sdxl), speed=DEEP)
    with counting(model) as seen:
        image = model.generate_from_text(**FAST)
    assert seen["mid_block"] == [0, 3, 6] and seen["up_blocks[1]"] == list(range(8))
    assert image.size == (64, 64) and read_record(image).speed["step_cache"] == "deep"


def test_controlnet_with_the_cache(tiny_sd: Path, tiny_adapters: dict[str, Path],
                                   adapted_sd: Spec2Fractal) -> None:
    # The ControlNet runs every step; its residuals reach the fresh shallow skips on reused
    # steps, the deep features carry the control of the last full step.
    from tests.test_control import unit
    from tests.tiny_adapters import adapters_config

    model = Spec2Fractal(str(tiny_sd), adapters=adapters_config(tiny_adapters), speed=DEEP)
    controlled = {**FAST, "steps": 4, "control": [unit()]}
    with counting(model) as seen:
        image = model.generate_from_text(**controlled)
    assert seen["mid_block"] == [0, 3] and seen["up_blocks[1]"] == list(range(4))
    reference = adapted_sd.generate_from_text(**controlled)
    plain = adapted_sd.generate_from_text(**{**FAST, "steps": 4})
    difference = np.abs(pixels(image) - pixels(reference))
    assert difference.max() > 0 and difference.mean() <= MEAN_TOLERANCE
    # Still controlled: nearer the controlled render than the uncontrolled one.
    assert difference.mean() < np.abs(pixels(image) - pixels(plain)).mean()
