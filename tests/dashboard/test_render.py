"""Rendering through the dashboard: generate and watch progress, see the image and its
parameters, refine it (reuse, variation with a new seed, compare), image-to-image from an
upload, a drop and a gallery image, cancel, and the per-key quota's 429."""

from __future__ import annotations

import io
import re
from urllib.parse import urlsplit

from PIL import Image
from playwright.sync_api import expect

from tests.dashboard.conftest import (
    MAX_JOBS_PER_KEY,
    Dashboard,
    finished_card,
    newest_job,
    start_render,
)

PROMPT = "A serene lake surrounded by mountains during sunrise"


def _png(color: tuple[int, int, int], size: int = 96) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, "PNG")
    return buffer.getvalue()


def test_generate_watch_progress_and_see_parameters(open_page, dashboard: Dashboard) -> None:
    page = open_page()
    page.fill("#prompt", PROMPT)
    page.fill("#negative_prompt", "people")
    page.locator("#style-list label", has_text="Oil painting").click()
    page.select_option("#size-preset", "2048x2048")  # big enough to show its steps
    page.select_option("#lighting", "golden hour")
    page.click("#color-add")
    page.locator("#color-list input[type=color]").first.fill("#ff8800")
    page.check("#texture-on")
    page.locator("#texture").fill("0.8")
    job_id = start_render(page)
    card = page.locator(f'.live-card[data-job-id="{job_id}"]')

    # Live: the bar moves with the steps and shows the step's preview, before the end.
    page.wait_for_function("""(id) => {
        const card = document.querySelector(`.live-card[data-job-id="${id}"]`);
        const bar = card.querySelector('progress');
        return card.dataset.status !== 'succeeded' && bar.value > 0 && bar.value < bar.max
            && card.querySelector('img').src.startsWith('data:image/');
    }""", arg=job_id)
    expect(card.locator(".live-status")).to_contain_text(re.compile(r"Step \d+ of \d+"))
    expect(card.locator(".live-status")).to_have_attribute("role", "status")

    finished_card(page, job_id)
    assert card.locator("progress").evaluate("(bar) => bar.value === bar.max")
    expect(card.locator(".live-status")).to_contain_text("Done")

    # Gallery: the image first, with its parameters from its record, and a download link.
    first = page.locator("#gallery-list .card").first
    expect(first).to_have_attribute("data-job-id", job_id)
    image = first.locator("img")
    expect(image).to_have_attribute("alt", PROMPT)
    # Its 512 px thumbnail, not the 2048² original (tests/dashboard/test_thumbnails.py).
    page.wait_for_function("(img) => img.complete && img.naturalWidth === 512",
                           arg=image.element_handle())
    first.locator("summary", has_text="Parameters").click()
    params = first.locator("dl.params")
    job = dashboard.client().get(f"/jobs/{job_id}").json()
    record = job["outputs"][0]["record"]
    for text in (PROMPT, "Oil painting", "2048 × 2048", str(record["seed"]), "golden hour",
                 "#ff8800", "0.8", "people", "fractal"):
        expect(params).to_contain_text(text)
    download = first.locator("a", has_text="Download")
    # The same stored image (each answer signs its URL afresh, so only the path is equal).
    assert urlsplit(download.get_attribute("href")).path == urlsplit(
        job["outputs"][0]["url"]).path
    assert download.get_attribute("download") == f"spec2fractal-{job_id}-0.png"
    with page.expect_download() as saved:
        download.click()
    assert saved.value.suggested_filename == f"spec2fractal-{job_id}-0.png"
    assert saved.value.path().read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # What the API was asked: every form value, as the API names it.
    request = job["request"]
    assert request["prompt"] == PROMPT and request["negative_prompt"] == "people"
    assert request["style"] == "Oil painting" and request["lighting"] == "golden hour"
    assert request["colors"] == ["#ff8800"] and request["texture"] == 0.8
    assert (request["width"], request["height"]) == (2048, 2048)


def test_refine_reuse_variation_and_compare(open_page, dashboard: Dashboard) -> None:
    page = open_page()
    page.fill("#prompt", "a fractal flame")
    page.fill("#width", "128")
    page.fill("#height", "96")
    page.locator("#style-list label", has_text="Watercolor").click()
    page.click("summary:has-text('Advanced')")
    page.fill("#steps", "6")
    first_id = start_render(page)
    finished_card(page, first_id)
    original = dashboard.client().get(f"/jobs/{first_id}").json()

    # Variation: the same parameters, a new seed, started at once.
    card = page.locator(f'#gallery-list .card[data-job-id="{first_id}"]')
    card.get_by_role("button", name="Variation").click()
    expect(page.locator(".live-card").first).not_to_have_attribute("data-job-id", first_id)
    second_id = page.locator(".live-card").first.get_attribute("data-job-id")
    finished_card(page, second_id)
    variation = dashboard.client().get(f"/jobs/{second_id}").json()
    for name in ("prompt", "style", "width", "height", "steps", "input_type"):
        assert variation["request"][name] == original["request"][name], name
    assert variation["request"]["seed"] != original["request"]["seed"]

    # Reuse: every parameter back in the form, the seed locked to the image's own.
    page.reload()
    page.wait_for_selector("body[data-ready=true]", state="attached")
    card = page.locator(f'#gallery-list .card[data-job-id="{first_id}"]')
    card.get_by_role("button", name="Reuse settings").click()
    expect(page.locator("#prompt")).to_be_focused()
    expect(page.locator("#prompt")).to_have_value("a fractal flame")
    expect(page.locator("#width")).to_have_value("128")
    expect(page.locator("#height")).to_have_value("96")
    expect(page.locator("#steps")).to_have_value("6")
    expect(page.locator("#seed")).to_have_value(str(original["request"]["seed"]))
    expect(page.locator("#seed-lock")).to_have_attribute("aria-pressed", "true")
    expect(page.locator('#style-list input[value="Watercolor"]')).to_be_checked()
    # Sent again as it is: the same image, seed for seed.
    again_id = start_render(page)
    finished_card(page, again_id)
    again = dashboard.client().get(f"/jobs/{again_id}").json()
    assert again["request"]["seed"] == original["request"]["seed"]
    # Unlocked, the next render draws a new seed.
    page.click("#seed-lock")
    expect(page.locator("#seed-lock")).to_have_attribute("aria-pressed", "false")
    fresh_id = start_render(page)
    finished_card(page, fresh_id)
    fresh = dashboard.client().get(f"/jobs/{fresh_id}").json()
    assert fresh["request"]["seed"] != original["request"]["seed"]

    # Compare two images side by side; their differing seed is marked.
    for job_id in (first_id, second_id):
        page.locator(f'#gallery-list .card[data-job-id="{job_id}"]').get_by_label(
            "Compare").check()
    compare = page.locator("#compare-open")
    expect(compare).to_have_text("Compare selected (2 of 2)")
    compare.click()
    dialog = page.locator("#compare-dialog")
    expect(dialog).to_be_visible()
    expect(dialog.locator(".compare-side")).to_have_count(2)
    expect(dialog.locator(".compare-side img")).to_have_count(2)
    expect(dialog.locator("dt.differs", has_text="Seed")).to_have_count(2)
    expect(dialog.locator("dt.differs", has_text="Prompt")).to_have_count(0)
    expect(page.locator("#compare-close")).to_be_focused()
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(compare).to_be_focused()

    # Filters: by style on the server.
    page.select_option("#filter-style", "Oil painting")
    expect(page.locator(f'#gallery-list .card[data-job-id="{first_id}"]')).to_have_count(0)
    page.select_option("#filter-style", "Watercolor")
    expect(page.locator(f'#gallery-list .card[data-job-id="{first_id}"]')).to_have_count(1)
    expect(page.locator("#gallery-list .card[data-status]").first).to_be_visible()
    page.select_option("#filter-status", "failed")
    expect(page.locator("#gallery-status")).to_contain_text("No renders")


def test_image_to_image_from_upload_drop_and_gallery(open_page, dashboard: Dashboard) -> None:
    page = open_page()
    expect(page.locator("#strength")).to_be_disabled()
    page.set_input_files("#image", files=[{"name": "red.png", "mimeType": "image/png",
                                           "buffer": _png((200, 30, 30))}])
    expect(page.locator("#image-preview")).to_be_visible()
    expect(page.locator("#image-name")).to_contain_text("red.png")
    expect(page.locator("#strength")).to_be_enabled()
    page.locator("#strength").fill("0.35")
    page.fill("#prompt", "a red sunset")
    page.fill("#width", "64")
    page.fill("#height", "64")
    job_id = start_render(page)
    finished_card(page, job_id)
    request = dashboard.client().get(f"/jobs/{job_id}").json()["request"]
    assert request["input_type"] == "hybrid" and request["strength"] == 0.35

    # Dropped instead of picked: a blue image, and no prompt makes it pure image-to-image.
    page.click("#image-clear")
    expect(page.locator("#image-chosen")).to_be_hidden()
    expect(page.locator("#strength")).to_be_disabled()
    blue = list(_png((20, 40, 220)))
    transfer = page.evaluate_handle("""(bytes) => {
        const data = new DataTransfer();
        data.items.add(new File([new Uint8Array(bytes)], 'blue.png', {type: 'image/png'}));
        return data;
    }""", blue)
    page.dispatch_event("#drop-zone", "dragover", {"dataTransfer": transfer})
    page.dispatch_event("#drop-zone", "drop", {"dataTransfer": transfer})
    expect(page.locator("#image-name")).to_contain_text("blue.png")
    page.fill("#prompt", "")
    dropped_id = start_render(page)
    finished_card(page, dropped_id)
    assert dashboard.client().get(f"/jobs/{dropped_id}").json()["request"]["input_type"] \
        == "image"

    # A file that is not an image is refused next to the drop zone.
    page.set_input_files("#image", files=[{"name": "notes.txt", "mimeType": "text/plain",
                                           "buffer": b"hello"}])
    expect(page.locator("#image-error")).to_contain_text("not a PNG, JPEG or WEBP")

    # A gallery image as the input: fetched into the upload slot with its parameters.
    page.click("#image-clear")
    card = page.locator(f'#gallery-list .card[data-job-id="{job_id}"]')
    card.get_by_role("button", name="Use as input").click()
    expect(page.locator("#image-chosen")).to_be_visible()
    expect(page.locator("#strength")).to_be_focused()
    expect(page.locator("#prompt")).to_have_value("a red sunset")
    from_gallery = start_render(page)
    finished_card(page, from_gallery)
    job = dashboard.client().get(f"/jobs/{from_gallery}").json()
    assert job["request"]["input_type"] == "hybrid"
    assert (job["outputs"][0]["width"], job["outputs"][0]["height"]) == (64, 64)


def test_cancel_running_and_queued_jobs_and_the_quota_429(open_page,
                                                           dashboard: Dashboard) -> None:
    page = open_page()
    page.fill("#prompt", "a spiral galaxy")
    page.select_option("#size-preset", "4096x4096")  # seconds of work: time to cancel
    running = start_render(page)
    queued = start_render(page)  # behind it: the server's one worker is busy
    assert MAX_JOBS_PER_KEY == 2
    page.click("#generate")  # a third unfinished job is over this key's quota
    notice = page.locator("#notice")
    expect(notice).to_contain_text("Too many requests")
    expect(notice).to_contain_text(re.compile(r"Try again in \d+ s"))
    expect(page.locator(".live-card")).to_have_count(2)

    page.locator(f'.live-card[data-job-id="{queued}"]').get_by_role("button",
                                                                    name="Cancel").click()
    finished_card(page, queued, "cancelled")
    card = page.locator(f'.live-card[data-job-id="{running}"]')
    expect(card.locator(".live-status")).to_contain_text(re.compile("Rendering|Step"))
    card.get_by_role("button", name="Cancel").click()
    finished_card(page, running, "cancelled")
    expect(card.locator(".live-status")).to_have_text("Cancelled.")
    expect(card.get_by_role("button", name="Cancel")).to_be_hidden()
    client = dashboard.client()
    assert client.get(f"/jobs/{running}").json()["status"] == "cancelled"
    assert client.get(f"/jobs/{queued}").json()["status"] == "cancelled"
    assert newest_job(client)["id"] == queued  # the refused third made no job
    # Shown in the gallery under its status.
    page.select_option("#filter-status", "cancelled")
    expect(page.locator(f'#gallery-list .card[data-job-id="{running}"] .badge')).to_have_text(
        "cancelled")
    card.get_by_role("button", name="Dismiss").click()
    expect(card).to_have_count(0)
