"""The web dashboard: ``GET /`` is its page, ``/ui/...`` its static files (api/dashboard/).

Plain HTML, CSS and JavaScript modules shipped in the package: nothing is built at install
time. The page and its files hold no data, so the Gatekeeper serves them without a key
(``api.auth.is_open``); the page keeps the caller's key in the browser and sends it on every
API call. Every answer here carries a strict Content-Security-Policy: scripts, styles and
API calls from this origin only; images also from ``data:`` (step previews), ``blob:``
(the chosen upload) and the origin the storage signs image URLs for (S3's presigned host).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import DASHBOARD_PREFIX
from fractal.controls import MAX_COLORS, lighting_names
from fractal.validation import MAX_N, MAX_SEED, MAX_SIDE, MAX_STEPS
from workers.settings import Settings
from workers.storage import Storage

__all__ = ["ASSETS", "content_security_policy", "install_dashboard"]

ASSETS = Path(__file__).resolve().parent.parent / "dashboard"
_PROBE_KEY = "dashboard-csp-probe"  # any key: only the signed URL's origin is read


def _origin(url: str | None) -> str | None:
    parts = urlsplit(url or "")
    if parts.scheme in ("http", "https") and parts.netloc:
        return f"{parts.scheme}://{parts.netloc}"
    return None


def content_security_policy(settings: Settings, storage: Storage) -> str:
    """Self only, plus the hosts image URLs point at (another origin in S3 mode)."""
    # Signing a URL is local work (no network, for S3 too): its origin is exactly where
    # the browser will fetch images from.
    hosts = {origin for origin in (_origin(storage.url(_PROBE_KEY, 60)),
                                   _origin(settings.public_url)) if origin}
    extra = "".join(f" {host}" for host in sorted(hosts))
    return "; ".join([
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        f"img-src 'self' data: blob:{extra}",
        f"connect-src 'self'{extra}",  # "use as input" fetches an image's bytes
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ])


class _WithHeaders:
    """Adds fixed headers to every response of the wrapped ASGI app."""

    def __init__(self, app: ASGIApp, headers: dict[str, str]) -> None:
        self.app = app
        self.raw = [(name.lower().encode(), value.encode()) for name, value in headers.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *self.raw]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _options() -> dict:
    """What the form offers, from the library's own limits (so the two never drift)."""
    return {"lighting": list(lighting_names()), "max_side": MAX_SIDE, "max_steps": MAX_STEPS,
            "max_colors": MAX_COLORS, "max_n": MAX_N, "max_seed": MAX_SEED}


def install_dashboard(app: FastAPI, settings: Settings, storage: Storage) -> None:
    """``GET /`` (the page), ``GET /ui/options.json`` and ``/ui/...`` (static files)."""
    headers = {
        "Content-Security-Policy": content_security_policy(settings, storage),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",  # image URLs carry signatures
    }
    page_headers = {**headers, "Cache-Control": "no-cache"}

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def dashboard_page() -> FileResponse:
        return FileResponse(ASSETS / "index.html", media_type="text/html; charset=utf-8",
                            headers=page_headers)

    @app.get(DASHBOARD_PREFIX + "options.json", include_in_schema=False)
    async def dashboard_options() -> JSONResponse:
        return JSONResponse(_options(), headers=headers)

    app.mount(DASHBOARD_PREFIX.rstrip("/"),
              _WithHeaders(StaticFiles(directory=ASSETS), headers),  # type: ignore[arg-type]
              name="dashboard")
