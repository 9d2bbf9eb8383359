"""The page itself: served without a key under a strict CSP; the key flow and its 401
messages; an API 422 shown next to its field; a phone-width screen."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect

from api.routers.dashboard import content_security_policy
from tests.dashboard.conftest import KEY_STORAGE, Dashboard, finished_card
from tests.services import SeaweedS3
from workers.settings import Settings
from workers.storage import get_storage

PHONE = {"width": 360, "height": 740}


def test_page_and_assets_need_no_key_but_the_api_does(dashboard: Dashboard) -> None:
    for path in ("/", "/ui/app.js", "/ui/style.css", "/ui/options.json",
                 "/ui/styles/watercolor.jpg"):
        response = httpx.get(dashboard.base + path)
        assert response.status_code == 200, path
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "object-src 'none'" in policy
        assert "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy
        assert response.headers["x-content-type-options"] == "nosniff"
    assert httpx.head(dashboard.base + "/").status_code == 200
    assert httpx.get(dashboard.base + "/ui/app.js").headers["content-type"].startswith(
        "text/javascript")
    assert "golden hour" in httpx.get(dashboard.base + "/ui/options.json").json()["lighting"]
    # Open means the dashboard's files only: the API behind it still wants the key.
    for path in ("/jobs", "/styles", "/ui", "/uix", "/docs"):
        assert httpx.get(dashboard.base + path).status_code == 401, path
    assert httpx.get(dashboard.base + "/ui/missing.js").status_code == 404


def test_csp_allows_images_from_the_presigned_host(tmp_path: Path, seaweedfs_s3: SeaweedS3,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in seaweedfs_s3.aws_env.items():
        monkeypatch.setenv(name, value)
    # Clients reach the storage by another name than the API does: that name is allowed.
    public = seaweedfs_s3.endpoint_url.replace("127.0.0.1", "localhost")
    settings = Settings(data_dir=tmp_path, storage_url="s3://dashboard-csp",
                        s3_endpoint_url=seaweedfs_s3.endpoint_url,
                        s3_public_endpoint_url=public)
    policy = content_security_policy(settings, get_storage(settings))
    parts = dict(part.split(" ", 1) for part in policy.split("; "))
    assert parts["img-src"] == f"'self' data: blob: {public}"
    assert parts["connect-src"] == f"'self' {public}"  # "use as input" reads the bytes
    local = content_security_policy(Settings(data_dir=tmp_path), get_storage(
        Settings(data_dir=tmp_path)))
    assert "img-src 'self' data: blob:;" in local


def test_no_key_asks_for_one_and_a_saved_key_works(open_page, dashboard: Dashboard) -> None:
    page = open_page(key=False)
    notice = page.locator("#notice")
    expect(notice).to_contain_text("needs an API key")
    expect(page.locator("#api-key")).to_be_focused()  # the message leads to the field
    page.fill("#api-key", "s2f_not-a-real-key")
    page.click("text=Save key")
    expect(notice).to_contain_text("refused")
    page.fill("#api-key", dashboard.key)
    page.press("#api-key", "Enter")
    expect(notice).to_be_hidden()
    expect(page.locator("#key-state")).to_have_text("Key saved in this browser.")
    expect(page.locator("#style-list label", has_text="Watercolor")).to_be_visible()
    expect(page.locator("#model option[value=fractal]")).to_have_count(1)
    assert page.evaluate(f"localStorage.getItem({KEY_STORAGE!r})") == dashboard.key
    page.reload()  # entered once: kept in the browser
    page.wait_for_selector("body[data-ready=true]", state="attached")
    expect(page.locator("#style-list label", has_text="Watercolor")).to_be_visible()
    expect(notice).to_be_hidden()


def test_a_late_refusal_of_a_replaced_key_shows_nothing(open_page, dashboard: Dashboard
                                                       ) -> None:
    """A request sent with a key the person has since replaced may be refused after the new
    key works: that 401 says nothing of the key in use, so no "refused" notice."""
    page = open_page()
    status = page.evaluate("""async (valid) => {
        const { api, setKey } = await import("/ui/api.js");
        setKey("s2f_since-replaced");
        const pending = api("/jobs").catch((error) => error);  // sent with that key
        setKey(valid);  // replaced before its answer comes
        return (await pending).status;
    }""", dashboard.key)
    assert status == 401
    expect(page.locator("#notice")).to_be_hidden()
    page.evaluate("""async () => {  // a refusal of the key in use still says so
        const { api, setKey } = await import("/ui/api.js");
        setKey("s2f_not-a-real-key");
        await api("/jobs").catch(() => null);
    }""")
    expect(page.locator("#notice")).to_contain_text("refused")


def test_an_api_422_shows_next_to_its_field(open_page) -> None:
    page = open_page()
    page.fill("#prompt", "a lake")
    page.fill("#width", "100")  # not a multiple of 8: only the API says so
    page.click("#generate")
    error = page.locator("#width-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("multiple of 8")
    expect(page.locator("#width")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#width")).to_be_focused()
    expect(page.locator("#width")).to_have_attribute("aria-describedby", re.compile("width-error"))
    expect(page.locator("#height-error")).to_be_hidden()
    # Fixed and sent again: the message goes away and the render starts.
    page.fill("#width", "64")
    page.fill("#height", "64")
    page.click("#generate")
    expect(error).to_be_hidden()
    job_id = page.locator(".live-card").first.get_attribute("data-job-id")
    finished_card(page, job_id)


def test_an_empty_prompt_is_the_prompt_fields_error(open_page) -> None:
    page = open_page()
    page.click("#generate")
    expect(page.locator("#prompt-error")).to_contain_text("required")
    expect(page.locator("#prompt")).to_be_focused()


def test_phone_width(open_page) -> None:
    page = open_page(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page scrolls sideways: {width} px wide"
    # Every control of the form fits the screen and is big enough to tap.
    boxes = page.evaluate("""() => [...document.querySelectorAll(
        '#create-form button, #create-form select, #create-form textarea, #create-form input')]
        .filter((el) => el.offsetParent !== null)
        .map((el) => { const r = el.getBoundingClientRect();
                       return {id: el.id || el.textContent, left: r.left, right: r.right,
                               height: r.height}; })""")
    assert boxes
    for box in boxes:
        assert box["left"] >= 0 and box["right"] <= PHONE["width"], box
    for box in boxes:
        if box["id"] in ("generate", "seed-lock", "seed-new", "color-add"):
            assert box["height"] >= 32, box
    page.fill("#prompt", "a lake on a phone")
    page.select_option("#size-preset", "512x768")
    page.locator("#generate").tap()
    job_id = page.locator(".live-card").first.get_attribute("data-job-id")
    card = finished_card(page, job_id)
    expect(card.locator("img")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]


def test_keyboard_reaches_the_form_in_order(open_page) -> None:
    page = open_page()
    page.keyboard.press("Tab")
    expect(page.locator(".skip-link")).to_be_focused()
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    expect(page.locator("#prompt")).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.locator("#negative_prompt")).to_be_focused()
    page.keyboard.press("Tab")  # the style radios: one tab stop, arrows move within
    focused = page.evaluate("document.activeElement.name")
    assert focused == "style"
    page.keyboard.press("ArrowDown")
    assert page.evaluate("document.activeElement.value") != ""
    outline = page.evaluate("getComputedStyle(document.activeElement.closest('label'))"
                            ".outlineStyle")
    assert outline == "solid"  # a visible focus ring on the picked style
