"""The dashboard loads thumbnails, not full images: a page of 4K renders stays light. Each
thumbnail links to its full image."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.dashboard.conftest import Dashboard, finished_card, url_path


def test_gallery_and_live_cards_show_thumbnails_linking_to_full_images(
        open_page, dashboard: Dashboard) -> None:
    client = dashboard.client()
    made = client.post("/generate", json={"prompt": "a nautilus shell", "width": 1536,
                                          "height": 1024, "n": 2}).json()
    page = open_page()
    cards = page.locator(f'#gallery-list .card[data-job-id="{made["job_id"]}"]')
    expect(cards).to_have_count(2)
    outputs = client.get(f"/jobs/{made['job_id']}").json()["outputs"]
    for card, output in zip(cards.all(), outputs, strict=True):
        image = card.locator("figure img")
        page.wait_for_function("(img) => img.complete && img.naturalWidth > 0",
                               arg=image.element_handle())
        assert url_path(image.get_attribute("src")) == url_path(output["thumbnail_url"])
        assert url_path(image.get_attribute("src")).endswith(f"/{output['index']}.thumb.webp")
        assert image.evaluate("(img) => [img.naturalWidth, img.naturalHeight]") == [512, 341]
        link = card.locator("figure a.full-image")
        assert url_path(link.get_attribute("href")) == url_path(output["url"])
        assert link.locator("img").count() == 1  # the thumbnail is the link
    # No full image was fetched to show the gallery.
    fetched = page.evaluate("performance.getEntriesByType('resource').map((r) => r.name)")
    renders = [url_path(url) for url in fetched if "/files/renders/" in url]
    assert renders and all(path.endswith(".thumb.webp") for path in renders), renders

    # A render started on the page: its live card shows the thumbnail too.
    page.fill("#prompt", "a spiral staircase")
    page.fill("#width", "1024")
    page.fill("#height", "1024")
    page.click("#generate")
    live = page.locator(".live-card").first
    job_id = live.get_attribute("data-job-id")
    card = finished_card(page, job_id)
    output = client.get(f"/jobs/{job_id}").json()["outputs"][0]
    image = card.locator("img")
    page.wait_for_function("(img) => !img.hidden && img.complete && img.naturalWidth === 512",
                           arg=image.element_handle())
    assert url_path(image.get_attribute("src")) == url_path(output["thumbnail_url"])
    assert url_path(card.locator("a.full-image").get_attribute("href")) == url_path(output["url"])
