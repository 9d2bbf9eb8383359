"""The gallery's pages: newest first, a page at a time, every job once."""

from __future__ import annotations

import contextlib
import time

from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from playwright.sync_api import expect

from tests.dashboard.conftest import Dashboard

PAGE = 12  # api/dashboard/gallery.js asks for this many jobs a page


def test_pages_load_newest_first_without_repeats(open_page, dashboard: Dashboard) -> None:
    client = dashboard.client()
    items = [{"prompt": f"tiny scene {number}", "width": 16, "height": 16}
             for number in range(PAGE + 3)]
    batch = client.post("/batches", json={"name": "pages", "items": items}).json()
    deadline = time.monotonic() + 60
    while client.get(f"/batches/{batch['id']}").json()["status"] != "finished":
        assert time.monotonic() < deadline, "the batch did not finish"
        time.sleep(0.2)
    every = []
    cursor = None
    while True:
        page_of = client.get("/jobs", params={"limit": 100, **({"cursor": cursor} if cursor
                                                              else {})}).json()
        every += [job["id"] for job in page_of["jobs"]]
        cursor = page_of["next_cursor"]
        if not cursor:
            break

    page = open_page()
    cards = page.locator("#gallery-list .card")
    expect(cards).to_have_count(PAGE)
    more = page.locator("#gallery-more")
    expect(more).to_be_visible()
    for _ in range(len(every)):
        if more.is_hidden():
            break
        shown = cards.count()
        # Scrolling to the button may load the last page first (infinite scroll) and hide it.
        with contextlib.suppress(PlaywrightTimeoutError):
            more.click(timeout=2000)
        page.wait_for_function(
            "(n) => document.querySelectorAll('#gallery-list .card').length > n"
            " || document.getElementById('gallery-more').hidden", arg=shown)
    expect(more).to_be_hidden()
    ids = cards.evaluate_all("(cards) => cards.map((card) => card.dataset.jobId)")
    assert len(ids) == len(set(ids)) == len(every)  # each job once: one output each here
    assert ids == every  # the API's order: newest first
    expect(page.locator("#gallery-status")).to_contain_text(f"{len(every)} shown.")
