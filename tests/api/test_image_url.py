"""POST /generate with ``image_url``: off by default; when on, fetched under the address rules
from a real HTTP server on 127.0.0.1 and decoded by the library's safe decoder."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.app import create_app
from fractal.images import MAX_IMAGE_BYTES
from tests.api.helpers import data_url, png_bytes
from workers.settings import Settings

PNG = png_bytes(40, 30, "orange")
ASYNC = {"Prefer": "respond-async"}


class _Images(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/cat.png":
            self._send(200, PNG, {"Content-Type": "image/png"})
        elif self.path == "/moved":
            self._send(302, b"", {"Location": "/cat.png"})
        elif self.path == "/to-metadata":
            self._send(302, b"", {"Location": "http://169.254.169.254/latest/meta-data/"})
        elif self.path == "/page.png":  # not an image, whatever its name says
            self._send(200, b"%!PS-Adobe-3.0 EPSF-3.0\n", {"Content-Type": "image/png"})
        elif self.path == "/huge":  # chunked, no length: only the streamed cap stops it
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            chunk = b"\0" * (1024 * 1024)
            try:
                for _ in range(MAX_IMAGE_BYTES // len(chunk) + 8):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except (BrokenPipeError, ConnectionResetError):
                pass
        else:
            self._send(404, b"not here", {})


@pytest.fixture(scope="module")
def images() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _client(tmp_path: Path, **settings: object) -> TestClient:
    return TestClient(create_app(Settings(data_dir=tmp_path, **settings), start_worker=False))


def _refusal(response, field: str = "image_url") -> str:
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail[0]["loc"] == ["body", field], detail
    return detail[0]["msg"]


def _body(url: str) -> dict:
    return {"input_type": "image", "image_url": url, "width": 64, "height": 64}


def test_image_urls_are_off_by_default(tmp_path: Path, images: str) -> None:
    assert Settings().allow_image_urls is False
    with _client(tmp_path) as client:
        message = _refusal(client.post("/generate", json=_body(images + "/cat.png")))
    assert "disabled on this server" in message


@pytest.fixture
def public_only(tmp_path: Path) -> Iterator[TestClient]:
    """Image URLs on, private addresses off: the production shape."""
    with _client(tmp_path, allow_image_urls=True) as client:
        yield client


@pytest.mark.parametrize(("url", "reason"), [
    ("file:///etc/passwd", "http or https"),
    ("/etc/passwd", "http or https"),
    ("../secret.key", "http or https"),
    ("ftp://example.com/cat.png", "http or https"),
    ("http://user:pw@example.com/cat.png", "user name or password"),
    ("http://2130706433/cat.png", "non-standard form"),
    ("http://0x7f.1/cat.png", "non-standard form"),
    ("http://127.0.0.1/cat.png", "not a public address"),
    ("http://169.254.169.254/latest/meta-data/", "metadata"),
    ("http://[::ffff:127.0.0.1]/cat.png", "embeds IPv4"),
    ("http://localhost/cat.png", "refused address"),
])
def test_local_and_unsafe_urls_are_refused(public_only: TestClient, url: str,
                                           reason: str) -> None:
    assert reason in _refusal(public_only.post("/generate", json=_body(url)))


def test_the_local_server_is_refused_without_allow_private(public_only: TestClient,
                                                           images: str) -> None:
    message = _refusal(public_only.post("/generate", json=_body(images + "/cat.png")))
    assert "not a public address" in message


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[TestClient]:
    """Image URLs on and private addresses allowed, so the test server can be reached."""
    with _client(tmp_path, allow_image_urls=True, webhook_allow_private=True) as client:
        yield client


def _stored_input(data_dir: Path, job_id: str) -> Image.Image:
    raw = (data_dir / "images" / "inputs" / f"{job_id}.png").read_bytes()
    return Image.open(io.BytesIO(raw))


@pytest.mark.parametrize("path", ["/cat.png", "/moved"])
def test_a_fetched_image_becomes_the_job_input(lab: TestClient, images: str, tmp_path: Path,
                                               path: str) -> None:
    response = lab.post("/generate", json=_body(images + path), headers=ASYNC)
    assert response.status_code == 202, response.text
    stored = _stored_input(tmp_path, response.json()["id"])
    assert stored.size == (40, 30)
    assert stored.getpixel((5, 5)) == Image.open(io.BytesIO(PNG)).convert("RGB").getpixel((5, 5))
    assert "image_url" not in response.json()["request"]


@pytest.mark.parametrize(("path", "reason"), [
    ("/missing.png", "answered 404"),
    ("/page.png", ""),  # the decoder's own message; the field is what matters
    ("/huge", f"larger than {MAX_IMAGE_BYTES} bytes"),
    ("/to-metadata", "metadata"),
])
def test_fetch_and_decode_failures_are_422(lab: TestClient, images: str, path: str,
                                           reason: str) -> None:
    assert reason in _refusal(lab.post("/generate", json=_body(images + path)))


def test_one_image_source_only(lab: TestClient, images: str) -> None:
    body = {**_body(images + "/cat.png"), "image": data_url(PNG)}
    assert "one image" in _refusal(lab.post("/generate", json=body))


def test_a_nothing_listening_port_is_422(lab: TestClient) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        message = _refusal(lab.post("/generate",
                                    json=_body(f"http://127.0.0.1:{port}/cat.png")))
    assert "could not connect" in message


def test_batches_do_not_take_image_urls(lab: TestClient, images: str) -> None:
    response = lab.post("/batches", json={"items": [_body(images + "/cat.png")]})
    assert response.status_code == 422
    detail = response.json()["detail"][0]
    assert detail["loc"] == ["body", "items", 0, "image_url"]
    assert "not taken in batches" in detail["msg"]
