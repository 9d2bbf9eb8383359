"""Structural control on the built-in engine, measured: Canny on the output finds the
control's edges — more with a control than without, more at scale 1 than at 0.25."""

from __future__ import annotations

import base64
import io
import threading

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw

from fractal import GenerationCancelled, InvalidRequestError, Spec2Fractal, read_record
from fractal.engine import Guide, render
from fractal.engine.scene import render_scene
from fractal.engine.structure import apply_guides, band_coverage

W, H = 160, 120
SIZE = {"width": W, "height": H}


def _drawing() -> Image.Image:
    """A control photo stand-in: a sun over two mountain slopes, flat colours."""
    image = Image.new("RGB", (W, H), (20, 20, 30))
    draw = ImageDraw.Draw(image)
    draw.ellipse((30, 20, 90, 80), fill=(220, 200, 90))
    draw.polygon([(0, H), (70, 50), (130, 90), (W, 70), (W, H)], fill=(60, 120, 60))
    return image


def _bars() -> Image.Image:
    image = Image.new("RGB", (W, H), (0, 0, 0))
    draw = ImageDraw.Draw(image)
    for x in range(10, W, 40):
        draw.rectangle((x, 10, x + 14, H - 10), fill=(255, 255, 255))
    return image


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def edges(image: np.ndarray | Image.Image) -> np.ndarray:
    return cv2.Canny(np.asarray(Image.fromarray(np.asarray(image)).convert("L")), 100, 200) > 0


def edge_agreement(output: np.ndarray | Image.Image, control: Image.Image) -> float:
    """F1 of the output's Canny edges against the control's, each within 2 px of the other."""
    ours, theirs = edges(output), edges(control)
    near = np.ones((5, 5), np.uint8)
    recall = (cv2.dilate(ours.astype(np.uint8), near) > 0)[theirs].mean()
    precision = (cv2.dilate(theirs.astype(np.uint8), near) > 0)[ours].mean() if ours.any() else 0
    return float(2 * precision * recall / max(precision + recall, 1e-9))


def canny_unit(image: Image.Image, **options: object) -> dict:
    return {"type": "canny", "image": _png(image), **options}


PROMPTS = ["a lake below snowy mountains", "a volcano at night", "mandelbrot",
           "a tropical island"]


@pytest.mark.parametrize("prompt", PROMPTS)
def test_output_edges_follow_the_canny_control_more_as_scale_rises(
        engine_model: Spec2Fractal, prompt: str) -> None:
    control = _drawing()
    scores = [edge_agreement(engine_model.generate_from_text(
        prompt, seed=2, control=[canny_unit(control, scale=scale)] if scale else None, **SIZE),
        control) for scale in (0.0, 0.25, 1.0)]
    assert scores[0] < scores[1] < scores[2], scores
    assert scores[2] > scores[0] + 0.15, scores


def test_scale_zero_is_exactly_no_control(engine_model: Spec2Fractal) -> None:
    plain = engine_model.generate_from_text("a lake", seed=3, **SIZE)
    for kind in ("canny", "image"):
        zero = engine_model.generate_from_text(
            "a lake", seed=3, control=[{"type": kind, "image": _png(_drawing()), "scale": 0}],
            **SIZE)
        assert np.array_equal(np.asarray(plain), np.asarray(zero)), kind


def test_same_control_and_seed_is_deterministic(engine_model: Spec2Fractal) -> None:
    unit = [canny_unit(_drawing(), scale=0.8)]
    first = engine_model.generate_from_text("a waterfall", seed=5, control=unit, **SIZE)
    again = engine_model.generate_from_text("a waterfall", seed=5, control=unit, **SIZE)
    assert np.array_equal(np.asarray(first), np.asarray(again))
    assert read_record(first).controls == [{
        "type": "canny", "sha256": read_record(first).controls[0]["sha256"], "scale": 0.8,
        "start": 0.0, "end": 1.0, "preprocess": True}]


def test_image_control_is_the_layout(engine_model: Spec2Fractal) -> None:
    control = _bars()  # bright bars on black: the picture's light follows them
    plain = np.asarray(engine_model.generate_from_text("a desert", seed=1, **SIZE))
    guided = np.asarray(engine_model.generate_from_text(
        "a desert", seed=1, control=[{"type": "image", "image": _png(control)}], **SIZE))
    mask = np.asarray(control.convert("L")) > 127

    def contrast(image: np.ndarray) -> float:
        grey = image.astype(np.float32).mean(axis=2)
        return float(grey[mask].mean() - grey[~mask].mean())

    assert contrast(guided) > contrast(plain) + 40
    assert edge_agreement(guided, control) > edge_agreement(plain, control)


def test_start_end_choose_the_octaves_coarse_to_fine() -> None:
    assert band_coverage(4, 0.0, 1.0).tolist() == [1, 1, 1, 1]
    assert band_coverage(4, 0.0, 0.5).tolist() == [1, 1, 0, 0]
    assert band_coverage(4, 0.625, 1.0).tolist() == [0, 0, 0.5, 1]
    picture = render_scene("a lake below snowy mountains", seed=1, **SIZE)
    control = np.asarray(_bars())
    coarse = apply_guides(picture, [Guide("layout", control, 1.0, start=0.0, end=0.4)])
    fine = apply_guides(picture, [Guide("layout", control, 1.0, start=0.6, end=1.0)])

    def layout(image: np.ndarray) -> np.ndarray:  # the light/dark layout, detail blurred away
        return cv2.GaussianBlur(image.astype(np.float32).mean(axis=2), (0, 0), 12)

    def follows(image: np.ndarray) -> float:
        return float(np.corrcoef(layout(image).ravel(), layout(control).ravel())[0, 1])

    # Early (coarse) octaves carry the layout; late (fine) ones the edges.
    assert follows(coarse) > follows(fine) + 0.2
    bars = Image.fromarray(control)
    assert edge_agreement(fine, bars) > edge_agreement(coarse, bars)


def test_several_controls_combine(engine_model: Spec2Fractal) -> None:
    first, second = _drawing(), _bars()
    prompt = "a lake below snowy mountains"
    plain = engine_model.generate_from_text(prompt, seed=4, **SIZE)
    both = engine_model.generate_from_text(
        prompt, seed=4, control=[canny_unit(first), canny_unit(second, scale=0.7)], **SIZE)
    only_first = engine_model.generate_from_text(prompt, seed=4, control=[canny_unit(first)],
                                                 **SIZE)
    for control in (first, second):
        assert edge_agreement(both, control) > edge_agreement(plain, control)
    assert edge_agreement(both, second) > edge_agreement(only_first, second)


def test_a_prepared_edge_map_is_taken_as_it_is(engine_model: Spec2Fractal) -> None:
    edge_map = Image.fromarray(edges(_drawing()).astype(np.uint8) * 255).convert("RGB")
    prepared = engine_model.generate_from_text(
        "a volcano", seed=1, control=[canny_unit(edge_map, preprocess=False)], **SIZE)
    from_photo = engine_model.generate_from_text(
        "a volcano", seed=1, control=[canny_unit(_drawing())], **SIZE)
    assert np.array_equal(np.asarray(prepared), np.asarray(from_photo))


@pytest.mark.parametrize("prompt", [None, "a lake with a forest"])
def test_image_and_hybrid_renders_follow_the_control(engine_model: Spec2Fractal,
                                                     prompt: str | None) -> None:
    source = Image.fromarray(render_scene("a meadow with flowers", seed=1, **SIZE))
    control = _drawing()
    scores = [edge_agreement(engine_model.generate_from_image(
        source, prompt, seed=1, control=[canny_unit(control, scale=scale)] if scale else None),
        control) for scale in (0.0, 0.25, 1.0)]
    assert scores[0] < scores[1] < scores[2], scores


def test_the_engine_refuses_controls_it_cannot_read(engine_model: Spec2Fractal) -> None:
    with pytest.raises(InvalidRequestError) as error:
        engine_model.generate_from_text("a lake", control=[
            canny_unit(_drawing()), {"type": "depth", "image": _png(_drawing())}], **SIZE)
    assert error.value.argument == "control[1].type"
    assert engine_model.capabilities == {"style_reference": True, "controls": ["canny", "image"],
                                         "loras": False}


def test_guides_must_fit_the_picture() -> None:
    picture = render_scene("a lake", seed=1, **SIZE)
    with pytest.raises(ValueError, match="guide"):
        apply_guides(picture, [Guide("edges", np.zeros((10, 10, 3), np.uint8), 1.0)])
    with pytest.raises(ValueError, match="kind"):
        apply_guides(picture, [Guide("depth", np.asarray(_drawing()), 1.0)])


def test_progress_and_cancel_with_a_control(engine_model: Spec2Fractal) -> None:
    steps: list[tuple[int, int]] = []
    engine_model.generate_from_text(
        "a lake", seed=1, control=[canny_unit(_drawing())], style="Impressionist",
        on_progress=lambda step, total, *_: steps.append((step, total)), **SIZE)
    assert steps and steps[-1][0] == steps[-1][1]
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(GenerationCancelled):
        engine_model.generate_from_text("a lake", seed=1, control=[canny_unit(_drawing())],
                                        cancel=cancel, **SIZE)


def test_edges_become_ridgelines_not_a_replaced_picture() -> None:
    # The scene's own overall light (the coarsest octave) stays: a night stays dark.
    night = render("a lake at night", seed=1, **SIZE)
    ridged = render("a lake at night", seed=1, guides=[
        Guide("edges", np.asarray(Image.fromarray(edges(_drawing()).astype(np.uint8) * 255)
                                  .convert("RGB")), 1.0)], **SIZE)
    assert abs(float(ridged.mean()) - float(night.mean())) < 15


def test_a_controlled_render_is_upscaled_by_resampling_not_redrawn_without_its_control(
        engine_model: Spec2Fractal) -> None:
    # The record names the control by hash only: redrawing the scene would lose it.
    controlled = engine_model.generate_from_text("a lake", seed=1, width=80, height=64,
                                                 control=[canny_unit(_drawing())])
    styled = engine_model.generate_from_text("a lake", seed=1, width=80, height=64,
                                             style_image=_png(_drawing()))
    plain = engine_model.generate_from_text("a lake", seed=1, width=80, height=64)
    upscaler = {name: read_record(engine_model.upscale(image, scale=2)).passes[0]["upscaler"]
                for name, image in (("controlled", controlled), ("styled", styled),
                                    ("plain", plain))}
    assert upscaler == {"controlled": "Lanczos + detail", "styled": "Lanczos + detail",
                        "plain": "engine re-render"}


@pytest.mark.parametrize("size", [(1, 1), (1, 300), (300, 1)])
def test_degenerate_control_and_reference_images_render(engine_model: Spec2Fractal,
                                                        size: tuple[int, int]) -> None:
    odd = Image.new("RGB", size, (200, 40, 40))
    for width, height in ((8, 8), (64, 8)):
        for kind in ("canny", "image"):
            image = engine_model.generate_from_text(
                "a lake", seed=1, width=width, height=height, style_image=_png(odd),
                style_mode="both", control=[{"type": kind, "image": _png(odd), "scale": 2}])
            assert image.size == (width, height)


def test_a_canny_control_without_edges_changes_nothing(engine_model: Spec2Fractal) -> None:
    plain = engine_model.generate_from_text("a lake", seed=1, **SIZE)
    blank = engine_model.generate_from_text(
        "a lake", seed=1, control=[canny_unit(Image.new("RGB", (W, H), (90, 90, 90)))], **SIZE)
    assert np.array_equal(np.asarray(plain), np.asarray(blank))


_GOOD = base64.b64encode(_png(Image.new("RGB", (8, 8)))).decode()


@pytest.mark.parametrize(("fields", "argument"), [
    ({"style_image": _GOOD, "style_strength": float("nan")}, "style_strength"),
    ({"style_image": _GOOD, "style_strength": float("inf")}, "style_strength"),
    ({"style_image": "\ud800abc"}, "style_image"),
    ({"style_image": 123}, "style_image"),
    ({"style_image": _GOOD, "style_mode": "\ud800"}, "style_mode"),
    ({"control": [{"type": "canny", "image": _GOOD, "scale": float("nan")}]}, "control[0].scale"),
    ({"control": [{"type": "canny", "image": "\ud800"}]}, "control[0].image"),
    ({"control": [{"type": "canny", "image": _GOOD}] * 10_000}, "control"),
    ({"control": [{"type": "image", "image": _GOOD, "start": 0.5, "end": 0.5}]},
     "control[0].end"),
    ({"control": "canny"}, "control"),
    ({"control": [{"type": "canny", "image": _GOOD, "scale": 2.5}]}, "control[0].scale"),
])
def test_hostile_reference_fields_are_named_errors_before_the_engine_runs(
        engine_model: Spec2Fractal, fields: dict, argument: str) -> None:
    with pytest.raises(InvalidRequestError) as error:
        engine_model.generate({"input_type": "text", "prompt": "a lake", "width": 64,
                               "height": 64, **fields})
    assert error.value.argument == argument


@pytest.mark.parametrize("style", ["Impressionist", "Watercolor", "Pencil Sketch"])
def test_the_control_survives_a_style_preset_painting_over_it(engine_model: Spec2Fractal,
                                                              style: str) -> None:
    # The scene is placed on the structure first, then the preset's effect paints it.
    control = _drawing()
    scores = [edge_agreement(engine_model.generate_from_text(
        "a lake below snowy mountains", seed=2, style=style,
        control=[canny_unit(control, scale=scale)] if scale else None, **SIZE), control)
        for scale in (0.0, 0.25, 1.0)]
    assert scores[0] < scores[1] < scores[2], scores
