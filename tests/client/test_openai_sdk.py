"""The official ``openai`` package against the real service's /v1 Images API."""

from __future__ import annotations

import base64
import io

import httpx
import openai
import pytest
from PIL import Image

from tests.client.conftest import Server

SMALL = "128x96"


@pytest.fixture(scope="module")
def sdk(service: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{service.url}/v1", api_key=service.key, max_retries=0)


def _png(colour: tuple[int, int, int], size: tuple[int, int] = (96, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_generate_two_images_as_urls(sdk: openai.OpenAI) -> None:
    answer = sdk.images.generate(model="dall-e-3", prompt="a lighthouse at dusk", n=2,
                                 size=SMALL, response_format="url", quality="standard",
                                 style="vivid", user="tester")
    assert len(answer.data) == 2
    assert answer.created > 1_600_000_000
    images = []
    for item in answer.data:
        assert item.b64_json is None
        assert "a lighthouse at dusk" in (item.revised_prompt or "")
        response = httpx.get(item.url, timeout=10)  # signed: no key needed
        assert response.status_code == 200
        images.append(Image.open(io.BytesIO(response.content)))
    assert [image.size for image in images] == [(128, 96), (128, 96)]
    # vivid is the Cinematic style: the record says so
    assert "Style: Cinematic" in images[0].info["parameters"]
    assert images[0].tobytes() != images[1].tobytes()


def test_generate_two_images_as_b64_json(sdk: openai.OpenAI) -> None:
    answer = sdk.images.generate(model="gpt-image-1", prompt="a red fox in snow", n=2,
                                 size=SMALL, response_format="b64_json", quality="high")
    assert len(answer.data) == 2
    for item in answer.data:
        assert item.url is None
        image = Image.open(io.BytesIO(base64.b64decode(item.b64_json or "")))
        assert image.format == "PNG" and image.size == (128, 96)
        assert "a red fox in snow" in image.info["parameters"]
        assert "Steps: 50" in image.info["parameters"]  # high quality: more steps


def test_our_style_names_and_extra_options_pass_through(sdk: openai.OpenAI) -> None:
    answer = sdk.images.generate(prompt="a harbour", size="64x64", style="Pixel art",
                                 response_format="b64_json", extra_body={"seed": 1234})
    image = Image.open(io.BytesIO(base64.b64decode(answer.data[0].b64_json or "")))
    assert "Style: Pixel art" in image.info["parameters"]
    assert "Seed: 1234" in image.info["parameters"]


def test_edit_an_uploaded_png(sdk: openai.OpenAI) -> None:
    answer = sdk.images.edit(image=("input.png", _png((200, 40, 40)), "image/png"),
                             prompt="as a watercolor", n=1, size="96x64",
                             response_format="b64_json")
    image = Image.open(io.BytesIO(base64.b64decode(answer.data[0].b64_json or "")))
    assert image.size == (96, 64)
    assert "Denoising strength" in image.info["parameters"]  # image-to-image
    # a list of images arrives as `image[]`; one is accepted
    listed = sdk.images.edit(image=[("input.png", _png((10, 90, 200)), "image/png")],
                             prompt="at night", size="96x64")
    assert listed.data[0].url


def test_errors_in_openai_shape(service: Server, sdk: openai.OpenAI) -> None:
    bad_key = openai.OpenAI(base_url=f"{service.url}/v1", api_key="not-a-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        bad_key.images.generate(prompt="a cat")
    assert caught.value.status_code == 401
    assert caught.value.body["type"] == "invalid_request_error"  # type: ignore[index]
    assert caught.value.body["code"] == "invalid_api_key"  # type: ignore[index]

    for size in ("big", "100x100"):  # not WxH; not a multiple of 8
        with pytest.raises(openai.BadRequestError) as caught:
            sdk.images.generate(prompt="a cat", size=size)  # type: ignore[arg-type]
        assert caught.value.status_code == 400
        assert caught.value.body["param"] in ("size", "width")  # type: ignore[index]

    with pytest.raises(openai.BadRequestError) as caught:
        sdk.images.generate(prompt="a cat", model="someone/else-model")
    assert caught.value.body["param"] == "model"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.images.generate(prompt="a cat", style="no such style")
    assert caught.value.body["param"] == "style"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.images.generate(prompt="a cat", extra_body={"colour": "red"})
    assert caught.value.body["code"] == "unknown_parameter"  # type: ignore[index]

    # Raw: the shape itself, and the rest of the API keeps its own
    raw = httpx.post(f"{service.url}/v1/images/generations", json={"n": 1},
                     headers={"Authorization": f"Bearer {service.key}"})
    assert raw.status_code == 400
    assert set(raw.json()["error"]) >= {"message", "type", "param", "code"}
    assert raw.json()["error"]["param"] == "prompt"
    assert httpx.post(f"{service.url}/generate", json={"n": 1},
                      headers={"Authorization": "Bearer nope"}).json().keys() == {"detail"}
    unknown = httpx.get(f"{service.url}/v1/nothing",
                        headers={"Authorization": f"Bearer {service.key}"})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"


def test_still_rendering_is_a_202_and_the_key_quota_a_429(quiet: Server) -> None:
    """No worker on the quiet server: the job stays queued past its wait (sync_timeout 0)."""
    sdk = openai.OpenAI(base_url=f"{quiet.url}/v1", api_key=quiet.keys["a"], max_retries=0)
    pending = sdk.images.with_raw_response.generate(prompt="a slow one", size="64x64")
    assert pending.status_code == 202
    answer = pending.parse()
    job_id = answer.model_extra["job_id"]  # type: ignore[index]
    assert answer.data == [] and pending.headers["location"].endswith(f"/jobs/{job_id}")
    with pytest.raises(openai.RateLimitError) as caught:  # one unfinished job per key
        sdk.images.generate(prompt="another", size="64x64")
    assert caught.value.response.headers["retry-after"] == "5"
    assert caught.value.body["code"] == "too_many_unfinished_jobs"  # type: ignore[index]
    cancelled = httpx.post(f"{quiet.url}/jobs/{job_id}/cancel",
                           headers={"Authorization": f"Bearer {quiet.keys['a']}"})
    assert cancelled.json()["status"] == "cancelled"
