"""Style reference and control images in the dashboard: pick a style image and a canny
control image, see the edges the render will follow (POST /controls/preview), render on the
built-in engine, and find both in the job and its record, by hash. A model that takes
neither (a tiny diffusers model with no adapters configured) disables both sections; a 422
about a control unit shows beside that unit.

This module serves its own dashboard (the built-in engine as default, plus that tiny model),
so the shared server's model list stays as the other dashboard tests expect."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, ImageDraw
from playwright.sync_api import Page, expect

from fractal.images import load_image
from fractal.references import pixel_hash
from tests.api.auth_helpers import make_key
from tests.api_server import serving
from tests.dashboard.conftest import Dashboard, finished_card, start_render
from workers.settings import Settings

SIDE = 96
PHONE = {"width": 360, "height": 740}


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _style_png() -> bytes:
    """Warm stripes: a palette far from the engine's default scene."""
    image = Image.new("RGB", (SIDE, SIDE), (230, 120, 20))
    draw = ImageDraw.Draw(image)
    for y in range(0, SIDE, 12):
        draw.rectangle((0, y, SIDE, y + 5), fill=(150, 20, 60))
    return _png(image)


def _control_png() -> bytes:
    """A white disc on black: its Canny edges are a ring."""
    image = Image.new("RGB", (SIDE, SIDE), "black")
    ImageDraw.Draw(image).ellipse((20, 20, 76, 76), fill="white")
    return _png(image)


def _file(name: str, data: bytes) -> dict:
    return {"name": name, "mimeType": "image/png", "buffer": data}


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory, tiny_sd: Path) -> Iterator[Dashboard]:
    """Overrides the package's server: the engine by default, and a tiny SD 1.5 model that
    has no IP-Adapter or ControlNet configured. Only GET /models reads that model (its
    folder's configs), so it is never loaded."""
    data_dir = tmp_path_factory.mktemp("references")
    key = make_key(Settings(data_dir=data_dir), "references")
    with serving(data_dir, SPEC2FRACTAL_AUTH="required",
                 SPEC2FRACTAL_MODELS=str(tiny_sd)) as api:
        yield Dashboard(base=api.url, key=key, data_dir=data_dir)


def _fill_small_render(page: Page, prompt: str) -> None:
    page.get_by_label("Prompt", exact=True).fill(prompt)
    page.fill("#width", "64")
    page.fill("#height", "64")


def test_style_reference_and_canny_control_render_and_are_recorded(
        open_page, dashboard: Dashboard) -> None:
    page = open_page()
    _fill_small_render(page, "A harbour at dusk")
    style, control = _style_png(), _control_png()

    # The style reference: a thumbnail, strength 0.6 by default, a mode.
    page.get_by_label("Style image").set_input_files(_file("style.png", style))
    expect(page.get_by_role("img", name="The chosen style reference")).to_be_visible()
    expect(page.get_by_label("Style strength")).to_have_value("0.6")
    page.get_by_label("Style mode").select_option("both")

    # A canny control: its image and, beside it, the edges from POST /controls/preview.
    page.get_by_role("button", name="Add control").click()
    kind = page.get_by_label("Control 1 type")
    assert kind.locator("option").evaluate_all("(options) => options.map((o) => o.value)") \
        == ["canny", "image"]  # exactly the engine's control types
    kind.select_option("canny")
    page.get_by_label("Control 1 image").set_input_files(_file("control.png", control))
    expect(page.get_by_role("img", name="Control 1 image")).to_be_visible()
    edges = page.get_by_role("img", name="Control 1 Canny edges")
    expect(edges).to_be_visible()
    page.wait_for_function(
        "(img) => img.src.startsWith('blob:') && img.complete && img.naturalWidth === 96",
        arg=edges.element_handle())
    # The preview is the server's Canny ring: white edges on black, drawn in a canvas.
    shares = edges.evaluate("""(img) => {
        const canvas = document.createElement('canvas');
        canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
        const context = canvas.getContext('2d');
        context.drawImage(img, 0, 0);
        const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
        let white = 0, black = 0;
        for (let i = 0; i < data.length; i += 4) {
            if (data[i] === 255 && data[i + 1] === 255 && data[i + 2] === 255) white++;
            else if (data[i] === 0 && data[i + 1] === 0 && data[i + 2] === 0) black++;
        }
        const n = data.length / 4;
        return {white: white / n, black: black / n, centre: data[(48 * 96 + 48) * 4]};
    }""")
    assert shares["white"] + shares["black"] == pytest.approx(1.0)
    assert 0.01 < shares["white"] < 0.2 and shares["centre"] == 0, shares
    page.get_by_label("Control 1 scale").fill("0.8")

    job_id = start_render(page)
    card = finished_card(page, job_id)
    expect(card.locator(".live-refs")).to_contain_text("Style reference (both, 0.6)")
    expect(card.locator(".live-refs")).to_contain_text("Control: canny")

    job = dashboard.client().get(f"/jobs/{job_id}").json()
    style_hash = pixel_hash(load_image(style))
    control_hash = pixel_hash(load_image(control))
    record = job["outputs"][0]["record"]
    assert record["style_reference"] == {"sha256": style_hash, "strength": 0.6, "mode": "both"}
    assert record["controls"] == [{"type": "canny", "sha256": control_hash, "scale": 0.8,
                                   "start": 0.0, "end": 1.0, "preprocess": True}]
    request = job["request"]
    assert style_hash in str(request.get("style_image")), request
    assert control_hash in str(request.get("control")), request
    assert "base64" not in str(request)  # by hash, never the pixels

    # The gallery's parameters name them too.
    first = page.locator(f'#gallery-list .card[data-job-id="{job_id}"]').first
    first.locator("summary", has_text="Parameters").click()
    params = first.locator("dl.params")
    expect(params).to_contain_text("Style reference")
    expect(params).to_contain_text(f"both, strength 0.6 · image {style_hash[:12]}")
    expect(params).to_contain_text(f"canny × 0.8 (0–1), edges found · image {control_hash[:12]}")


def test_a_model_without_adapters_disables_both_sections(open_page) -> None:
    page = open_page()
    style_section = page.get_by_role("group", name="Style reference (optional)", exact=True)
    control_section = page.get_by_role("group", name="Control (optional)", exact=True)
    expect(page.get_by_label("Style image")).to_be_enabled()
    page.get_by_role("button", name="Add control").click()
    expect(page.get_by_label("Control 1 type")).to_be_enabled()

    model = page.get_by_role("region", name="Create").get_by_label("Model")
    model.select_option("tiny-sd")
    expect(page.get_by_label("Style image")).to_be_disabled()
    expect(page.locator("#style-note")).to_have_text("tiny-sd takes no style reference.")
    expect(page.get_by_role("button", name="Add control")).to_be_disabled()
    expect(page.get_by_label("Control 1 type")).to_be_disabled()
    expect(page.locator("#control-note")).to_have_text("tiny-sd takes no control images.")
    for section in (style_section, control_section):
        assert section.evaluate("(section) => section.disabled")

    # Back on the engine: enabled again, and a unit without an image is the server's 422,
    # shown beside that unit's image.
    model.select_option("")
    expect(page.get_by_label("Control 1 type")).to_be_enabled()
    _fill_small_render(page, "A lighthouse")
    page.get_by_role("button", name="Generate").click()
    error = page.locator('[data-field="control.0.image"] .error')
    expect(error).to_be_visible()
    expect(error).to_contain_text("control")
    expect(page.get_by_label("Control 1 image")).to_have_attribute("aria-invalid", "true")

    # At most four units; removing one renumbers the rest (their labels and error boxes).
    add = page.get_by_role("button", name="Add control")
    for _ in range(3):
        add.click()
    expect(page.locator(".control-unit")).to_have_count(4)
    expect(add).to_be_disabled()
    page.get_by_label("Control 3 type").select_option("image")
    page.get_by_role("button", name="Remove control 2").click()
    expect(page.locator(".control-unit")).to_have_count(3)
    expect(add).to_be_enabled()
    expect(page.get_by_label("Control 2 type")).to_have_value("image")
    assert page.locator('[data-field="control.1.type"] select').get_attribute("id") == \
        page.get_by_label("Control 2 type").get_attribute("id")


def test_control_units_fit_a_phone_screen(open_page) -> None:
    page = open_page(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    page.get_by_label("Style image").set_input_files(_file("style.png", _style_png()))
    page.get_by_role("button", name="Add control").click()
    page.get_by_label("Control 1 image").set_input_files(_file("control.png", _control_png()))
    expect(page.get_by_role("img", name="Control 1 Canny edges")).to_be_visible()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page scrolls sideways: {width} px wide"
    boxes = page.evaluate("""() => [...document.querySelectorAll(
        '#style-reference input, #style-reference select, #style-reference button, '
        + '#controls input, #controls select, #controls button, #controls img')]
        .filter((el) => el.offsetParent !== null)
        .map((el) => { const r = el.getBoundingClientRect();
                       return {id: el.id || el.alt || el.textContent, left: r.left,
                               right: r.right}; })""")
    assert len(boxes) > 10
    for box in boxes:
        assert box["left"] >= 0 and box["right"] <= PHONE["width"], box
    # Each unit stays inside the Control section (a grid item must be let shrink).
    section, unit = (page.locator(selector).first.bounding_box()
                     for selector in ("#controls", ".control-unit"))
    assert unit["x"] + unit["width"] <= section["x"] + section["width"], (unit, section)
