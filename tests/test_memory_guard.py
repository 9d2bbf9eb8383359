"""The memory guard: a render's peak memory is estimated before it starts, and one that
cannot fit is refused naming its size argument and the largest size that fits (a 422
through the API), never an out-of-memory error part way through."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import httpx
import pytest
from PIL import Image

from fractal import GenerationRequest, InvalidRequestError, Spec2Fractal
from fractal.memory import (
    MemoryProfile,
    device_budget,
    estimate_peak_bytes,
    largest_fitting,
    profile_of,
)
from tests.api_server import serving

MiB = 2 ** 20


@pytest.fixture(scope="module")
def profile(sd_model: Spec2Fractal) -> MemoryProfile:
    return profile_of(sd_model.backend.text_pipeline)  # type: ignore[attr-defined]


def _pass(side: int, *, tile: int | None = None, vae_tile: int | None = None,
          kind: str = "base") -> dict:
    tiles = 1 if tile is None else math.ceil(side / tile) ** 2
    return {"kind": kind, "width": side, "height": side, "steps": 4, "strength": None,
            "upscaler": None, "tiles": tiles, "tile": [tile, tile] if tile else None,
            "vae_tile": vae_tile}


def _working(profile: MemoryProfile, passes: list[dict], n: int = 1) -> float:
    """The estimate beyond the weights, which every render holds alike."""
    return estimate_peak_bytes(profile, passes, n) - 1.1 * profile.weight_bytes


def test_the_profile_reads_the_tiny_pipelines_shapes(profile: MemoryProfile) -> None:
    # tests/tiny_models.py: UNet (32, 64) with attention on its second level, VAE (32, 64).
    assert profile.vae_scale_factor == 2 and profile.latent_channels == 4
    assert profile.denoiser_channels == 32 and profile.attention == ((2, 8),)
    assert profile.decoder_channels == 64 and profile.encoder_channels == 32
    assert profile.dtype_bytes == 4 and profile.cfg
    assert 5 * MiB < profile.weight_bytes < 10 * MiB  # ~1.7 M parameters in fp32
    assert not profile.attention_quadratic  # diffusers' SDPA processors hold no scores


def test_untiled_estimate_grows_with_the_area(profile: MemoryProfile) -> None:
    small, middle, large = (_working(profile, [_pass(side)]) for side in (512, 1024, 2048))
    assert 3.8 < middle / small <= 4.01 and 3.8 < large / middle <= 4.01
    # A batch of n needs n times the working memory; the weights stay once.
    assert 3.8 < _working(profile, [_pass(1024)], n=4) / middle <= 4.01
    # Attention that holds its scores grows with the square of the latent area.
    quadratic = dataclasses.replace(profile, attention_quadratic=True)
    ratio = _working(quadratic, [_pass(2048)]) / _working(quadratic, [_pass(1024)])
    assert ratio > 12


def test_tiled_estimate_follows_the_tile_not_the_output(profile: MemoryProfile) -> None:
    tiled = {side: _working(profile, [_pass(side, tile=512, vae_tile=512)])
             for side in (512, 1024, 2048, 4096)}
    untiled_2048 = _working(profile, [_pass(2048)])
    # What still grows with the output is the latent and the image itself: small.
    assert tiled[2048] <= 1.5 * tiled[1024]
    assert tiled[2048] < untiled_2048 / 4
    assert tiled[4096] < _working(profile, [_pass(4096)]) / 10
    # The tile of the denoiser and the VAE's tile each count on their own.
    only_denoiser = _working(profile, [_pass(2048, tile=512)])
    only_vae = _working(profile, [_pass(2048, vae_tile=512)])
    assert tiled[2048] < only_denoiser < untiled_2048
    assert tiled[2048] < only_vae < untiled_2048


def test_a_render_is_as_costly_as_its_costliest_pass(profile: MemoryProfile) -> None:
    base, refine = _pass(512), _pass(2048, tile=512, vae_tile=512, kind="refine")
    assert estimate_peak_bytes(profile, [base, refine], 1) == max(
        estimate_peak_bytes(profile, [base], 1), estimate_peak_bytes(profile, [refine], 1))
    # A refine pass encodes its input too: it costs more than the same base pass.
    assert estimate_peak_bytes(profile, [_pass(1024, kind="refine")], 1) > \
        estimate_peak_bytes(profile, [_pass(1024)], 1)


def test_no_passes_means_one_plain_pass_at_the_plans_size(sd_model: Spec2Fractal,
                                                          profile: MemoryProfile) -> None:
    plan = sd_model._plan(_request(width=96, height=64), None)
    single = [{**_pass(96), "width": 96, "height": 64}]
    assert estimate_peak_bytes(profile, plan, 1) == estimate_peak_bytes(
        profile, single, 1, guidance=plan.guidance)


def _request(**fields: object) -> GenerationRequest:
    return GenerationRequest.from_dict({"prompt": "a quartz crystal", "steps": 2, "seed": 3,
                                        **fields})


def test_largest_fitting_keeps_the_aspect_and_the_multiple() -> None:
    def fits(width: int, height: int) -> bool:
        return width * height <= 600 * 300

    assert largest_fitting(2000, 1000, 8, fits) == (600, 296)
    assert largest_fitting(1000, 2000, 64, fits) == (256, 576)  # each side floored
    assert largest_fitting(512, 512, 8, lambda w, h: False) is None


@pytest.fixture(scope="module")
def guarded(tiny_sd: Path, profile: MemoryProfile) -> Spec2Fractal:
    """The tiny model allowed what a 256² render needs, a little more. Untiled (a tile as
    large as any side): tiled passes take little memory at any size, and this tests what
    is refused. One pass up to 64× the native area (512² here), as the limit was sized."""
    limit = estimate_peak_bytes(profile, [_pass(256)], 1) + MiB
    return Spec2Fractal(str(tiny_sd), memory_limit=limit, tile_size=4096, hires_factor=64)


def _largest(error: InvalidRequestError) -> tuple[int, int]:
    found = re.search(r"the largest size that fits is (\d+)x(\d+)", error.reason)
    assert found, error.reason
    return int(found.group(1)), int(found.group(2))


def test_an_impossible_size_is_refused_naming_it_and_the_largest_that_fits(
        guarded: Spec2Fractal) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        guarded.generate_from_text("a quartz crystal", width=1024, height=512, steps=2)
    error = refused.value
    assert error.argument == "width" and error.value == 1024
    assert "too large for this device" in error.reason and "allowed" in error.reason
    width, height = _largest(error)
    assert abs(width / height - 2) < 0.1 and width % 8 == height % 8 == 0  # its aspect
    assert 256 * 256 * 0.9 <= width * height <= 256 * 256 * 1.1
    # And that size renders.
    image = guarded.generate_from_text("a quartz crystal", width=width, height=height,
                                       steps=1, guidance=2.0, seed=1)
    assert image.size == (width, height)
    # A tall request names its height.
    with pytest.raises(InvalidRequestError) as tall:
        guarded.generate_from_text("a quartz crystal", width=256, height=2048, steps=2)
    assert tall.value.argument == "height" and tall.value.value == 2048
    width, height = _largest(tall.value)
    assert abs(height / width - 8) < 0.5


def test_a_batch_that_cannot_fit_is_refused_where_one_image_fits(
        guarded: Spec2Fractal) -> None:
    guarded._plan(_request(width=256, height=256, n=1), None)  # fits
    with pytest.raises(InvalidRequestError) as refused:
        guarded._plan(_request(width=256, height=256, n=4), None)
    assert refused.value.argument == "width" and "n=4" in refused.value.reason
    width, _height = _largest(refused.value)
    assert width < 256


def test_an_upscale_too_large_names_scale(guarded: Spec2Fractal) -> None:
    # 96² → 192² fits the limit (a 256² render's), 384² does not.
    source = Image.new("RGB", (96, 96), "teal")
    with pytest.raises(InvalidRequestError) as refused:
        guarded._plan(_request(input_type="upscale", scale=4, prompt=None), source)
    assert refused.value.argument == "scale" and refused.value.value == 4
    assert "(scale 2 fits)" in refused.value.reason


def test_tiles_make_a_size_fit_that_one_pass_cannot(tiny_sd: Path,
                                                    profile: MemoryProfile) -> None:
    # The same limit, the same request: refused untiled, planned in tiles.
    limit = estimate_peak_bytes(profile, [_pass(256)], 1) + MiB
    request = _request(width=1024, height=512)
    with pytest.raises(InvalidRequestError):
        Spec2Fractal(str(tiny_sd), memory_limit=limit, tile_size=4096)._plan(request, None)
    tiled = Spec2Fractal(str(tiny_sd), memory_limit=limit)
    plan = tiled._plan(request, None)
    assert any(entry["tiles"] > 1 for entry in tiled.backend.passes(plan) or ())


def test_memory_limit_must_be_a_number_of_bytes() -> None:
    for bad in (0, -5, "6GiB", 1.5, True):
        with pytest.raises(InvalidRequestError) as refused:
            Spec2Fractal(memory_limit=bad)
        assert refused.value.argument == "memory_limit"


def test_the_engine_is_not_guarded() -> None:
    # Its working set is a few bytes a pixel: even a 1-byte limit leaves it alone.
    model = Spec2Fractal(memory_limit=1)
    assert model.generate_from_text("a fern", width=64, height=64).size == (64, 64)


def test_through_the_api_an_impossible_size_is_a_422_naming_it(
        tiny_sd: Path, tmp_path: Path, profile: MemoryProfile) -> None:
    limit = estimate_peak_bytes(profile, [_pass(256)], 1) + MiB
    with serving(tmp_path, SPEC2FRACTAL_MODELS=str(tiny_sd),
                 SPEC2FRACTAL_MEMORY_LIMIT=str(limit), SPEC2FRACTAL_TILE_SIZE="4096",
                 SPEC2FRACTAL_SYNC_TIMEOUT="60") as server:
        body = {"prompt": "a quartz crystal", "model": "tiny-sd", "steps": 1, "seed": 2}
        refused = httpx.post(f"{server.url}/generate", timeout=90,
                             json={**body, "width": 2048, "height": 1024})
        assert refused.status_code == 422, refused.text
        [entry] = refused.json()["detail"]
        assert entry["loc"] == ["body", "width"] and entry["input"] == 2048
        assert re.search(r"the largest size that fits is \d+x\d+", entry["msg"]), entry
        fits = httpx.post(f"{server.url}/generate", timeout=90,
                          json={**body, "width": 128, "height": 64})
        assert fits.status_code == 200, fits.text


def test_an_sdxl_shaped_pipeline_is_profiled_too(tiny_sdxl: Path) -> None:
    from diffusers import AutoPipelineForText2Image

    shaped = profile_of(AutoPipelineForText2Image.from_pretrained(tiny_sdxl))
    assert shaped.attention == ((2, 4),) and shaped.cfg  # heads per level: (2, 4)
    assert shaped.decoder_channels == 64 and shaped.vae_scale_factor == 2


def test_a_cpu_budget_is_the_available_ram_and_what_is_held() -> None:
    import torch

    held = 123 * MiB
    budget = device_budget(torch.device("cpu"), held)
    total = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0]) * 1024
    assert budget is not None and held < budget <= total + held
    assert device_budget(torch.device("meta"), held) is None  # a device with no figure
