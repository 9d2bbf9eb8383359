"""The dashboard in a real browser: Debian's Chromium driven by Playwright against
``spec2fractal serve`` (its embedded worker, the built-in engine) with API keys required.

Chromium comes from apt (scripts/test installs it), never from ``playwright install``. Each
test gets a fresh browser context (its own localStorage) and leaves a screenshot under
``test-artifacts/dashboard/`` in the repository (git-ignored), also when it fails.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Page,
    Playwright,
    expect,
    sync_playwright,
)

from tests.api.auth_helpers import bearer, make_key
from tests.api_server import serving
from workers.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "dashboard"
KEY_STORAGE = "spec2fractal.apiKey"  # api/dashboard/api.js keeps the key under this name
MAX_JOBS_PER_KEY = 2  # small, so a third render at once shows the quota's 429
DESKTOP = {"width": 1280, "height": 900}
TIMEOUT_MS = 30_000  # every wait is bounded: a stuck page fails, it does not hang


@dataclass(frozen=True)
class Dashboard:
    base: str
    key: str
    data_dir: Path

    def client(self) -> httpx.Client:
        """The API as the page's key sees it, to check what the page did."""
        return httpx.Client(base_url=self.base, headers=bearer(self.key), timeout=30)


@pytest.fixture(scope="package")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    """``spec2fractal serve`` on a free loopback port, keys required, one key made."""
    data_dir = tmp_path_factory.mktemp("dashboard")
    key = make_key(Settings(data_dir=data_dir), "dashboard")
    # One worker: the cancel test needs a job that waits behind a running one (serve's
    # default on a CPU machine is a worker per core).
    with serving(data_dir, SPEC2FRACTAL_AUTH="required", SPEC2FRACTAL_EMBEDDED_WORKERS="1",
                 SPEC2FRACTAL_MAX_JOBS_PER_KEY=str(MAX_JOBS_PER_KEY)) as api:
        yield Dashboard(base=api.url, key=key, data_dir=data_dir)


@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="package")
def browser(playwright: Playwright) -> Iterator[Browser]:
    executable = shutil.which("chromium")
    assert executable, "Chromium is missing: `apt-get install -y chromium` (scripts/test does)"
    browser = playwright.chromium.launch(executable_path=executable, headless=True,
                                         args=["--no-sandbox"])
    yield browser
    browser.close()


@pytest.fixture
def open_page(browser: Browser, dashboard: Dashboard,
              request: pytest.FixtureRequest) -> Iterator[Callable[..., Page]]:
    """``open_page(key=True, viewport=DESKTOP, **context options)``: the dashboard in a new
    context, the key already saved (as after typing it once) unless ``key=False``. Console
    errors fail the test; a screenshot of every page is kept."""
    contexts: list[tuple[BrowserContext, Page]] = []
    errors: list[str] = []

    def open_(*, key: bool = True, viewport: dict | None = None, **options) -> Page:
        context = browser.new_context(viewport=viewport or DESKTOP, **options)
        context.set_default_timeout(TIMEOUT_MS)
        if key:
            context.add_init_script(
                f"localStorage.setItem({KEY_STORAGE!r}, {dashboard.key!r})")
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
        page.on("console", lambda message: errors.append(f"console: {message.text}")
                if message.type == "error" and not _expected(message.text) else None)
        page.goto(dashboard.base + "/")
        page.wait_for_selector("body[data-ready=true]", state="attached")
        contexts.append((context, page))
        return page

    yield open_
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for number, (context, page) in enumerate(contexts):
        suffix = f"-{number + 1}" if len(contexts) > 1 else ""
        page.screenshot(path=ARTIFACTS / f"{request.node.name}{suffix}.png", full_page=True)
        context.close()
    assert not errors, errors


def _expected(text: str) -> bool:
    # The browser logs every non-2xx fetch; the tests cause some on purpose (401, 422, 429).
    return "Failed to load resource" in text


def finished_card(page: Page, job_id: str, status: str = "succeeded"):
    """The live card of a job, once the job has reached ``status``."""
    card = page.locator(f'.live-card[data-job-id="{job_id}"][data-status="{status}"]')
    card.wait_for()
    return card


def start_render(page: Page) -> str:
    """Clicks Generate; the id of the job the new live card follows."""
    before = page.locator(".live-card").count()
    page.get_by_role("button", name="Generate").click()
    expect(page.locator(".live-card")).to_have_count(before + 1)
    job_id = page.locator(".live-card").first.get_attribute("data-job-id")
    assert job_id
    return job_id


def url_path(url: str | None) -> str:
    """A signed URL without its query: each answer signs afresh (expiry, signature), so
    only the path is the same from one answer to the next."""
    assert url, "no URL"
    return urlsplit(url).path


def newest_job(client: httpx.Client) -> dict:
    jobs = client.get("/jobs", params={"limit": 1}).json()["jobs"]
    assert jobs, "no job was made"
    return jobs[0]
