"""Batches through the dashboard: start one from pasted prompts, watch its progress."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.dashboard.conftest import Dashboard

PROMPTS = ["a lake at dawn", "", "  a desert at noon  ", "a volcano at night",
           "a waterfall in the mountains"]


def test_start_a_batch_from_pasted_prompts_and_watch_it(open_page,
                                                        dashboard: Dashboard) -> None:
    page = open_page()
    # The create form's settings go with every line.
    page.locator("#style-list label", has_text="Pixel art").click()
    page.fill("#width", "96")
    page.fill("#height", "64")
    page.click("#batch-start")  # nothing pasted yet
    expect(page.locator("#batch-error")).to_contain_text("at least one prompt")
    expect(page.locator("#batch-prompts")).to_be_focused()

    page.fill("#batch-name", "four scenes")
    page.fill("#batch-prompts", "\n".join(PROMPTS))
    page.click("#batch-start")
    expect(page.locator("#batch-error")).to_be_hidden()
    expect(page.locator("#batch-status")).to_contain_text("Started four scenes of 4 renders")
    row = page.locator(".batch", has_text="four scenes")
    expect(row.locator("progress")).to_have_attribute("max", "4")
    # Polled until done: the bar and the counts reach the end without a reload.
    expect(row).to_have_attribute("data-status", "finished", timeout=60_000)
    expect(row.locator("progress")).to_have_js_property("value", 4)
    expect(row.locator(".batch-counts")).to_contain_text(
        re.compile(r"4 of 4 finished \(4 succeeded"))

    batch_id = row.get_attribute("data-batch-id")
    client = dashboard.client()
    lines = client.get(f"/batches/{batch_id}/results").text.splitlines()
    assert len(lines) == 4
    results = [__import__("json").loads(line) for line in lines]
    assert [result["parameters"]["prompt"] for result in results] == [
        "a lake at dawn", "a desert at noon", "a volcano at night",
        "a waterfall in the mountains"]
    assert {result["parameters"]["style"] for result in results} == {"Pixel art"}
    assert {(result["parameters"]["width"], result["parameters"]["height"])
            for result in results} == {(96, 64)}
    # Unlocked seed: each line drew its own.
    assert len({result["seed"] for result in results}) == 4


def test_a_batch_422_names_the_line(open_page) -> None:
    page = open_page()
    page.fill("#width", "100")  # every item inherits the bad width
    page.fill("#batch-prompts", "one\ntwo")
    page.click("#batch-start")
    expect(page.locator("#batch-error")).to_contain_text(re.compile(r"Line 1 .*multiple of 8"))
    expect(page.locator("#batch-prompts")).to_have_attribute("aria-invalid", "true")
