"""POST /controls/preview: a control image as a render would be given it (Canny edges for
``canny``), at most 768 px on its long side; bad input is a 422 naming the field; keys and
rate limits as on every guarded route."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from api.app import create_app
from api.jsonparse import INLINE_BYTES
from api.routers.controls import MAX_PREVIEW_SIDE
from fractal.images import MAX_IMAGE_PIXELS
from fractal.preprocess import canny, fit
from tests.api.auth_helpers import bearer, make_key, secured
from workers.settings import Settings

PREVIEW = "/controls/preview"


def _square_on_black(width: int, height: int) -> Image.Image:
    image = Image.new("RGB", (width, height), "black")
    ImageDraw.Draw(image).rectangle((width // 4, height // 4, 3 * width // 4, 3 * height // 4),
                                    fill="white")
    return image


def _data_url(image: Image.Image, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return f"data:image/{fmt.lower()};base64,{base64.b64encode(buffer.getvalue()).decode()}"


def _png(response) -> Image.Image:  # type: ignore[no-untyped-def]
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return Image.open(io.BytesIO(response.content))


def _field(response) -> str:  # type: ignore[no-untyped-def]
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail[0]["loc"][0] == "body", detail
    return detail[0]["loc"][1]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("preview"))
    with TestClient(create_app(settings, start_worker=False)) as client:
        yield client


def test_canny_preview_is_white_edges_on_black_at_the_image_size(client: TestClient) -> None:
    source = _square_on_black(320, 200)
    preview = _png(client.post(PREVIEW, json={"type": "canny", "image": _data_url(source)}))
    assert preview.size == (320, 200) and preview.mode == "RGB"
    pixels = np.asarray(preview)
    # Black and white only; white along the square's outline, black inside and outside it.
    assert set(np.unique(pixels)) == {0, 255}
    assert pixels[50, 160].max() == 255 or pixels[49, 160].max() == 255  # top edge (y=50)
    assert pixels[100, 160].max() == 0 and pixels[10, 10].max() == 0
    edge_share = (pixels[..., 0] == 255).mean()
    assert 0.005 < edge_share < 0.1, edge_share
    # The same edges a render's preprocessing draws (fractal.preprocess, one code path).
    assert np.array_equal(pixels, np.asarray(canny(fit(source, 320, 200))))


def test_large_images_are_previewed_at_most_768_on_the_long_side(client: TestClient) -> None:
    for size, expected in (((1600, 900), (768, 432)), ((600, 2400), (192, 768))):
        response = client.post(PREVIEW, json={"type": "canny",
                                              "image": _data_url(_square_on_black(*size))})
        assert _png(response).size == expected
        assert max(expected) == MAX_PREVIEW_SIDE
    # A body over the parser's inline size: its image is decoded in the parser's child.
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 400, 3), np.uint8))
    url = _data_url(noise)
    assert len(url) > INLINE_BYTES
    assert _png(client.post(PREVIEW, json={"type": "canny", "image": url})).size == (400, 300)


def test_types_without_a_preprocessor_and_preprocess_false_show_the_image(
        client: TestClient) -> None:
    source = Image.new("RGB", (64, 48), (200, 30, 90))
    url = _data_url(source)
    for body in ({"type": "depth", "image": url}, {"type": "image", "image": url},
                 {"type": "canny", "image": url, "preprocess": False}):
        preview = _png(client.post(PREVIEW, json=body))
        assert preview.size == (64, 48)
        assert preview.getpixel((10, 10)) == (200, 30, 90), body
    # WEBP in, PNG out.
    assert _png(client.post(PREVIEW, json={"type": "canny",
                                           "image": _data_url(source, "WEBP")})).size == (64, 48)


def test_bad_inputs_are_422s_naming_the_field(client: TestClient) -> None:
    url = _data_url(_square_on_black(32, 32))
    cases = [
        ({"type": "edges", "image": url}, "type"),
        ({"type": 3, "image": url}, "type"),
        ({"image": url}, "type"),
        ({"type": "depth", "image": url, "preprocess": True}, "preprocess"),
        ({"type": "canny", "image": url, "preprocess": "yes"}, "preprocess"),
        ({"type": "canny", "image": url, "preprocess": 1}, "preprocess"),
        ({"type": "canny"}, "image"),
        ({"type": "canny", "image": None}, "image"),
        ({"type": "canny", "image": ["a"]}, "image"),
        ({"type": "canny", "image": "not base64!"}, "image"),
        ({"type": "canny", "image": "data:image/png;base64," + base64.b64encode(
            b"not an image").decode()}, "image"),
        ({"type": "canny", "image": url, "scale": 1}, "scale"),
    ]
    for body, field in cases:
        response = client.post(PREVIEW, json=body)
        assert _field(response) == field, (body, response.text)
        assert "Traceback" not in response.text


def test_hostile_bodies_are_refused_without_a_500(client: TestClient) -> None:
    url = _data_url(_square_on_black(32, 32))
    raw = [
        b'{"type": "canny", "image": NaN}',
        b'{"type": "canny", "image": "\\ud800"}',
        b'{"type": "\\ud800", "image": "x"}',
        b'{"type": "canny", "image": "' + url.encode() + b'", "preprocess": Infinity}',
        b'[' * 100 + b']' * 100,
        b'"canny"',
        b'{"type": "canny", "image": "' + b"A" * 200_000 + b'"}',
    ]
    for body in raw:
        response = client.post(PREVIEW, content=body,
                               headers={"Content-Type": "application/json"})
        assert 400 <= response.status_code < 500, (body[:60], response.text)
        assert "Traceback" not in response.text
    # A decompression bomb: a tiny file declaring more pixels than any input may have.
    side = int(MAX_IMAGE_PIXELS ** 0.5) + 64
    buffer = io.BytesIO()
    Image.new("1", (side, side)).save(buffer, "PNG")
    bomb = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    assert _field(client.post(PREVIEW, json={"type": "canny", "image": bomb})) == "image"
    # Not JSON: a 415, never a 500.
    response = client.post(PREVIEW, content=b"type=canny",
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 415
    # No body, or not an object.
    for content in (b"", b"[]", b"null"):
        response = client.post(PREVIEW, content=content,
                               headers={"Content-Type": "application/json"})
        assert response.status_code == 422, (content, response.text)


def test_listed_in_openapi(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"][PREVIEW]["post"]
    assert "image/png" in operation["responses"]["200"]["content"]
    assert {"401", "415", "422", "429"} <= set(operation["responses"])
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert schema["required"] == ["type", "image"]
    assert operation["security"]


def test_keys_and_rate_limits_apply(tmp_path: Path) -> None:
    settings = secured(tmp_path, rate_limit="2/minute")
    key = make_key(settings, "previewer")
    body = {"type": "canny", "image": _data_url(_square_on_black(32, 32))}
    with TestClient(create_app(settings, start_worker=False)) as client:
        assert client.post(PREVIEW, json=body).status_code == 401
        assert client.post(PREVIEW, json=body,
                           headers=bearer("s2f_not-a-key")).status_code == 401
        assert _png(client.post(PREVIEW, json=body, headers=bearer(key))).size == (32, 32)
        assert client.post(PREVIEW, json=body, headers=bearer(key)).status_code == 200
        limited = client.post(PREVIEW, json=body, headers=bearer(key))
        assert limited.status_code == 429 and limited.headers.get("Retry-After")
