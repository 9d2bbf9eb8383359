"""Style reference (IP-Adapter) on the diffusers backend, with the tiny random-weight adapters
of tests/tiny_adapters.py loaded through ``Spec2Fractal(model, adapters=...)``.

Tiny sizes and two steps: each render takes a fraction of a second.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image, ImageDraw

from fractal import (
    GenerationRequest,
    InvalidRequestError,
    ModelLoadError,
    Spec2Fractal,
    image_to_data_url,
    read_record,
)
from fractal.backends.ip_adapter import SDXL_COMPOSITION, SDXL_STYLE, block_scales
from tests.render_calls import render_calls
from tests.tiny_adapters import IP_WEIGHTS, adapters_config

BASE = {"prompt": "a lighthouse", "steps": 2, "seed": 3}


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


def differ(a: Image.Image, b: Image.Image) -> int:
    return int(np.abs(pixels(a) - pixels(b)).max())


def reference(colour: tuple[int, int, int] = (220, 40, 30)) -> Image.Image:
    image = Image.new("RGB", (48, 40), colour)
    ImageDraw.Draw(image).ellipse((8, 6, 36, 30), fill=(20, 60, 200))
    return image


def render(model: Spec2Fractal, **options: object) -> Image.Image:
    return model.generate_from_text(**{**BASE, **options})  # type: ignore[arg-type]


class EncoderCalls:
    """Counts the image encoder's forward calls (a real forward hook on the module)."""

    def __init__(self, model: Spec2Fractal) -> None:
        self.count = 0
        encoder = model.backend.text_pipeline.image_encoder
        self._handle = encoder.register_forward_hook(self._seen)

    def _seen(self, *_: object) -> None:
        self.count += 1

    def __enter__(self) -> EncoderCalls:
        return self

    def __exit__(self, *_: object) -> None:
        self._handle.remove()


def test_a_reference_changes_the_render_and_strength_0_is_none(adapted_sd: Spec2Fractal
                                                              ) -> None:
    plain = render(adapted_sd)
    styled = render(adapted_sd, style_image=reference(), style_strength=0.8, style_mode="both")
    assert differ(plain, styled) > 20
    off = render(adapted_sd, style_image=reference(), style_strength=0.0, style_mode="both")
    assert differ(plain, off) <= 1


def test_no_reference_equals_the_model_without_adapters(adapted_sd: Spec2Fractal,
                                                        sd_model: Spec2Fractal) -> None:
    # Neutral embeddings at scale 0: diffusers skips the IP-Adapter attention outright.
    assert differ(render(adapted_sd), render(sd_model)) <= 1
    source = render(sd_model, seed=9)
    assert differ(adapted_sd.generate_from_image(source, "a boat", strength=0.6, steps=2,
                                                 seed=4),
                  sd_model.generate_from_image(source, "a boat", strength=0.6, steps=2,
                                               seed=4)) <= 1


def test_the_three_modes_differ(adapted_sd: Spec2Fractal) -> None:
    images = {mode: render(adapted_sd, style_image=reference(), style_strength=1.0,
                           style_mode=mode) for mode in ("style", "composition", "both")}
    plain = render(adapted_sd)
    for mode, image in images.items():
        assert differ(image, plain) > 5, mode
    assert differ(images["style"], images["composition"]) > 5
    assert differ(images["style"], images["both"]) > 5
    assert differ(images["composition"], images["both"]) > 5


def test_block_scales_are_instantstyles() -> None:
    sdxl = SimpleNamespace(layers_per_block=2,
                           down_block_types=("DownBlock2D", "CrossAttnDownBlock2D",
                                             "CrossAttnDownBlock2D"),
                           up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                                           "UpBlock2D"))
    assert block_scales("style", 1.0, "sdxl", sdxl) == SDXL_STYLE
    assert block_scales("composition", 0.5, "sdxl", sdxl) == {"down": {"block_2": [0.0, 0.5]}}
    assert SDXL_COMPOSITION == {"down": {"block_2": [0.0, 1.0]}}
    assert block_scales("both", 0.7, "sdxl", sdxl) == 0.7
    sd15 = SimpleNamespace(layers_per_block=2,
                           down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                           up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
    # InstantStyle's SD 1.5 example: up_blocks.1 for style; its layout block down_blocks.2.
    assert block_scales("style", 0.6, "sd15", sd15) == {"up": {"block_1": 0.6}}
    assert block_scales("composition", 0.6, "sd15", sd15) == {"down": {"block_2": 0.6}}


def test_embeddings_are_computed_once_per_image(adapted_sd: Spec2Fractal) -> None:
    first, second = reference((10, 200, 90)), reference((250, 250, 10))
    with EncoderCalls(adapted_sd) as calls:
        a = render(adapted_sd, style_image=first, style_strength=0.9)
        assert calls.count == 1
        b = render(adapted_sd, style_image=first, style_strength=0.9)
        render(adapted_sd, style_image=first, style_strength=0.4, style_mode="both", seed=5)
        assert calls.count == 1  # cached by the reference's pixel hash
        render(adapted_sd, style_image=second, style_strength=0.9)
        assert calls.count == 2  # another picture: encoded once more
        render(adapted_sd, style_image=second, style_strength=0.9)
        assert calls.count == 2
    assert differ(a, b) == 0  # cached embeddings give the same picture


def test_no_ip_adapter_is_refused_naming_style_image(sd_model: Spec2Fractal) -> None:
    assert sd_model.capabilities == {"style_reference": False, "controls": [], "loras": True}
    with pytest.raises(InvalidRequestError) as caught:
        render(sd_model, style_image=reference())
    assert caught.value.argument == "style_image"
    assert "IP-Adapter" in str(caught.value)


def test_capabilities_list_what_was_configured(adapted_sd: Spec2Fractal) -> None:
    assert adapted_sd.capabilities == {"style_reference": True, "controls": ["canny", "depth"],
                                       "loras": True}


def test_a_broken_ip_adapter_is_a_load_error_naming_it(
        tiny_sd: Path, tiny_adapters: dict[str, Path], tmp_path: Path) -> None:
    config = adapters_config(tiny_adapters)
    broken = {"sd15": {"ip_adapter": {**config["sd15"]["ip_adapter"],  # type: ignore[index]
                                      "model": str(tmp_path / "missing")}}}
    with pytest.raises(ModelLoadError) as caught:
        Spec2Fractal(str(tiny_sd), adapters=broken)
    message = str(caught.value)
    assert "IP-Adapter" in message and IP_WEIGHTS in message and "sd15" in message
    assert "missing" in message
    no_encoder = {"sd15": {"ip_adapter": {"model": str(tiny_adapters["ip_adapter"]),
                                          "weight_name": IP_WEIGHTS,
                                          "image_encoder": str(tmp_path / "no-clip")}}}
    with pytest.raises(ModelLoadError, match="image encoder of the IP-Adapter"):
        Spec2Fractal(str(tiny_sd), adapters=no_encoder)
    pickled = {"sd15": {"ip_adapter": {"model": str(tiny_adapters["ip_adapter"]),
                                       "weight_name": "ip-adapter.bin"}}}
    with pytest.raises(ModelLoadError, match=r"only \.safetensors"):
        Spec2Fractal(str(tiny_sd), adapters=pickled)


def test_the_encoder_beside_the_weights_loads_as_published(
        tiny_sd: Path, tiny_adapters: dict[str, Path]) -> None:
    # No image_encoder key: diffusers' layout, the encoder in image_encoder/ by the weights.
    model = Spec2Fractal(str(tiny_sd),
                         adapters=adapters_config(tiny_adapters, separate_encoder=False))
    plain, styled = render(model), render(model, style_image=reference(), style_mode="both")
    assert differ(plain, styled) > 20


def test_the_record_names_the_reference_by_hash(adapted_sd: Spec2Fractal) -> None:
    image = render(adapted_sd, style_image=reference(), style_strength=0.7,
                   style_mode="composition")
    record = read_record(image)
    assert record.style_reference is not None
    assert record.style_reference["strength"] == 0.7
    assert record.style_reference["mode"] == "composition"
    digest = record.style_reference["sha256"]
    assert len(digest) == 64
    assert f'Style reference: "composition, weight 0.7, {digest[:10]}"' in \
        image.info["parameters"]


def test_image_to_image_with_a_reference(adapted_sd: Spec2Fractal) -> None:
    source = render(adapted_sd, seed=11)
    kwargs = {"strength": 0.7, "steps": 2, "seed": 2}
    plain = adapted_sd.generate_from_image(source, "a boat", **kwargs)
    styled = adapted_sd.generate_from_image(source, "a boat", style_image=reference(),
                                            style_mode="both", style_strength=1.0, **kwargs)
    assert differ(plain, styled) > 5


def test_co_rendered_requests_with_the_same_reference(adapted_sd: Spec2Fractal) -> None:
    data = image_to_data_url(reference((90, 30, 160)))
    requests = [
        GenerationRequest(prompt="a red castle", steps=2, seed=20, style_image=data,
                          style_mode="both", style_strength=0.9),
        GenerationRequest(prompt="snowy peaks", steps=2, seed=30, n=2, style_image=data,
                          style_mode="both", style_strength=0.9),
    ]
    with render_calls(adapted_sd) as calls:
        together = adapted_sd.generate_many(requests)
    assert calls == [2]  # one call: the same reference
    for request, images in zip(requests, together, strict=True):
        assert not isinstance(images, Exception)
        for alone, batched in zip(adapted_sd.generate(request), images, strict=True):
            assert differ(alone, batched) <= 1


def test_hires_takes_the_reference_on_both_passes(tiny_sd: Path,
                                                  tiny_adapters: dict[str, Path]) -> None:
    # Tiles of 48 px: the refine at 80² runs in our own tiled loop, the embeddings given to
    # the UNet through added_cond_kwargs.
    model = Spec2Fractal(str(tiny_sd), tile_size=48, tile_overlap=8,
                         adapters=adapters_config(tiny_adapters))
    options = {"width": 80, "height": 80, "hires": {"strength": 0.5, "steps": 2}}
    plain = render(model, **options)
    styled = render(model, style_image=reference(), style_mode="both", **options)
    passes = read_record(styled).passes
    assert [entry["kind"] for entry in passes] == ["base", "refine"]
    assert all(entry["style_reference"] is True for entry in passes)
    assert passes[1]["tiles"] == 4
    assert "style_reference" not in read_record(plain).passes[0]
    assert differ(plain, styled) > 5


def test_sdxl_takes_a_style_reference(tiny_sdxl: Path, tmp_path: Path) -> None:
    from tests.tiny_adapters import build_ip_adapter

    folder = build_ip_adapter(tiny_sdxl, tmp_path / "ip")
    model = Spec2Fractal(str(tiny_sdxl), adapters={"sdxl": {"ip_adapter": {
        "model": str(folder), "weight_name": IP_WEIGHTS}}})
    plain = render(model)
    images = [render(model, style_image=reference(), style_strength=1.0, style_mode=mode)
              for mode in ("style", "composition", "both")]
    assert all(differ(plain, image) > 5 for image in images)
    assert differ(images[0], images[1]) > 5


@pytest.mark.parametrize(("options", "field"), [
    ({"style_strength": float("nan")}, "style_strength"),
    ({"style_strength": float("-inf")}, "style_strength"),
    ({"style_strength": 1.5}, "style_strength"),
    ({"style_strength": "0.5"}, "style_strength"),
    ({"style_strength": True}, "style_strength"),
    ({"style_mode": "styl\ud800"}, "style_mode"),
    ({"style_mode": ["style"]}, "style_mode"),
    ({"style_image": 42}, "style_image"),
    ({"style_image": "bm90IGFuIGltYWdl"}, "style_image"),
    ({"style_image": "data:image/png;base64,\ud800"}, "style_image"),
])
def test_hostile_style_fields_are_refused_naming_them(adapted_sd: Spec2Fractal,
                                                      options: dict[str, object],
                                                      field: str) -> None:
    request = {**BASE, "style_image": image_to_data_url(reference()), **options}
    with pytest.raises(InvalidRequestError) as caught:
        adapted_sd.generate(request)
    assert caught.value.argument == field


def test_an_ip_adapter_plus_takes_the_same_path(tiny_sd: Path, tmp_path: Path,
                                                sd_model: Spec2Fractal) -> None:
    # Plus: image tokens resampled from the encoder's hidden states (other embeddings).
    from tests.tiny_adapters import build_ip_adapter

    folder = build_ip_adapter(tiny_sd, tmp_path / "ip-plus", plus=True)
    model = Spec2Fractal(str(tiny_sd), adapters={"sd15": {"ip_adapter": {
        "model": str(folder), "weight_name": IP_WEIGHTS}}})
    plain = render(model)
    assert differ(plain, render(sd_model)) <= 1
    assert differ(plain, render(model, style_image=reference(), style_strength=0.0)) <= 1
    styled = render(model, style_image=reference(), style_strength=1.0, style_mode="both")
    assert differ(plain, styled) > 5
