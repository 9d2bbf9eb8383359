"""Upscale ×2 from the gallery: a new job on the server from the stored image, followed
live, the larger image shown when it is done."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.dashboard.conftest import Dashboard, finished_card, url_path


def test_upscale_a_gallery_image(open_page, dashboard: Dashboard) -> None:
    client = dashboard.client()
    source = client.post("/generate", json={"prompt": "a windmill on a hill", "width": 64,
                                            "height": 48, "seed": 9})
    assert source.status_code == 200, source.text
    source_id = source.json()["job_id"]

    page = open_page()
    card = page.locator(f'#gallery-list .card[data-job-id="{source_id}"]')
    before = page.locator(".live-card").count()
    card.get_by_role("button", name="Upscale ×2").click()
    expect(page.locator(".live-card")).to_have_count(before + 1)
    upscale_id = page.locator(".live-card").first.get_attribute("data-job-id")
    assert upscale_id and upscale_id != source_id
    live = finished_card(page, upscale_id)
    job = client.get(f"/jobs/{upscale_id}").json()
    assert job["request"]["input_type"] == "upscale" and job["request"]["scale"] == 2
    output = job["outputs"][0]
    assert (output["width"], output["height"]) == (128, 96)
    assert output["record"]["passes"][0]["upscaler"] == "engine re-render"
    image, link = live.locator("img"), live.locator("a.full-image")
    expect(image).to_be_visible()
    assert url_path(image.get_attribute("src")) == url_path(output["thumbnail_url"])
    assert url_path(link.get_attribute("href")) == url_path(output["url"])
    # The gallery shows it too once it reloads after the job ends.
    expect(page.locator(f'#gallery-list .card[data-job-id="{upscale_id}"]')).to_be_visible()
