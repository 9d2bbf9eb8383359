"""Inpainting and outpainting in the dashboard: paint a mask over the input image with the
mouse (and a finger on a phone), invert and clear it, render on the built-in engine, and find
the mask in the job (by hash) and its record; the pixels away from the stroke come back
exactly as they went. Outpaint: extend the canvas on a side by N px. A 422 about the mask or
a side of expand shows beside that control."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image, ImageChops
from playwright.sync_api import Page, Route, expect

from fractal.images import load_mask
from fractal.masks import blur_mask
from fractal.references import pixel_hash
from tests.dashboard.conftest import Dashboard, finished_card, start_render

WIDTH, HEIGHT = 96, 64
PHONE = {"width": 360, "height": 740}
MASK_JS = "async () => (await import('/ui/maskpaint.js')).maskDataUrl()"


def _input_png() -> bytes:
    """A gradient with a pattern: every pixel distinct enough that a changed one shows."""
    image = Image.new("RGB", (WIDTH, HEIGHT))
    image.putdata([((x * 5) % 256, (y * 7) % 256, ((x + y) * 3) % 256)
                   for y in range(HEIGHT) for x in range(WIDTH)])
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _decode(data_url: str) -> Image.Image:
    head, _, payload = data_url.partition(",")
    assert head == "data:image/png;base64", head
    return Image.open(io.BytesIO(base64.b64decode(payload))).convert("RGB")


def _choose_image(page: Page) -> None:
    page.get_by_label("Input image").set_input_files(
        {"name": "input.png", "mimeType": "image/png", "buffer": _input_png()})
    expect(page.get_by_text("Canvas: 96 × 64 (not extended).")).to_be_visible()


def _png_output(page: Page) -> None:
    """Lossless output, so kept pixels compare exactly."""
    page.get_by_text("Advanced", exact=True).click()
    page.get_by_label("Format").select_option("png")


def _mask(page: Page) -> Image.Image:
    mask = _decode(page.evaluate(MASK_JS))
    assert mask.size == (WIDTH, HEIGHT)  # the image's own pixel size, not the screen's
    assert {color for _, color in mask.getcolors()} <= {(0, 0, 0), (255, 255, 255)}  # B/W only
    return mask.convert("L")


def _stroke(page: Page, y_share: float = 0.5) -> None:
    """A horizontal mouse stroke across the middle third of the canvas."""
    box = page.get_by_role("img", name="Mask painting area").bounding_box()
    y = box["y"] + box["height"] * y_share
    page.mouse.move(box["x"] + box["width"] / 3, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 2 / 3, y, steps=8)
    page.mouse.up()


def _white(mask: Image.Image) -> int:
    return mask.histogram()[255]


def _gallery_params(page: Page, job_id: str, text: str) -> None:
    """The gallery card's parameters (from the record) name the edit."""
    first = page.locator(f'#gallery-list .card[data-job-id="{job_id}"]').first
    first.locator("summary", has_text="Parameters").click()
    expect(first.locator("dl.params")).to_contain_text(text)


def _output(dashboard: Dashboard, job: dict) -> Image.Image:
    with dashboard.client() as client:
        answer = client.get(job["outputs"][0]["url"])
    assert answer.status_code == 200, answer.text
    return Image.open(io.BytesIO(answer.content)).convert("RGB")


def test_brush_eraser_invert_and_clear_change_the_mask(open_page) -> None:
    page = open_page()
    expect(page.get_by_label("Paint a mask")).to_be_hidden()  # nothing to paint on yet
    _choose_image(page)
    page.get_by_label("Paint a mask").check()
    canvas = page.get_by_role("img", name="Mask painting area")
    expect(canvas).to_be_visible()
    assert canvas.evaluate("(c) => [c.width, c.height]") == [WIDTH, HEIGHT]
    # Scaled to fit, the same shape as the image it lies over.
    box = canvas.bounding_box()
    image = page.get_by_role("img", name="The input image under the mask").bounding_box()
    assert box == pytest.approx(image, abs=1)
    assert box["width"] / box["height"] == pytest.approx(WIDTH / HEIGHT, rel=0.02)
    expect(page.locator("#mask-coverage")).to_have_text(
        "Nothing painted: the input comes back unchanged.")
    empty = page.evaluate(MASK_JS)
    assert _white(_mask(page)) == 0

    page.get_by_label("Brush size").fill("20")
    _stroke(page)
    painted = _mask(page)
    stroke_pixels = _white(painted)
    assert 0 < stroke_pixels < WIDTH * HEIGHT / 2
    assert painted.getpixel((WIDTH // 2, HEIGHT // 2)) == 255  # on the stroke
    assert painted.getpixel((2, 2)) == 0 and painted.getpixel((WIDTH - 3, HEIGHT - 3)) == 0
    expect(page.locator("#mask-coverage")).to_contain_text("of the image will be repainted")

    # Invert: the exact complement; again: back to the stroke.
    page.get_by_role("button", name="Invert mask").click()
    inverted = _mask(page)
    assert ImageChops.invert(painted).tobytes() == inverted.tobytes()
    page.get_by_role("button", name="Invert mask").click()
    assert _mask(page).tobytes() == painted.tobytes()

    # The eraser takes a part of the stroke away, and only that.
    page.get_by_label("Eraser").check()
    box = canvas.bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    erased = _mask(page)
    assert erased.getpixel((WIDTH // 2, HEIGHT // 2)) == 0
    assert 0 < _white(erased) < stroke_pixels
    assert ImageChops.darker(erased, painted).tobytes() == erased.tobytes()  # nothing added

    # Clear: all black again, the very mask an untouched canvas gives.
    page.get_by_role("button", name="Clear mask").click()
    assert page.evaluate(MASK_JS) == empty
    expect(page.locator("#mask-coverage")).to_have_text(
        "Nothing painted: the input comes back unchanged.")

    # Only masked: the padding slider is offered; removing the image hides the painter.
    expect(page.get_by_label("Padding")).to_be_disabled()
    page.get_by_label("Only masked", exact=True).check()
    expect(page.get_by_label("Padding")).to_be_enabled()
    page.get_by_role("button", name="Remove image").click()
    expect(page.get_by_label("Paint a mask")).to_be_hidden()
    assert page.evaluate(MASK_JS) is None


def test_inpaint_repaints_the_stroke_and_keeps_the_rest(open_page, dashboard: Dashboard) -> None:
    page = open_page()
    _choose_image(page)
    page.get_by_label("Prompt", exact=True).fill("A red balloon")
    _png_output(page)
    page.get_by_label("Paint a mask").check()
    page.get_by_label("Brush size").fill("24")
    _stroke(page)
    mask = _mask(page)
    sent = page.evaluate(MASK_JS)
    job_id = start_render(page)
    card = finished_card(page, job_id)
    expect(card.locator(".live-refs")).to_contain_text("Inpaint (whole picture, blur 4)")
    expect(card.get_by_role("img", name="Before: the input image")).to_be_visible()
    expect(card.get_by_role("img", name="After: A red balloon")).to_be_visible()

    job = dashboard.client().get(f"/jobs/{job_id}").json()
    request = job["request"]
    assert "width" not in request or request["width"] in (None, WIDTH)  # the input's size
    mask_hash = pixel_hash(load_mask(sent))
    assert mask_hash in str(request.get("mask")), request
    assert "base64" not in json.dumps(request)  # by hash, never the pixels
    record = job["outputs"][0]["record"]
    assert record["mask"]["sha256"] == mask_hash
    assert record["mask"]["blur"] == 4 and record["mask"]["area"] == "whole"
    _gallery_params(page, job_id, f"whole picture, blur 4 · mask {mask_hash[:12]}")

    output = _output(dashboard, job)
    source = Image.open(io.BytesIO(_input_png())).convert("RGB")
    assert output.size == source.size
    # Beyond the stroke's blur (the library's, radius 4): exactly the input's pixels.
    assert _changed_outside(output, source, mask) is None, "pixels away from the mask changed"
    differ = ImageChops.difference(output, source).convert("L").point(lambda v: 255 if v else 0)
    assert ImageChops.multiply(differ, mask).getbbox() is not None, "nothing was repainted"

    # Only masked, with padding: the record says so, and the rest is kept all the same.
    page.get_by_label("Only masked", exact=True).check()
    page.get_by_label("Padding").fill("16")
    masked_id = start_render(page)
    finished_card(page, masked_id)
    masked = dashboard.client().get(f"/jobs/{masked_id}").json()
    assert masked["outputs"][0]["record"]["mask"] == {
        "sha256": mask_hash, "blur": 4, "area": "masked", "padding": 16}
    assert _changed_outside(_output(dashboard, masked), source, mask) is None


def test_outpaint_left_by_64(open_page, dashboard: Dashboard) -> None:
    page = open_page()
    _choose_image(page)
    _png_output(page)
    page.get_by_label("Extend by").fill("64")
    page.get_by_label("Extend left").check()
    expect(page.locator("#expand-size")).to_have_text("New canvas: 160 × 64 (from 96 × 64).")
    page.get_by_label("Extend top").check()
    expect(page.locator("#expand-size")).to_have_text("New canvas: 160 × 128 (from 96 × 64).")
    page.get_by_label("Extend top").uncheck()
    job_id = start_render(page)
    card = finished_card(page, job_id)
    expect(card.locator(".live-refs")).to_contain_text("Outpaint: left 64 px")
    expect(card.get_by_role("img", name="Before: the input image")).to_be_visible()

    job = dashboard.client().get(f"/jobs/{job_id}").json()
    assert job["request"]["expand"] == {"left": 64} or {
        side: px for side, px in job["request"]["expand"].items() if px} == {"left": 64}
    record = job["outputs"][0]["record"]
    assert {side: px for side, px in record["expand"].items() if px} == {"left": 64}
    _gallery_params(page, job_id, "left 64 px")
    output = _output(dashboard, job)
    assert output.size == (WIDTH + 64, HEIGHT)
    # The input's pixels, beyond the blurred seam, come back as they were.
    source = Image.open(io.BytesIO(_input_png())).convert("RGB")
    placed = Image.new("RGB", output.size)
    placed.paste(source, (64, 0))
    added = Image.new("L", output.size, 0)
    added.paste(255, (0, 0, 64, HEIGHT))
    assert _changed_outside(output, placed, added) is None
    strip = output.crop((0, 0, 32, HEIGHT))  # the added side: rendered, not one flat colour
    assert any(low != high for low, high in strip.getextrema())


def _changed_outside(output: Image.Image, source: Image.Image, mask: Image.Image):
    """The box of pixels that differ where the blurred mask is 0 (None: none do)."""
    kept = blur_mask(mask, 4).point(lambda v: 0 if v else 255)
    differ = ImageChops.difference(output, source).convert("L").point(lambda v: 255 if v else 0)
    return ImageChops.multiply(differ, kept).getbbox()


def _tiny_mask_data_url() -> str:
    buffer = io.BytesIO()
    Image.new("L", (8, 8), 255).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_field_errors_show_beside_the_mask_and_the_side(open_page) -> None:
    page = open_page()
    _choose_image(page)
    page.get_by_label("Prompt", exact=True).fill("A kite")

    # A side that is not a multiple of 8, as typed: the server's 422 names expand.left.
    page.get_by_label("Extend by").fill("60")
    page.get_by_label("Extend left").check()
    page.get_by_role("button", name="Generate").click()
    error = page.locator('[data-field="expand.left"] .error')
    expect(error).to_be_visible()
    expect(error).to_contain_text("8")
    expect(page.get_by_label("Extend left")).to_have_attribute("aria-invalid", "true")
    expect(page.locator(".live-card")).to_have_count(0)
    page.get_by_label("Extend left").uncheck()

    # A mask whose size is not the image's (the request altered on its way, as another
    # client might send it): the server's 422 names mask, shown beside the painter.
    page.get_by_label("Paint a mask").check()
    _stroke(page)

    def shrink_mask(route: Route) -> None:
        body = json.loads(route.request.post_data or "{}")
        body["mask"] = _tiny_mask_data_url()
        route.continue_(post_data=json.dumps(body))

    page.route("**/generate", shrink_mask)
    page.get_by_role("button", name="Generate").click()
    error = page.locator('[data-field="mask"] > .error')
    expect(error).to_be_visible()
    expect(error).to_contain_text("size")
    expect(page.get_by_label("Paint a mask")).to_have_attribute("aria-invalid", "true")
    expect(page.locator(".live-card")).to_have_count(0)


def test_painting_with_a_finger_on_a_phone(open_page) -> None:
    page = open_page(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    _choose_image(page)
    page.get_by_label("Paint a mask").check()
    canvas = page.get_by_role("img", name="Mask painting area")
    box = canvas.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    page.touchscreen.tap(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    mask = _mask(page)
    assert mask.getpixel((WIDTH // 2, HEIGHT // 2)) == 255
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page scrolls sideways: {width} px wide"
    boxes = page.evaluate("""() => [...document.querySelectorAll(
        '#image-edit input, #image-edit button, #image-edit canvas, #image-edit label')]
        .filter((el) => el.offsetParent !== null)
        .map((el) => { const r = el.getBoundingClientRect();
                       return {id: el.id || el.textContent, left: r.left, right: r.right}; })""")
    assert len(boxes) > 10
    for item in boxes:
        assert item["left"] >= 0 and item["right"] <= PHONE["width"], item
