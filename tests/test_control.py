"""Structural control (ControlNet) on the diffusers backend, with the tiny random-weight
ControlNets of tests/tiny_adapters.py loaded through ``Spec2Fractal(model, adapters=...)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from fractal import InvalidRequestError, ModelLoadError, Spec2Fractal, read_record
from fractal.preprocess import canny, fit
from tests.tiny_adapters import adapters_config

BASE = {"prompt": "a lighthouse", "steps": 2, "seed": 3}


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


def differ(a: Image.Image, b: Image.Image) -> int:
    return int(np.abs(pixels(a) - pixels(b)).max())


def shapes() -> Image.Image:
    image = Image.new("RGB", (96, 80), (200, 180, 160))
    draw = ImageDraw.Draw(image)
    draw.rectangle((10, 10, 50, 60), fill=(230, 230, 230))
    draw.ellipse((55, 20, 90, 70), fill=(120, 200, 40))
    return image


def depth_map() -> Image.Image:
    ramp = np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (64, 1))
    return Image.fromarray(ramp).convert("RGB")


def unit(kind: str = "canny", **options: object) -> dict[str, object]:
    return {"type": kind, "image": shapes() if kind == "canny" else depth_map(), **options}


def render(model: Spec2Fractal, **options: object) -> Image.Image:
    return model.generate_from_text(**{**BASE, **options})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def plain(adapted_sd: Spec2Fractal) -> Image.Image:
    return render(adapted_sd)


@pytest.fixture(scope="module")
def controlled(adapted_sd: Spec2Fractal) -> Image.Image:
    return render(adapted_sd, control=[unit()])


def test_control_changes_the_render_and_scale_0_is_none(adapted_sd: Spec2Fractal,
                                                        plain: Image.Image,
                                                        controlled: Image.Image) -> None:
    assert differ(plain, controlled) > 20
    assert differ(plain, render(adapted_sd, control=[unit(scale=0.0)])) <= 1


def test_canny_is_preprocessed_unless_asked_not_to(adapted_sd: Spec2Fractal,
                                                   controlled: Image.Image) -> None:
    # The same edges sent already drawn (at the render's size), with preprocess false, give
    # the same picture; the photo itself with preprocess false is not its edges.
    edges = canny(fit(shapes(), 64, 64))
    prepared = render(adapted_sd, control=[{"type": "canny", "image": edges,
                                            "preprocess": False}])
    assert differ(prepared, controlled) <= 1
    raw = render(adapted_sd, control=[unit(preprocess=False)])
    assert differ(raw, controlled) > 5


def test_two_controls_at_once(adapted_sd: Spec2Fractal, controlled: Image.Image) -> None:
    depth = render(adapted_sd, control=[unit("depth")])
    both = render(adapted_sd, control=[unit(), unit("depth", scale=0.8)])
    assert differ(both, controlled) > 5 and differ(both, depth) > 5
    record = read_record(both)
    assert [entry["type"] for entry in record.controls] == ["canny", "depth"]
    # A multi-control with the second at scale 0 is the first alone.
    assert differ(render(adapted_sd, control=[unit(), unit("depth", scale=0.0)]),
                  controlled) <= 1


def test_start_and_end_change_the_render(adapted_sd: Spec2Fractal) -> None:
    # Four steps: the control acts in steps 2-3 (start 0.5) or 0-1 (end 0.5) only.
    whole = render(adapted_sd, control=[unit()], steps=4)
    late = render(adapted_sd, control=[unit(start=0.5)], steps=4)
    early = render(adapted_sd, control=[unit(end=0.5)], steps=4)
    assert differ(late, whole) > 5 and differ(early, whole) > 2
    assert differ(late, early) > 5


def test_image_to_image_with_control(adapted_sd: Spec2Fractal, plain: Image.Image) -> None:
    kwargs = {"strength": 0.7, "steps": 2, "seed": 2}
    free = adapted_sd.generate_from_image(plain, "a boat", **kwargs)
    held = adapted_sd.generate_from_image(plain, "a boat", control=[unit()], **kwargs)
    assert held.size == free.size and differ(free, held) > 5
    assert read_record(held).controls[0]["type"] == "canny"


def test_control_and_reference_together(adapted_sd: Spec2Fractal,
                                        controlled: Image.Image) -> None:
    style = Image.new("RGB", (32, 32), (200, 20, 160))
    both = render(adapted_sd, control=[unit()], style_image=style, style_mode="both",
                  style_strength=1.0)
    assert differ(both, controlled) > 5


def test_unconfigured_types_are_refused_naming_the_field(adapted_sd: Spec2Fractal,
                                                         sd_model: Spec2Fractal) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        render(adapted_sd, control=[unit(), {"type": "pose", "image": shapes()}])
    assert caught.value.argument == "control[1].type"
    assert caught.value.choices == ["canny", "depth"]
    assert "configured: canny, depth" in str(caught.value)
    with pytest.raises(InvalidRequestError) as caught:
        render(sd_model, control=[unit()])
    assert caught.value.argument == "control[0].type" and caught.value.choices == []


def test_a_broken_controlnet_is_a_load_error_naming_it(
        tiny_sd: Path, tiny_adapters: dict[str, Path], tmp_path: Path) -> None:
    missing = tmp_path / "nothing-here"
    with pytest.raises(ModelLoadError) as caught:
        Spec2Fractal(str(tiny_sd), adapters={"sd15": {"controlnets": {"depth": str(missing)}}})
    assert "ControlNet for 'depth'" in str(caught.value) and str(missing) in str(caught.value)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="ControlNet for 'canny'"):
        Spec2Fractal(str(tiny_sd), adapters={"sd15": {"controlnets": {"canny": str(broken)}}})
    # A ControlNet made for another UNet (the IP-Adapter's folder holds none at all).
    with pytest.raises(ModelLoadError, match="ControlNet for 'tile'"):
        Spec2Fractal(str(tiny_sd), adapters={"sd15": {"controlnets": {
            "tile": str(tiny_adapters["ip_adapter"])}}})


def test_the_record_names_controls_by_hash(controlled: Image.Image) -> None:
    record = read_record(controlled)
    (entry,) = record.controls
    assert entry["type"] == "canny" and len(entry["sha256"]) == 64
    assert (entry["scale"], entry["start"], entry["end"], entry["preprocess"]) == \
        (1.0, 0.0, 1.0, True)
    assert 'ControlNet 0: "Module: canny, Weight: 1.0, Guidance Start: 0.0, ' \
        'Guidance End: 1.0"' in controlled.info["parameters"]
    assert record.passes is None  # one plain pass, which takes the control


def test_controls_act_in_tiled_passes(tiny_sd: Path, tiny_adapters: dict[str, Path]) -> None:
    # Tiles of 48 px: 80² image-to-image and hires refines denoise in our tiled loop, which
    # runs the ControlNets on each tile's window of the control image.
    tiled = Spec2Fractal(str(tiny_sd), tile_size=48, tile_overlap=8,
                         adapters=adapters_config(tiny_adapters))
    source = render(tiled, seed=8).resize((80, 80))
    kwargs = {"strength": 0.75, "steps": 4, "seed": 2}  # the last 3 of 4 steps
    free = tiled.generate_from_image(source, "a boat", **kwargs)
    held = tiled.generate_from_image(source, "a boat", control=[unit()], **kwargs)
    (entry,) = read_record(held).passes
    assert entry["tiles"] == 4 and entry["controls"] is True
    assert differ(free, held) > 5
    off = tiled.generate_from_image(source, "a boat", control=[unit(scale=0.0)], **kwargs)
    assert differ(free, off) <= 1
    early = tiled.generate_from_image(source, "a boat", control=[unit(end=0.5)], **kwargs)
    assert differ(early, held) > 2 and differ(early, free) > 2  # the first step controlled
    # Two-pass hires: both passes take the control.
    hires = render(tiled, width=80, height=80, hires={"strength": 0.5, "steps": 2},
                   control=[unit(), unit("depth")])
    passes = read_record(hires).passes
    assert [(p["kind"], p["controls"]) for p in passes] == [("base", True), ("refine", True)]
    assert passes[1]["tiles"] == 4 and hires.size == (80, 80)


def test_sdxl_takes_controls(tiny_sdxl: Path, tmp_path: Path) -> None:
    from tests.tiny_adapters import build_controlnet

    folder = build_controlnet(tiny_sdxl, tmp_path / "controlnet")
    model = Spec2Fractal(str(tiny_sdxl), adapters={"sdxl": {"controlnets": {
        "canny": str(folder)}}})
    assert model.capabilities == {"style_reference": False, "controls": ["canny"],
                                  "loras": True}
    plain = render(model)
    assert differ(plain, render(model, control=[unit()])) > 5
    assert differ(plain, render(model, control=[unit(scale=0.0)])) <= 1
    # SDXL's tiled loop gives the ControlNet each tile's size conditioning too.
    tiled = Spec2Fractal(str(tiny_sdxl), tile_size=48, tile_overlap=8,
                         adapters={"sdxl": {"controlnets": {"canny": str(folder)}}})
    source, kwargs = plain.resize((80, 80)), {"strength": 0.75, "steps": 4, "seed": 2}
    held = tiled.generate_from_image(source, "a boat", control=[unit()], **kwargs)
    assert read_record(held).passes[0]["tiles"] == 4
    assert differ(held, tiled.generate_from_image(source, "a boat", **kwargs)) > 5


@pytest.mark.parametrize(("unit_options", "field"), [
    ({"scale": float("nan")}, "control[0].scale"),
    ({"scale": float("inf")}, "control[0].scale"),
    ({"scale": 2.5}, "control[0].scale"),
    ({"start": "0"}, "control[0].start"),
    ({"start": 0.8, "end": 0.2}, "control[0].end"),
    ({"type": "canny\ud800"}, "control[0].type"),
    ({"type": ["canny"]}, "control[0].type"),
    ({"preprocess": "yes"}, "control[0].preprocess"),
    ({"weight": 1}, "control[0].weight"),
])
def test_hostile_units_are_refused_naming_the_field(adapted_sd: Spec2Fractal,
                                                    unit_options: dict[str, object],
                                                    field: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        render(adapted_sd, control=[{**unit(), **unit_options}])
    assert caught.value.argument == field


def test_too_many_or_malformed_units_are_refused(adapted_sd: Spec2Fractal) -> None:
    for control, field in (([unit()] * 1000, "control"), ("canny", "control"),
                           ([42], "control[0]")):
        with pytest.raises(InvalidRequestError) as caught:
            adapted_sd.generate({**BASE, "control": control})
        assert caught.value.argument == field
    with pytest.raises(InvalidRequestError) as caught:
        adapted_sd.generate({**BASE, "control": [{"type": "canny", "image": "bm90IGFuIGltYWdl"}]})
    assert caught.value.argument == "control[0].image"


def test_sd3_and_flux_adapters_are_refused_by_family() -> None:
    # Configured adapters for a family this service does not run them on: nothing is loaded
    # (no pipeline needed), capabilities say none, and a request is refused naming its field.
    from types import SimpleNamespace

    from fractal.adapters import parse_adapters
    from fractal.backends.model_adapters import ModelAdapters

    config = parse_adapters({"flux": {"controlnets": {"canny": "/models/flux-canny"},
                                      "ip_adapter": {"model": "/models/flux-ip",
                                                     "weight_name": "ip.safetensors"}}})
    adapters = ModelAdapters(None, "flux", config["flux"], "tiny-flux", None, None)
    assert adapters.capabilities() == {"style_reference": False, "controls": []}
    plan = SimpleNamespace(style_reference=None, controls=(SimpleNamespace(type="canny"),),
                           init_image=None, hires=None)
    with pytest.raises(InvalidRequestError, match="flux models") as caught:
        adapters.check(plan, None)  # type: ignore[arg-type]
    assert caught.value.argument == "control"
    plan.style_reference = object()
    with pytest.raises(InvalidRequestError) as caught:
        adapters.check(plan, None)  # type: ignore[arg-type]
    assert caught.value.argument == "style_image"


def test_a_worker_loads_adapters_from_its_setting(monkeypatch: pytest.MonkeyPatch,
                                                  tiny_sd: Path,
                                                  tiny_adapters: dict[str, Path]) -> None:
    # SPEC2FRACTAL_ADAPTERS (JSON) → Settings.model_options → ModelCache → Spec2Fractal.
    import json

    from workers.model_cache import ModelCache
    from workers.settings import Settings

    monkeypatch.setenv("SPEC2FRACTAL_ADAPTERS", json.dumps(adapters_config(tiny_adapters)))
    model = ModelCache(1, options=Settings().model_options).get(str(tiny_sd))
    assert model.capabilities == {"style_reference": True, "controls": ["canny", "depth"],
                                  "loras": True}
    image = render(model, control=[unit()])
    assert read_record(image).controls[0]["type"] == "canny"
